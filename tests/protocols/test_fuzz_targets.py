"""The ``make fuzz`` targets at a small size (20,000 inputs each): 0 crashes, bounded time and memory.

The full run (1,000,000 inputs per target) is ``make fuzz``; its figures are in docs/OPERATIONS.md.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "fuzz_long", Path(__file__).resolve().parents[1] / "fuzz_long.py"
)
assert _spec is not None
assert _spec.loader is not None
fuzz_long = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_long"] = fuzz_long  # its dataclasses look their module up there
_spec.loader.exec_module(fuzz_long)

INPUTS = 20_000
SEED = 20_251_203


@pytest.mark.timeout(600)  # a few seconds each on an idle machine; a loaded CI box may take minutes
@pytest.mark.parametrize("target", sorted(fuzz_long.TARGETS))
def test_fuzz_target_small(target: str) -> None:
    (result,) = fuzz_long.run([target], INPUTS, SEED, jobs=1, chunk=INPUTS, max_ms=2000.0, traced=500)
    assert result.failures == []
    assert result.crashes == 0
    assert result.inputs == INPUTS
    # one input allocates kilobytes, not megabytes; a leak would show as RSS growth
    assert result.peak_input_bytes < 512 * 1024, result.peak_input_bytes
    assert result.rss_growth_kb < 32 * 1024, result.rss_growth_kb


def test_mutations_reach_past_the_first_layer() -> None:
    """Most mutated wired frames keep a valid checksum, so the record decoder itself is exercised."""
    from protocols.errors import ProtocolError
    from protocols.mbus import decode_long_frame

    rng = random.Random(1)
    decoded = errors_in_records = 0
    for _ in range(500):
        raw = fuzz_long.make_application(rng)
        try:
            decode_long_frame(raw)
            decoded += 1
        except ProtocolError as exc:
            errors_in_records += "checksum" not in str(exc).lower()
    assert decoded > 50
    assert errors_in_records > 50


def test_a_crash_is_reported_with_its_input() -> None:
    def boom(raw: bytes, _state: dict) -> None:
        if len(raw) > 3:
            raise KeyError("bug")

    fuzz_long.TARGETS["boom"] = fuzz_long.Target("boom", "test", fuzz_long.make_wired_link, boom)
    try:
        result = fuzz_long.fuzz_chunk("boom", 1000, 7, traced=0)
    finally:
        del fuzz_long.TARGETS["boom"]
    assert result.crashes == 1
    assert result.failure is not None
    assert "KeyError" in result.failure
    assert "input=" in result.failure
