"""A small PDF 1.4 writer: text in the standard Helvetica fonts, lines and filled boxes, pages.

Why our own: a billing basis needs a few hundred text runs and rules per page, nothing else, and
every byte must be reproducible (same run -> same checksum in the archive). The 14 standard fonts
need no embedding; ``WinAnsiEncoding`` (cp1252) covers Swedish (å ä ö é) and the signs we print
(× ÷ ² – €). No compression (zlib output may differ between library versions), no clock, no random
ids: the ``/ID`` is a hash of the content and the dates come from the caller.

Coordinates are PDF points (1/72 inch) from the bottom left; ``Page`` offers a top-down ``y``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

__all__ = ["A4", "Page", "PdfDocument", "pdf_text", "text_width"]

A4 = (595.28, 841.89)

# Advance widths (1/1000 em) of the printable ASCII range 32..126, from the Adobe AFM files of the
# standard fonts; characters outside it are looked up in _EXTRA_* or fall back to the width of "n".
_HELV = (
    "278 278 355 556 556 889 667 191 333 333 389 584 278 333 278 278 556 556 556 556 556 556 556 556 556 "
    "556 278 278 584 584 584 556 1015 667 667 722 722 667 611 778 722 278 500 667 556 833 722 778 667 778 "
    "722 667 611 722 667 944 667 667 611 278 278 278 469 556 333 556 556 500 556 556 278 556 556 222 222 "
    "500 222 833 556 556 556 556 333 500 278 556 500 722 500 500 500 334 260 334 584"
)
_HELV_BOLD = (
    "278 333 474 556 556 889 722 238 333 333 389 584 278 333 278 278 556 556 556 556 556 556 556 556 556 "
    "556 333 333 584 584 584 611 975 722 722 722 722 667 611 778 722 278 556 722 611 833 722 778 667 778 "
    "722 667 611 722 667 944 667 667 611 333 278 333 584 556 333 556 611 556 611 556 333 611 611 278 278 "
    "556 278 889 611 611 611 611 389 556 333 611 556 778 556 556 500 389 280 389 584"
)
_EXTRA_HELV = {
    "å": 556,
    "ä": 556,
    "ö": 556,
    "é": 556,
    "ü": 556,
    "à": 556,
    "Å": 667,
    "Ä": 667,
    "Ö": 778,
    "É": 667,
    "Ü": 722,
    "×": 584,
    "÷": 584,
    "²": 333,
    "³": 333,
    "°": 400,
    "–": 556,
    "—": 1000,
    "€": 556,
    "·": 278,
    "§": 556,
    "µ": 556,
    "…": 1000,
}
_EXTRA_BOLD = {
    "å": 556,
    "ä": 556,
    "ö": 611,
    "é": 556,
    "ü": 611,
    "à": 556,
    "Å": 722,
    "Ä": 722,
    "Ö": 778,
    "É": 667,
    "Ü": 722,
    "×": 584,
    "÷": 584,
    "²": 333,
    "³": 333,
    "°": 400,
    "–": 556,
    "—": 1000,
    "€": 556,
    "·": 278,
    "§": 556,
    "µ": 611,
    "…": 1000,
}
_WIDTHS = {
    "F1": ({chr(32 + i): int(w) for i, w in enumerate(_HELV.split())} | _EXTRA_HELV),
    "F2": ({chr(32 + i): int(w) for i, w in enumerate(_HELV_BOLD.split())} | _EXTRA_BOLD),
}
_FONTS = {"F1": "Helvetica", "F2": "Helvetica-Bold"}

# Signs the billing texts use that WinAnsi lacks, spelled out rather than printed as "?".
_SUBSTITUTES = str.maketrans({"Σ": "Summa ", "≥": ">=", "≤": "<=", "→": "->", "−": "-"})


def pdf_text(text: str) -> str:
    """``text`` restricted to what WinAnsiEncoding can show."""
    return text.translate(_SUBSTITUTES).encode("cp1252", errors="replace").decode("cp1252")


def text_width(text: str, font: str, size: float) -> float:
    widths = _WIDTHS[font]
    return sum(widths.get(ch, 556) for ch in text) * size / 1000


def _escape(text: str) -> bytes:
    raw = pdf_text(text).encode("cp1252")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _num(value: float) -> str:
    # Two decimals, trailing zeros dropped: stable text for the same layout arithmetic.
    out = f"{value:.2f}".rstrip("0").rstrip(".")
    return out if out not in ("", "-0") else "0"


class Page:
    """One page's content stream; ``y`` arguments count from the top edge."""

    def __init__(self, width: float, height: float) -> None:
        self.width = width
        self.height = height
        self._ops: list[bytes] = []

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float = 9,
        bold: bool = False,
        align: str = "left",
        grey: bool = False,
    ) -> None:
        font = "F2" if bold else "F1"
        shown = pdf_text(text)
        if align == "right":
            x -= text_width(shown, font, size)
        elif align == "center":
            x -= text_width(shown, font, size) / 2
        colour = b"0.35 g " if grey else b""
        self._ops.append(
            b"BT "
            + colour
            + f"/{font} {_num(size)} Tf {_num(x)} {_num(self.height - y)} Td (".encode()
            + _escape(shown)
            + b") Tj ET"
            + (b" 0 g" if grey else b"")
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, width: float = 0.5) -> None:
        h = self.height
        ops = f"{_num(width)} w {_num(x1)} {_num(h - y1)} m {_num(x2)} {_num(h - y2)} l S"
        self._ops.append(ops.encode())

    def box(
        self, x: float, y: float, w: float, h: float, *, fill: float = 0.92, stroke: bool = False
    ) -> None:
        """A filled rectangle with its top left corner at (x, y); ``fill`` is the grey level."""
        op = "B" if stroke else "f"
        self._ops.append(
            f"q {_num(fill)} g {_num(x)} {_num(self.height - y - h)} {_num(w)} {_num(h)} re {op} Q".encode()
        )

    def content(self) -> bytes:
        return b"\n".join(self._ops)


class PdfDocument:
    def __init__(self, *, title: str, author: str, created: datetime, size: tuple[float, float] = A4) -> None:
        self.title = title
        self.author = author
        self.created = created
        self.size = size
        self.pages: list[Page] = []

    def new_page(self) -> Page:
        page = Page(*self.size)
        self.pages.append(page)
        return page

    def to_bytes(self) -> bytes:
        """The whole file: header, objects, cross-reference table, trailer; same pages -> same bytes."""
        objects: list[bytes] = []  # object n is objects[n - 1]
        catalog, pages_obj, f1, f2, info = 1, 2, 3, 4, 5
        objects += [b"", b"", b"", b"", b""]
        kids = []
        for page in self.pages:
            stream = page.content()
            objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
            content_no = len(objects)
            objects.append(
                (
                    f"<< /Type /Page /Parent {pages_obj} 0 R "
                    f"/MediaBox [0 0 {_num(page.width)} {_num(page.height)}] "
                    f"/Resources << /Font << /F1 {f1} 0 R /F2 {f2} 0 R >> >> /Contents {content_no} 0 R >>"
                ).encode()
            )
            kids.append(len(objects))
        objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode()
        objects[pages_obj - 1] = (
            f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
        )
        for no, name in ((f1, "F1"), (f2, "F2")):
            objects[no - 1] = (
                f"<< /Type /Font /Subtype /Type1 /BaseFont /{_FONTS[name]} /Encoding /WinAnsiEncoding >>"
            ).encode()
        stamp = _pdf_date(self.created)
        objects[info - 1] = (
            b"<< /Title ("
            + _escape(self.title)
            + b") /Author ("
            + _escape(self.author)
            + b")"
            + f" /Producer (imd-gateway) /CreationDate ({stamp}) /ModDate ({stamp}) >>".encode()
        )
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for no, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += b"%d 0 obj\n" % no + body + b"\nendobj\n"
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        for off in offsets:
            out += b"%010d 00000 n \n" % off
        doc_id = hashlib.md5(bytes(out), usedforsecurity=False).hexdigest()  # PDF's own ID convention
        out += (
            f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R /Info {info} 0 R "
            f"/ID [<{doc_id}> <{doc_id}>] >>\nstartxref\n{xref}\n%%EOF\n"
        ).encode()
        return bytes(out)


def _pdf_date(at: datetime) -> str:
    text = at.strftime("D:%Y%m%d%H%M%S")
    offset = at.utcoffset()
    if offset is None:
        return text
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}'{minutes % 60:02d}'"
