"""Faults: what the scenario asks is what the truth log records and what the meters then send."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hwsim.building import build_building
from hwsim.faults import FAULT_KINDS, FaultBook, find_meter

from protocols.mbus.application import decode_long_frame
from protocols.site import Medium

START = datetime(2025, 11, 1, tzinfo=UTC)

SCENARIO = """
[[fault]]
meter = "address:1"
kind = "stuck"
start = "+1d"
end = "+10d"

[[fault]]
meter = "apartment:{apt}/cold_water"
kind = "leak"
start = "+2d"
params = {{ flow_lh = 15 }}

[[fault]]
meter = "address:4"
kind = "replaced"
start = "2025-11-05T00:00:00+00:00"

[[fault]]
meter = "address:5"
kind = "backwards"
start = "+3d"
"""


@pytest.fixture
def sim():
    return build_building(seed=9, apartments=2)


def test_scenario_file_is_the_truth_log(sim, tmp_path):
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO.format(apt=sim.site.apartments[0].object_number))
    truth = tmp_path / "truth.jsonl"
    sim.faults.set_truth_log(truth)
    injected = sim.faults.load_scenario(scenario, sim.meters, START)
    logged = [json.loads(line) for line in truth.read_text().splitlines()]
    assert [(e["meter"], e["fault"], e["start"], e["end"]) for e in logged] == [
        (f"{f.meter:08d}", f.kind, f.start.isoformat(), f.end.isoformat() if f.end else None)
        for f in injected
    ]
    assert logged[0]["start"] == (START + timedelta(days=1)).isoformat()
    assert logged[0]["end"] == (START + timedelta(days=10)).isoformat()
    assert logged[1]["params"] == {"flow_lh": 15}

    stuck = find_meter(sim.meters, "address:1")
    during = [stuck.registers(START + timedelta(days=d))["energy"] for d in (2, 5, 9)]
    assert len(set(during)) == 1
    assert stuck.registers(START + timedelta(days=11))["energy"] > during[0]

    cold = find_meter(sim.meters, f"apartment:{sim.site.apartments[0].object_number}/cold_water")
    at = START + timedelta(days=4)
    assert cold.registers(at)["flow"] >= 15
    assert cold.registers(at)["error_flags"] & 0x04

    old = find_meter(sim.meters, "address:4")
    new_id = int(logged[2]["params"]["new_id"])
    after = START + timedelta(days=4, hours=6)
    assert decode_long_frame(old.rsp_ud(after, 4)).id == f"{new_id:08d}"
    assert decode_long_frame(old.rsp_ud(START, 4)).id == f"{old.ident:08d}"
    assert int(old.registers(after)["energy"]) < int(old.registers(START)["energy"]) / 100

    back = find_meter(sim.meters, "address:5")
    v1 = back.registers(START + timedelta(days=4))["volume"]
    v2 = back.registers(START + timedelta(days=9))["volume"]
    assert v2 < v1


def test_clearing_a_fault_ends_it_and_logs_the_end(sim):
    book: FaultBook = sim.faults
    meter = sim.meters[0]
    book.inject(meter, "error_flags", START, bits=0x02)
    assert meter.registers(START + timedelta(hours=1))["error_flags"] == 0x02
    book.clear(meter, "error_flags", START + timedelta(hours=2))
    assert meter.registers(START + timedelta(hours=3))["error_flags"] == 0
    assert [(e["event"], e["fault"]) for e in book.events] == [
        ("fault", "error_flags"),
        ("end", "error_flags"),
    ]


def test_every_fault_kind_can_be_injected_on_a_fitting_meter(sim):
    water = next(m for m in sim.meters if m.medium is Medium.COLD_WATER)
    heat = next(m for m in sim.meters if m.medium is Medium.HEAT)
    for kind in FAULT_KINDS:
        meter = heat if kind in {"temperature_reversed", "stuck", "backwards"} else water
        sim.faults.inject(meter, kind, START, START + timedelta(hours=1))
        at = START + timedelta(minutes=30)
        meter.rsp_ud(at, meter.primary_address)  # every effect still gives a valid telegram
    assert len(sim.faults.events) == len(FAULT_KINDS)


def test_unknown_kind_and_bad_reference_are_rejected(sim):
    with pytest.raises(ValueError, match="unknown fault"):
        sim.faults.inject(sim.meters[0], "melted", START)
    with pytest.raises(ValueError, match="matches 0 meters"):
        find_meter(sim.meters, "address:200")
