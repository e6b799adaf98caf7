"""Fuzzing of every decoder and stick framing (``make fuzz`` = ``python -m tests.fuzz_long``).

Not collected by pytest (no ``test_`` prefix); ``tests/protocols/test_fuzz_targets.py`` runs the
same targets with 20,000 inputs each in the normal suite. Each target gets ``--inputs`` inputs
(default 1,000,000): mutations of real corpus frames (libmbus wired frames, public wM-Bus
telegrams, real stick framings and edge↔central messages built from them) and random bytes.

An input passes when the target returns or raises a typed :class:`protocols.errors.ProtocolError`
with a reason. Anything else is a crash; so is one input using more than ``--max-ms`` of CPU, or
a stream parser that buffers more than one maximal frame. Per target the run reports the slowest
input (CPU time of the fuzzing thread, which load on a shared machine does not inflate; wall time
beside it), the largest allocation one input made (``tracemalloc`` peak over the first
``--traced`` inputs of every chunk) and the peak RSS of the fuzzing process. Work is split into
chunks, each in a fresh process (``--jobs`` of them at a time), so that RSS is per chunk;
reproduce a failure with the printed target, seed and input hex (``--replay TARGET HEX``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import resource
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
WIRED_CORPUS = HERE / "protocols" / "corpus" / "test-frames"
WIRED_ERRORS = HERE / "protocols" / "corpus" / "error-frames"

# The largest frame each stream parser may legitimately hold while waiting for the rest.
LINK_PARSER_MAX = 261
HCI_PARSER_MAX = 266
AMBER_PARSER_MAX = 259
# The JSON renderings and the key-less decode repeat the decoder's work: checked on every 8th input.
CROSS_CHECK_EVERY = 8
INTERESTING = (0x00, 0x01, 0x0F, 0x10, 0x2F, 0x7F, 0x80, 0xFE, 0xFF)


# --- seeds -------------------------------------------------------------------------------------
def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def wired_seeds() -> tuple[bytes, ...]:
    paths = sorted(WIRED_CORPUS.glob("*.hex")) + sorted(WIRED_ERRORS.glob("*.hex"))
    seeds = []
    for p in paths:
        with contextlib.suppress(ValueError):
            seeds.append(bytes.fromhex("".join(p.read_text().split())))
    return tuple(s for s in seeds if s)


@cache
def wireless_seeds() -> tuple[tuple[bytes, ...], dict[str, bytes]]:
    golden = _load("wmbus_golden", HERE / "wmbus" / "wmbus_golden.py").GOLDEN
    # the OMS mode 5 example uses another key for a meter id the mode 7 ones share: left out of keys
    keys = {
        g.key_id: bytes.fromhex(g.key)
        for g in golden
        if g.key_id and g.key and g.name != "oms_gas_mode5_crc_a"
    }
    return tuple(bytes.fromhex(g.hex) for g in golden), keys


@cache
def message_seeds() -> tuple[bytes, ...]:
    from protocols.messages import (
        BusPollResult,
        CollectorState,
        CollectorStatus,
        Command,
        CommandName,
        CommandResult,
        FrameBatch,
        FrameMessage,
        FrameStatus,
        LinkKind,
        RadioHeard,
        encode,
    )

    at = datetime(2025, 3, 1, 4, 0, tzinfo=UTC)
    telegrams, _ = wireless_seeds()
    wired = wired_seeds()
    frames = [
        FrameMessage(sequence=1, received_at=at, port="mbus0", address="5", raw=wired[0].hex()),
        FrameMessage(
            sequence=2, received_at=at, port="mbus0", status=FrameStatus.NO_ANSWER, reason="timeout"
        ),
        FrameMessage(
            sequence=3,
            received_at=at,
            link=LinkKind.WMBUS,
            port="im871a",
            link_mode="T1",
            rssi=-71,
            raw=telegrams[0].hex(),
            decoded={"id": "12345678"},
        ),
    ]
    status = CollectorStatus(
        collector="brf-1",
        state=CollectorState.ONLINE,
        at=at,
        uptime_s=12.5,
        outbox_depth=3,
        last_polls=[
            BusPollResult(bus="mbus0", started_at=at, duration_s=1.5, meters_read=4, meters_failed=1)
        ],
        alarms=["serial port gone"],
        radio_not_ours=[
            RadioHeard(id="12345678", manufacturer="KAM", version=1, device_type=7, count=3, last_heard=at)
        ],
    )
    return (
        encode(FrameBatch(collector="brf-1", sent_at=at, frames=frames)),
        encode(status),
        encode(Command(id="c-1", command=CommandName.READ_METER, args={"address": 5}, issued_at=at)),
        encode(CommandResult(id="c-1", collector="brf-1", ok=True, result={"n": 1}, finished_at=at)),
    )


# --- mutation ----------------------------------------------------------------------------------
def mutate(rng: random.Random, data: bytes, others: tuple[bytes, ...] = (), rounds: int = 8) -> bytes:
    """Byte-level havoc: set, flip, insert, delete, duplicate, truncate, splice with another seed."""
    out = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        op = rng.random()
        pos = rng.randrange(len(out)) if out else 0
        if out and op < 0.30:
            out[pos] = rng.randrange(256)
        elif out and op < 0.40:
            out[pos] ^= 1 << rng.randrange(8)
        elif out and op < 0.48:
            out[pos] = rng.choice(INTERESTING)
        elif op < 0.62:
            out.insert(pos, rng.randrange(256))
        elif out and op < 0.76:
            del out[pos : pos + rng.randint(1, 4)]
        elif out and op < 0.84:
            end = min(len(out), pos + rng.randint(1, 16))
            out[pos:pos] = out[pos:end]
        elif out and op < 0.92:
            del out[rng.randrange(len(out) + 1) :]
        elif others:
            other = rng.choice(others)
            cut = rng.randrange(len(other) + 1)
            out[pos:] = other[cut:]
    return bytes(out)


def random_bytes(rng: random.Random, most: int = 300) -> bytes:
    return rng.randbytes(rng.randrange(most + 1))


# --- targets: make(rng) -> input bytes; run(input, state) raises on a crash ---------------------
def _reason(exc: Exception) -> None:
    if not str(exc):
        raise AssertionError(f"{type(exc).__name__} without a reason") from exc


def _typed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from protocols.errors import ProtocolError

    try:
        return call(*args, **kwargs)
    except ProtocolError as exc:
        _reason(exc)
        return None


def make_wired_link(rng: random.Random) -> bytes:
    seeds = wired_seeds()
    kind = rng.random()
    if kind < 0.45:
        return mutate(rng, rng.choice(seeds), seeds)
    if kind < 0.65:
        return random_bytes(rng)
    if kind < 0.80:
        return rng.choice(seeds)[: rng.randrange(1, 262)]
    # a stream: frames, single-byte acks, short frames and garbage back to back
    parts = [
        rng.choice((rng.choice(seeds), b"\xe5", b"\x10\x5b\x01\x5c\x16", rng.randbytes(rng.randrange(8))))
        for _ in range(rng.randint(2, 4))
    ]
    return mutate(rng, b"".join(parts), seeds, rounds=3)


def run_wired_link(raw: bytes, state: dict[str, Any]) -> None:
    from protocols.mbus import LinkParser, parse_frame

    _typed(parse_frame, raw)
    parser = state.get("link")
    if parser is None:
        parser = state["link"] = LinkParser()
    cut = len(raw) // 3
    for part in (raw[:cut], raw[cut:]):
        parser.feed(part)
        if parser.pending > LINK_PARSER_MAX:
            raise AssertionError(f"link parser holds {parser.pending} bytes")
    state["n"] = n = state.get("n", 0) + 1
    if n % 97 == 0:  # end of stream now and then: what is left must come out as garbage
        parser.flush()
        if parser.pending:
            raise AssertionError("link parser keeps bytes after flush")


def make_application(rng: random.Random) -> bytes:
    from protocols.mbus.link import long_frame

    seeds = wired_seeds()
    frame = rng.choice(seeds)
    if rng.random() < 0.75 and len(frame) >= 9 and frame[0] == 0x68:
        # mutate the user data and frame it again with a valid checksum: the records are reached
        data = mutate(rng, frame[7:-2], tuple(s[7:-2] for s in seeds))[:252]
        ci = frame[6] if rng.random() < 0.9 else rng.randrange(256)
        return long_frame(frame[4], frame[5], ci, data)
    return bytes((rng.choice((0x72, 0x76, 0x78, 0x7A, rng.randrange(256))),)) + random_bytes(rng, 260)


def _every(state: dict[str, Any], n: int = CROSS_CHECK_EVERY) -> bool:
    state["i"] = i = state.get("i", 0) + 1
    return i % n == 0


def run_application(raw: bytes, state: dict[str, Any]) -> None:
    from protocols.decode import decode_frame_json, decode_frame_json_line
    from protocols.mbus import decode_long_frame, decode_user_data

    _typed(decode_long_frame, raw)
    if not raw.startswith(b"\x68"):  # a long frame's user data went through decode_long_frame already
        _typed(decode_user_data, raw[0] if raw else 0x72, raw[1:])
    if not _every(state):
        return
    obj = decode_frame_json(raw)
    ok, _line = decode_frame_json_line(raw)
    if ok is not obj["ok"]:
        raise AssertionError("decode_frame_json and decode_frame_json_line disagree")
    if not obj["ok"] and not obj.get("error"):
        raise AssertionError("failed decode without an error")


def make_wmbus(rng: random.Random) -> bytes:
    seeds, _keys = wireless_seeds()
    if rng.random() < 0.85:
        data = bytearray(mutate(rng, rng.choice(seeds), seeds, rounds=6))
        if data and rng.random() < 0.7:
            data[0] = (len(data) - 1) & 0xFF  # keep L consistent so ELL/AFL/TPL are reached
        return bytes(data)
    return random_bytes(rng)


def run_wmbus(raw: bytes, state: dict[str, Any]) -> None:
    from protocols.decode import decode_frame_json
    from protocols.wmbus import FormatCache, FragmentReassembler, decode_wmbus, parse_link

    _seeds, keys = wireless_seeds()
    formats = state.get("formats")
    if formats is None:
        formats = state["formats"] = FormatCache(max_formats=64)
        state["fragments"] = FragmentReassembler(max_messages=16)
    fragments = state["fragments"]
    _typed(decode_wmbus, raw, keys, formats=formats, fragments=fragments)
    _typed(parse_link, raw)
    if _every(state):
        _typed(decode_wmbus, raw, None, formats=formats, fragments=fragments)
        obj = decode_frame_json(raw, keys)
        if not obj["ok"] and not obj.get("error"):
            raise AssertionError("failed decode without an error")
    if len(formats) > 64 or len(fragments) > 16:
        raise AssertionError(f"decoder state grew past its bound ({len(formats)} formats, {len(fragments)})")


def _stick_stream(rng: random.Random, frame: Callable[[bytes], bytes]) -> bytes:
    seeds, _keys = wireless_seeds()
    parts = []
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        if choice < 0.7:
            telegram = rng.choice(seeds)
            parts.append(frame(telegram[1 : 1 + min(len(telegram) - 1, 250)]))
        elif choice < 0.85:
            parts.append(rng.randbytes(rng.randrange(12)))
        else:
            parts.append(random_bytes(rng, 120))
    stream = b"".join(parts)
    return mutate(rng, stream, rounds=4) if rng.random() < 0.8 else stream


def make_imst(rng: random.Random) -> bytes:
    from protocols.sticks import imst

    def frame(body: bytes) -> bytes:
        raw = imst.encode_hci(imst.RADIOLINK, imst.WMBUSMSG_IND, body, crc=rng.random() < 0.5)
        if rng.random() < 0.5:  # RSSI flag and byte, CRC dropped when it was set
            raw = bytes((raw[0], (raw[1] | imst.FLAG_RSSI) & ~imst.FLAG_CRC)) + raw[2 : 4 + raw[3]] + b"\x40"
        return raw

    return _stick_stream(rng, frame)


def run_imst(raw: bytes, state: dict[str, Any]) -> None:
    from protocols.sticks import imst
    from protocols.wmbus import parse_link

    parser = state.get("hci")
    if parser is None:
        parser = state["hci"] = imst.HciParser()
    for frame in parser.feed(raw):
        if frame.is_telegram:
            _typed(parse_link, imst.wmbus_telegram(frame))
    if parser.pending > HCI_PARSER_MAX:
        raise AssertionError(f"iM871A parser holds {parser.pending} bytes")


def make_amber(rng: random.Random) -> bytes:
    from protocols.sticks import amber

    return _stick_stream(rng, lambda body: amber.encode_command(amber.CMD_DATA_IND, body[:254] + b"\x9c"))


def run_amber(raw: bytes, state: dict[str, Any]) -> None:
    from protocols.sticks import amber
    from protocols.wmbus import parse_link

    parser = state.get("amber")
    if parser is None:
        parser = state["amber"] = amber.AmberParser()
    for frame in parser.feed(raw):
        if frame.is_telegram:
            _typed(parse_link, amber.wmbus_telegram(frame))
    if parser.pending > AMBER_PARSER_MAX:
        raise AssertionError(f"Amber parser holds {parser.pending} bytes")


def make_rtlwmbus(rng: random.Random) -> bytes:
    seeds, _keys = wireless_seeds()
    choice = rng.random()
    telegram = rng.choice(seeds)
    if choice < 0.7:
        line = (
            f"{rng.choice(('T1', 'C1', 'S1', ''))};1;1;2019-04-03 19:00:42.000;{rng.randint(-120, 200)};"
            f"{rng.randint(0, 255)};{telegram[4:8][::-1].hex()};0x{telegram.hex()}"
        ).encode()
        return mutate(rng, line, rounds=5)
    if choice < 0.85:
        return telegram.hex().encode()
    return random_bytes(rng, 200)


def run_rtlwmbus(raw: bytes, _state: dict[str, Any]) -> None:
    from protocols.sticks.rtlwmbus import parse_rtlwmbus_line

    # latin-1 maps every byte to a character: what a pipe with a wrong encoding may hand over
    line = _typed(parse_rtlwmbus_line, raw.decode("latin-1"))
    if line is not None and not line.telegram:
        raise AssertionError("rtl_wmbus line accepted without a telegram")


_JSON_VALUES = (
    b"null",
    b"-1",
    b"0",
    b"1e309",
    b"-1e309",
    b'""',
    b"[]",
    b"{}",
    b"true",
    b"9" * 400,
    b'"\\ud800"',
    b'"2025-13-01T00:00:00Z"',
    b'"' + b"a" * 600 + b'"',
    b"[" * 300 + b"]" * 300,
    b'"\xff\xfe"',
)


def make_messages(rng: random.Random) -> bytes:
    seeds = message_seeds()
    seed = rng.choice(seeds)
    choice = rng.random()
    if choice < 0.45:
        return mutate(rng, seed, seeds, rounds=6)
    if choice < 0.85:
        # structure-aware: replace one JSON value (what follows a ':') with an awkward one
        colons = [i for i, b in enumerate(seed) if b == 0x3A]
        at = rng.choice(colons) + 1
        end = at
        while end < len(seed) and seed[end] not in b",}]":
            end += 1
        return seed[:at] + rng.choice(_JSON_VALUES) + seed[end:]
    return random_bytes(rng, 400)


def run_messages(raw: bytes, state: dict[str, Any]) -> None:
    from protocols.messages import (
        collector_from_topic,
        encode,
        parse_command,
        parse_command_result,
        parse_frame_batch,
        parse_status,
    )

    for parse in (parse_frame_batch, parse_status, parse_command, parse_command_result):
        message = _typed(parse, raw)
        if message is not None and _every(state, 2):
            # what central or edge sends on must parse again (equality is too strict: a value of
            # 1e309 in a free-form ``args`` dict parses as inf and is written back as null)
            parse(encode(message))
    _typed(collector_from_topic, "imd/v1/" + raw[:40].decode("latin-1") + "/frames")


@dataclass(frozen=True)
class Target:
    name: str
    what: str
    make: Callable[[random.Random], bytes]
    run: Callable[[bytes, dict[str, Any]], None]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "mbus-link", "wired link layer: parse_frame + LinkParser stream", make_wired_link, run_wired_link
        ),
        Target(
            "mbus-application",
            "wired application layer records: decode_long_frame/decode_user_data/JSON",
            make_application,
            run_application,
        ),
        Target("wmbus", "wM-Bus link/ELL/AFL/TPL + AES (decode_wmbus, keys, caches)", make_wmbus, run_wmbus),
        Target("stick-im871a", "iM871A HCI stream parser", make_imst, run_imst),
        Target("stick-amber", "Amber command-mode stream parser", make_amber, run_amber),
        Target("stick-rtlwmbus", "rtl_wmbus line parser", make_rtlwmbus, run_rtlwmbus),
        Target("messages", "edge↔central schema: batch/status/command/result", make_messages, run_messages),
    )
}


# --- running -----------------------------------------------------------------------------------
@dataclass
class ChunkResult:
    target: str
    seed: int
    inputs: int = 0
    typed_errors: int = 0
    crashes: int = 0
    failure: str | None = None
    max_ms: float = 0.0  # CPU time of the slowest input (thread CPU clock: load does not inflate it)
    max_wall_ms: float = 0.0
    slowest_hex: str = ""
    cpu_s: float = 0.0
    traced_inputs: int = 0
    peak_input_bytes: int = 0
    rss_start_kb: int = 0
    rss_peak_kb: int = 0


@dataclass
class TargetResult:
    target: str
    what: str
    inputs: int = 0
    crashes: int = 0
    typed_errors: int = 0
    max_ms: float = 0.0
    max_wall_ms: float = 0.0
    slowest_hex: str = ""
    mean_us: float = 0.0
    traced_inputs: int = 0
    peak_input_bytes: int = 0
    rss_peak_kb: int = 0
    rss_growth_kb: int = 0
    failures: list[str] = field(default_factory=list)


def _rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def fuzz_chunk(name: str, inputs: int, seed: int, max_ms: float = 1000.0, traced: int = 2000) -> ChunkResult:
    """Run ``inputs`` inputs of one target in this process; stops at the first crash."""
    from protocols.errors import ProtocolError

    target = TARGETS[name]
    rng = random.Random(seed)
    state: dict[str, Any] = {}
    result = ChunkResult(name, seed)
    warm = random.Random(seed ^ 0x5A5A)
    warm_state: dict[str, Any] = {}
    for _ in range(400):  # lazy imports, seeds and tables outside the figures
        with contextlib.suppress(Exception):
            target.run(target.make(warm), warm_state)
    result.rss_start_kb = _rss_kb()
    cpu0 = time.process_time()
    tracing = False
    if traced:
        tracemalloc.start()
        tracing = True
    for case in range(inputs):
        raw = target.make(rng)
        if tracing:
            if case >= traced:
                tracemalloc.stop()
                tracing = False
            else:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        cpu_start = time.thread_time()
        try:
            target.run(raw, state)
        except ProtocolError as exc:  # a typed error escaping the target's own checks is allowed too
            result.typed_errors += 1
            if not str(exc):
                result.crashes += 1
                result.failure = f"{name} seed={seed} case={case} input={raw.hex()}: empty ProtocolError"
                break
        except Exception:
            result.crashes += 1
            result.failure = (
                f"{name} seed={seed} case={case} input={raw.hex()}\n{traceback.format_exc(limit=8)}"
            )
            break
        cpu_ms = (time.thread_time() - cpu_start) * 1000
        wall_ms = (time.perf_counter() - start) * 1000
        if tracing:
            result.peak_input_bytes = max(result.peak_input_bytes, tracemalloc.get_traced_memory()[1] - base)
            result.traced_inputs += 1
        elif cpu_ms > result.max_ms:
            # timing only while not tracing: tracemalloc slows every allocation several times
            result.max_ms = cpu_ms
            result.slowest_hex = raw.hex()
        result.inputs += 1
        if not tracing:
            result.max_wall_ms = max(result.max_wall_ms, wall_ms)
        if cpu_ms > max_ms and not tracing:
            result.crashes += 1
            result.failure = (
                f"{name} seed={seed} case={case}: {cpu_ms:.1f} CPU ms (a hang?) input={raw.hex()}"
            )
            break
    if tracing:
        tracemalloc.stop()
    result.cpu_s = time.process_time() - cpu0
    result.rss_peak_kb = _rss_kb()
    return result


def _chunk_star(args: tuple[str, int, int, float, int]) -> ChunkResult:
    return fuzz_chunk(*args)


def run(
    targets: list[str],
    inputs: int,
    seed: int,
    *,
    jobs: int = 1,
    chunk: int = 100_000,
    max_ms: float = 1000.0,
    traced: int = 2000,
    progress: bool = False,
) -> list[TargetResult]:
    tasks = []
    for t_index, name in enumerate(targets):
        done = 0
        c_index = 0
        while done < inputs:
            n = min(chunk, inputs - done)
            tasks.append((name, n, seed + 1_000_003 * t_index + c_index, max_ms, traced))
            done += n
            c_index += 1
    if jobs <= 1:
        chunks = [_chunk_star(task) for task in tasks]
    else:
        import multiprocessing

        # a fresh process per chunk: its RSS is the chunk's own, and a leak cannot hide in a pool
        with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1) as pool:
            chunks = []
            for got in pool.imap_unordered(_chunk_star, tasks):
                chunks.append(got)
                if progress:
                    print(f"  {got.target}: {got.inputs} inputs, {got.crashes} crashes", file=sys.stderr)
    results = []
    for name in targets:
        mine = [c for c in chunks if c.target == name]
        r = TargetResult(name, TARGETS[name].what)
        r.inputs = sum(c.inputs for c in mine)
        r.crashes = sum(c.crashes for c in mine)
        r.typed_errors = sum(c.typed_errors for c in mine)
        slowest = max(mine, key=lambda c: c.max_ms)
        r.max_ms, r.slowest_hex = slowest.max_ms, slowest.slowest_hex
        r.max_wall_ms = max(c.max_wall_ms for c in mine)
        cpu = sum(c.cpu_s for c in mine)
        r.mean_us = cpu / r.inputs * 1e6 if r.inputs else 0.0
        r.traced_inputs = sum(c.traced_inputs for c in mine)
        r.peak_input_bytes = max(c.peak_input_bytes for c in mine)
        r.rss_peak_kb = max(c.rss_peak_kb for c in mine)
        r.rss_growth_kb = max(c.rss_peak_kb - c.rss_start_kb for c in mine)
        r.failures = [c.failure for c in mine if c.failure]
        results.append(r)
    return results


def table(results: list[TargetResult]) -> str:
    head = (
        "| target | inputs | crashes | max CPU ms/input | max wall ms/input | mean CPU µs/input "
        "(with generation) | peak alloc/input (traced inputs) | peak RSS | RSS growth |"
    )
    rows = [
        f"| {r.target} | {r.inputs:,} | {r.crashes} | {r.max_ms:.2f} | {r.max_wall_ms:.1f} | "
        f"{r.mean_us:.1f} | "
        f"{r.peak_input_bytes / 1024:.1f} KiB ({r.traced_inputs:,}) | {r.rss_peak_kb / 1024:.1f} MiB | "
        f"{r.rss_growth_kb / 1024:.1f} MiB |"
        for r in results
    ]
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows]
    return "\n".join(lines)


def replay(name: str, hex_input: str) -> int:
    TARGETS[name].run(bytes.fromhex(hex_input), {})
    print("no crash")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz_long", description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target (default 1,000,000)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="only these (repeatable)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    parser.add_argument("--chunk", type=int, default=100_000, help="inputs per process")
    parser.add_argument(
        "--max-ms", type=float, default=1000.0, help="fail on one input using more CPU ms than this (a hang)"
    )
    parser.add_argument("--traced", type=int, default=2000, help="inputs per chunk measured with tracemalloc")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--replay", nargs=2, metavar=("TARGET", "HEX"), help="run one input and show the error"
    )
    args = parser.parse_args(argv)
    if args.replay:
        return replay(*args.replay)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    targets = args.target or list(TARGETS)
    started = time.monotonic()
    results = run(
        targets,
        args.inputs,
        seed,
        jobs=args.jobs,
        chunk=args.chunk,
        max_ms=args.max_ms,
        traced=args.traced,
        progress=True,
    )
    wall = time.monotonic() - started
    print(table(results))
    crashes = sum(r.crashes for r in results)
    print(
        f"fuzz: {len(targets)} targets x {args.inputs:,} inputs, seed {seed}, {wall:.0f} s wall, "
        f"{args.jobs} jobs: {crashes} crashes"
    )
    for r in results:
        for failure in r.failures:
            print("FAIL " + failure, file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps({"seed": seed, "wall_s": wall, "targets": [asdict(r) for r in results]}, indent=2)
        )
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
