"""``imd decode``: decode M-Bus / wM-Bus frames given as hex.

``imd decode --json [--key ID=HEX ...] [HEX ...]`` prints one JSON object per frame per line (the
frames from the arguments, else one hex frame per line of standard input). A bad frame never stops
the batch; the exit status is 1 when any frame failed. Without ``--json`` a readable table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("decode", help="decode frames given as hex")
    parser.add_argument("frames", nargs="*", help="hex frames; one per line on stdin when none")
    parser.add_argument("--json", action="store_true", help="one JSON object per frame per line")
    parser.add_argument("--key", action="append", default=[], metavar="ID=HEX", help="meter key")
    parser.set_defaults(func=run)


def parse_keys(items: Iterable[str]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for item in items:
        ident, sep, hexkey = item.partition("=")
        if not sep:
            raise SystemExit(f"imd decode: --key wants ID=HEX, got {item!r}")
        try:
            keys[ident.strip().upper()] = bytes.fromhex(hexkey)
        except ValueError:
            raise SystemExit(f"imd decode: key for {ident!r} is not hex") from None
    return keys


def _frames(args: argparse.Namespace, stdin: IO[str]) -> Iterator[str]:
    if args.frames:
        yield from args.frames
        return
    for line in stdin:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


def decode_lines(
    lines: Iterable[str], keys: Mapping[str, bytes] | None, out: IO[str], as_json: bool = True
) -> int:
    """Decode each hex line to ``out``; return the number of frames that failed."""
    import json

    from protocols.decode import decode_frame_json, decode_frame_json_line
    from protocols.wmbus.compact import FormatCache

    formats = FormatCache()  # compact wM-Bus frames decode after a full frame of their format
    write = out.write
    failed = 0
    not_hex = json.dumps({"ok": False, "link": None, "error": "input is not hex"})
    for text in lines:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            failed += 1
            write(f"{not_hex}\n" if as_json else _table({"ok": False, "error": "input is not hex"}, text))
            continue
        if as_json:
            ok, line = decode_frame_json_line(raw, keys, formats)
            write(f"{line}\n")
        else:
            obj = decode_frame_json(raw, keys, formats)
            ok = obj["ok"]
            write(_table(obj, text))
        if not ok:
            failed += 1
    return failed


def _table(obj: Mapping[str, Any], text: str) -> str:
    if not obj["ok"]:
        return f"frame {text[:40]}{'...' if len(text) > 40 else ''}\n  ERROR: {obj['error']}\n\n"
    head = (
        f"meter {obj['id']}  {obj['manufacturer']}  version {obj['version']}  medium {obj['medium']}  "
        f"access {obj['access_number']}  status {obj['status']:02X}h  ({obj['link']})\n"
    )
    rows = [("#", "quantity", "value", "unit", "function", "st", "ta", "su", "dif/vif")]
    for i, rec in enumerate(obj["records"]):
        value = "" if rec["value"] is None else str(rec["value"])
        rows.append(
            (str(i), rec["quantity"], value, rec["unit"], rec["function"], str(rec["storage"]),
             str(rec["tariff"]), str(rec["subunit"]), rec["dif_vif"])
        )  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if c in (0, 2, 5, 6, 7) else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return head + "\n".join(lines) + "\n\n"


def run(args: argparse.Namespace) -> int:
    keys = parse_keys(args.key)
    failed = decode_lines(_frames(args, sys.stdin), keys or None, sys.stdout, as_json=args.json)
    sys.stdout.flush()
    return 1 if failed else 0
