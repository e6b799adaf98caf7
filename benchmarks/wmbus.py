"""Wireless decode speed: the golden wM-Bus telegrams (tests/wmbus/wmbus_golden.py: AES-CTR, mode 5,
mode 7 with CMAC key derivation and MAC, compact frames, plain) repeated to >= 10,000 frames through
the real ``imd decode --json --key ...`` path, plus the encrypted ones alone (decryption per frame).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import time
from pathlib import Path
from types import ModuleType

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "wmbus" / "wmbus_golden.py"


def _golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wmbus_golden", GOLDEN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(lines: list[str], key_args: list[str]) -> float:
    from imd.cli import main

    old_in, old_out = sys.stdin, sys.stdout
    sys.stdin, sys.stdout = io.StringIO("\n".join(lines) + "\n"), io.StringIO()
    try:
        start = time.perf_counter()
        main(["decode", "--json", *key_args])
        elapsed = time.perf_counter() - start
        out = sys.stdout.getvalue()
    finally:
        sys.stdin, sys.stdout = old_in, old_out
    if out.count('"ok": true') != len(lines):
        raise RuntimeError("a golden telegram failed to decode in the benchmark")
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wmbus")
    parser.add_argument("--frames", type=int, default=10_000)
    args = parser.parse_args(argv)
    golden = _golden().GOLDEN
    # one key per meter id: the OMS mode 5 example reuses mode 7's meter id with another key
    usable = [g for g in golden if g.name != "oms_gas_mode5_crc_a"]
    keys = {g.key_id: g.key for g in usable if g.key}
    key_args = [a for k, v in keys.items() for a in ("--key", f"{k}={v}")]
    mixed = [usable[i % len(usable)].hex for i in range(args.frames)]
    encrypted_set = [g.hex for g in usable if g.key]
    encrypted = [encrypted_set[i % len(encrypted_set)] for i in range(args.frames)]
    _run(mixed[:200], key_args)  # warm up imports
    t_mixed = _run(mixed, key_args)
    t_enc = _run(encrypted, key_args)
    print(f"frames: {args.frames} per run ({len(usable)} distinct golden wM-Bus telegrams)")
    print(f"imd decode --json, all golden      : {args.frames / t_mixed:10.0f} frames/s  ({t_mixed:.3f} s)")
    print(f"imd decode --json, encrypted only  : {args.frames / t_enc:10.0f} frames/s  ({t_enc:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
