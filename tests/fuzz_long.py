"""Long-running fuzz target for the M-Bus and wM-Bus stacks (``make fuzz`` = ``python -m tests.fuzz_long``).

Not collected by pytest (no ``test_`` prefix). Feeds random and mutated-real frames to every
decoder entry point for ``--seconds`` (default 300) and fails on any exception that is not a
ProtocolError, on a decode slower than ``--max-ms``, or on the stream parser buffering more than
one maximal frame. Reproduce a failure with the printed seed.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import traceback
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "protocols" / "corpus" / "test-frames"


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    from protocols.mbus.link import long_frame

    data = bytearray(frame[7:-2])
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        if data and choice < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif data and choice < 0.7:
            del data[rng.randrange(len(data))]
        elif len(data) < 250:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
    return long_frame(frame[4], frame[5], frame[6], bytes(data[:252]))


def _wireless_seeds() -> tuple[list[bytes], dict[str, bytes]]:
    import importlib.util

    path = Path(__file__).resolve().parent / "wmbus" / "wmbus_golden.py"
    spec = importlib.util.spec_from_file_location("wmbus_golden", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seeds = [bytes.fromhex(g.hex) for g in module.GOLDEN]
    keys = {g.key_id: bytes.fromhex(g.key) for g in module.GOLDEN if g.key_id and g.key}
    return seeds, keys


def _mutate_wireless(rng: random.Random, telegram: bytes) -> bytes:
    data = bytearray(telegram)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(data)) if data else 0
        choice = rng.random()
        if data and choice < 0.5:
            data[pos] = rng.randrange(256)
        elif data and choice < 0.7:
            del data[pos]
        else:
            data.insert(pos, rng.randrange(256))
    if data and rng.random() < 0.7:
        data[0] = (len(data) - 1) & 0xFF  # keep L consistent so the upper layers are reached
    return bytes(data)


def _wireless(raw: bytes, keys: dict[str, bytes], state: dict[str, object]) -> None:
    """Every wM-Bus entry point: decoder (with keys, compact cache, fragments) and stick framings."""
    from protocols.errors import ProtocolError
    from protocols.sticks import amber, imst
    from protocols.sticks.rtlwmbus import parse_rtlwmbus_line
    from protocols.wmbus import FormatCache, FragmentReassembler, decode_wmbus

    formats = state.setdefault("formats", FormatCache(max_formats=64))
    fragments = state.setdefault("fragments", FragmentReassembler(max_messages=16))
    assert isinstance(formats, FormatCache)
    assert isinstance(fragments, FragmentReassembler)
    for key_map in (None, keys):
        try:
            decode_wmbus(raw, key_map, formats=formats, fragments=fragments)
        except ProtocolError as exc:
            if not str(exc):
                raise AssertionError("ProtocolError without a reason") from exc
    with contextlib.suppress(ProtocolError):
        parse_rtlwmbus_line("T1;1;1;2020-01-01 00:00:00.000;97;148;12345678;0x" + raw.hex())
    hci = state.setdefault("hci", imst.HciParser())
    amb = state.setdefault("amber", amber.AmberParser())
    assert isinstance(hci, imst.HciParser)
    assert isinstance(amb, amber.AmberParser)
    for frame in hci.feed(raw):
        if frame.is_telegram:
            imst.wmbus_telegram(frame)
    for aframe in amb.feed(raw):
        if aframe.is_telegram:
            amber.wmbus_telegram(aframe)
    if hci.pending > 266 or amb.pending > 259:
        raise AssertionError(f"stick parser holds {hci.pending}/{amb.pending} bytes")


def run(seconds: float, seed: int, max_ms: float) -> int:
    from protocols.decode import decode_frame_json, decode_frame_json_line
    from protocols.errors import ProtocolError
    from protocols.mbus import LinkParser, decode_long_frame, decode_user_data, parse_frame

    rng = random.Random(seed)
    corpus = [bytes.fromhex(p.read_text()) for p in sorted(CORPUS.glob("*.hex"))]
    wireless_seeds, wireless_keys = _wireless_seeds()
    wireless_state: dict[str, object] = {}
    deadline = time.monotonic() + seconds
    cases = 0
    parser = LinkParser()
    while time.monotonic() < deadline:
        kind = rng.random()
        if kind < 0.6:
            raw = _mutate(rng, rng.choice(corpus))
        elif kind < 0.8:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        else:
            raw = rng.choice(corpus)[: rng.randrange(1, 262)]
        if rng.random() < 0.4:
            raw = _mutate_wireless(rng, rng.choice(wireless_seeds))
        start = time.perf_counter()
        try:
            for call in (parse_frame, decode_long_frame):
                try:
                    call(raw)
                except ProtocolError as exc:
                    if not str(exc):
                        raise AssertionError("ProtocolError without a reason") from exc
            with contextlib.suppress(ProtocolError):
                decode_user_data(raw[0] if raw else 0x72, raw[1:])
            obj = decode_frame_json(raw)
            ok, _ = decode_frame_json_line(raw)
            if ok is not obj["ok"]:
                raise AssertionError("decode_frame_json and decode_frame_json_line disagree")
            parser.feed(raw)
            if parser.pending > 261:
                raise AssertionError(f"stream parser holds {parser.pending} bytes")
            _wireless(raw, wireless_keys, wireless_state)
        except Exception:
            print(f"FAIL seed={seed} case={cases} input={raw.hex()}", file=sys.stderr)
            traceback.print_exc()
            return 1
        elapsed_ms = (time.perf_counter() - start) * 1000
        if elapsed_ms > max_ms:
            print(f"SLOW seed={seed} case={cases} {elapsed_ms:.1f} ms input={raw.hex()}", file=sys.stderr)
            return 1
        cases += 1
    print(f"fuzz_long: {cases} cases in {seconds:.0f} s, seed {seed}: no failures")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_long")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--max-ms", type=float, default=2000.0, help="fail on a single case slower than this (a hang)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    return run(args.seconds, seed, args.max_ms)


if __name__ == "__main__":
    sys.exit(main())
