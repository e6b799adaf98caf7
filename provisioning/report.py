"""The installation report: property, collector, date, technician, every meter with its apartment,
first reading and signal, and the meters that need a visit - as HTML and as PDF.

The PDF uses central's small deterministic PDF writer (``central.billing.pdf``, imported read-only:
standard fonts, no compression, same content -> same bytes), so the report needs no extra package.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from provisioning.commission import CommissionResult, MeterOutcome

WEAK_RSSI_DBM: Final = -95  # below this a radio meter is heard, but not reliably: move the stick


@dataclass(frozen=True, slots=True)
class ReportInfo:
    technician: str
    date: datetime
    notes: str = ""


def visits(result: CommissionResult) -> list[tuple[MeterOutcome, str]]:
    """Meters that need a visit, with the reason."""
    out: list[tuple[MeterOutcome, str]] = []
    for m in result.meters:
        if not m.ok:
            out.append((m, m.cause or "no reading"))
        elif m.link == "wmbus" and m.rssi is not None and m.rssi < WEAK_RSSI_DBM:
            out.append((m, f"weak signal ({m.rssi} dBm)"))
    return out


def _first_value(m: MeterOutcome) -> str:
    if not m.values:
        return ""
    v = m.values[0]
    return f"{v.get('value', '')} {v.get('unit', '')}".strip()


def _signal(m: MeterOutcome) -> str:
    if m.link == "wmbus":
        return f"{m.rssi} dBm" if m.rssi is not None else "-"
    return f"wired {m.bus} addr {m.address}"


COLUMNS: Final = ("Apartment", "Lgh", "Medium", "Meter", "Signal", "First reading", "Value", "Status")


def _row(m: MeterOutcome) -> tuple[str, ...]:
    return (
        m.apartment or "main", m.apartment_number or "", m.medium, f"{m.id} {m.manufacturer}", _signal(m),
        (m.first_reading_at or "")[:16].replace("T", " "), _first_value(m),
        "ok" if m.ok else (m.cause or "missing"),
    )  # fmt: skip


def render_html(result: CommissionResult, info: ReportInfo) -> str:
    e = html.escape
    need = visits(result)
    delivered = sum(m.ok for m in result.meters)
    rows = "\n".join(
        "<tr"
        + ("" if m.ok else ' class="missing"')
        + ">"
        + "".join(f"<td>{e(c)}</td>" for c in _row(m))
        + "</tr>"
        for m in result.meters
    )
    visit_rows = (
        "\n".join(
            f"<li><b>{e(m.apartment or 'main')}</b> {e(m.medium)} meter {e(m.id)} "
            f"({e(m.link)} {e(m.bus)}): {e(why)}</li>"
            for m, why in need
        )
        or "<li>none</li>"
    )
    return f"""<!DOCTYPE html>
<html lang="sv"><head><meta charset="utf-8">
<title>Installation report {e(result.property)} - {e(result.collector)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.85em; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 3px 6px; text-align: left; }}
tr.missing td {{ background: #fde8e8; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 2px 1em; }}
</style></head><body>
<h1>Installation report</h1>
<dl>
<dt>Property</dt><dd>{e(result.property)} {e(result.property_name)}</dd>
<dt>Collector</dt><dd>{e(result.collector)}</dd>
<dt>Date</dt><dd>{e(info.date.isoformat(timespec="minutes"))}</dd>
<dt>Technician</dt><dd>{e(info.technician)}</dd>
<dt>Commissioning</dt><dd>{delivered} of {len(result.meters)} meters delivered a reading
 ({e(result.started_at)} - {e(result.finished_at)})</dd>
</dl>
<h2>Meters that need a visit ({len(need)})</h2>
<ul>
{visit_rows}
</ul>
<h2>All meters</h2>
<table><thead><tr>{"".join(f"<th>{e(c)}</th>" for c in COLUMNS)}</tr></thead>
<tbody>
{rows}
</tbody></table>
{f"<p>{e(info.notes)}</p>" if info.notes else ""}
</body></html>
"""


def render_pdf(result: CommissionResult, info: ReportInfo) -> bytes:
    from central.billing.pdf import PdfDocument

    doc = PdfDocument(
        title=f"Installation report {result.property} {result.collector}",
        author=info.technician,
        created=info.date if info.date.tzinfo else info.date.replace(tzinfo=UTC),
    )
    widths = (62, 30, 62, 80, 95, 72, 60, 70)  # points; A4 portrait minus margins
    left, top, line_h, bottom = 36.0, 40.0, 12.0, 800.0
    page = doc.new_page()
    y = top
    page.text(left, y, "Installation report", size=16, bold=True)
    y += 22
    need = visits(result)
    delivered = sum(m.ok for m in result.meters)
    for label, value in (
        ("Property", f"{result.property} {result.property_name}"),
        ("Collector", result.collector),
        ("Date", info.date.isoformat(timespec="minutes")),
        ("Technician", info.technician),
        ("Commissioning", f"{delivered} of {len(result.meters)} meters delivered a reading"),
    ):
        page.text(left, y, label, bold=True)
        page.text(left + 90, y, value)
        y += line_h
    y += 8
    page.text(left, y, f"Meters that need a visit ({len(need)})", size=11, bold=True)
    y += 14
    shown: list[tuple[MeterOutcome | None, str]] = list(need) or [(None, "none")]
    for m, why in shown:
        text = (
            why
            if m is None
            else f"{m.apartment or 'main'}  {m.medium}  meter {m.id} ({m.link} {m.bus}): {why}"
        )
        page.text(left + 8, y, text[:110])
        y += line_h
    y += 8

    def header(p: object, at: float) -> float:
        x = left
        for title, w in zip(COLUMNS, widths, strict=True):
            p.text(x, at, title, bold=True, size=8)  # type: ignore[attr-defined]
            x += w
        p.line(left, at + 3, left + sum(widths), at + 3)  # type: ignore[attr-defined]
        return at + line_h

    y = header(page, y)
    for m in result.meters:
        if y > bottom:
            page = doc.new_page()
            y = header(page, top)
        if not m.ok:
            page.box(left - 2, y - 9, sum(widths) + 4, line_h, fill=0.9)
        x = left
        for cell, w in zip(_row(m), widths, strict=True):
            page.text(x, y, cell[: int(w / 4.2)], size=7.5)
            x += w
        y += line_h
    return doc.to_bytes()
