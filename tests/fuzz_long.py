"""Long-running fuzz target for the M-Bus stack (``make fuzz`` = ``python -m tests.fuzz_long``).

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


def run(seconds: float, seed: int, max_ms: float) -> int:
    from protocols.decode import decode_frame_json, decode_frame_json_line
    from protocols.errors import ProtocolError
    from protocols.mbus import LinkParser, decode_long_frame, decode_user_data, parse_frame

    rng = random.Random(seed)
    corpus = [bytes.fromhex(p.read_text()) for p in sorted(CORPUS.glob("*.hex"))]
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
