"""The reliability suite's mechanism in CI: an ingest worker killed with SIGKILL mid-stream, then
every message delivered twice more, shuffled and reversed. Real Mosquitto (a private one, so the
kill and the republication disturb nobody), real ``imd central serve``, SQLite.

``make reliability`` runs the full set of scenarios (broker outage, collector kill, database
restart, disk full, clock jumps, ...); this is the fast one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.reliability.parts import FAKETIME_LIB, MOSQUITTO, Figures, wait_for
from tests.reliability.scenarios import Sizes, clock_jumps, lab

pytestmark = pytest.mark.skipif(shutil.which(MOSQUITTO) is None, reason=f"needs Mosquitto ({MOSQUITTO})")


def test_killed_worker_and_redelivery_lose_nothing_and_double_nothing(tmp_path: Path) -> None:
    with lab(tmp_path, "fast") as lab_:
        fleet = lab_.fleet(41, Sizes(fleet_properties=1, fleet_apartments=4, fleet_rounds=5))
        (worker,) = lab_.workers(1)
        fleet.publish_in_background(lab_.broker.url, rate=25)
        wait_for(lambda: lab_.stored() >= len(fleet.keys) // 3, 60, "ingest to be under way")
        worker.kill()
        stored_at_kill = lab_.stored()
        fleet.join()
        assert stored_at_kill < len(fleet.keys), "the kill came after everything was stored"
        began = time.monotonic()
        worker.start()  # same client id: the broker hands its session's backlog to it
        wait_for(lambda: lab_.stored() >= len(fleet.keys), 60, "the backlog to be stored", step=0.2)
        recovery = time.monotonic() - began

        acked = worker.acknowledged()
        again = fleet.shuffled_twice(seed=3)
        fleet.publish(lab_.broker.url, messages=again)
        wait_for(lambda: worker.acknowledged() >= acked + len(again), 60, "the copies to be acknowledged")

        figures = lab_.tally(Figures("fast"), fleet.keys)
        print(f"\n{figures.sent} frames sent, {figures.copies} copies on the wire, {figures.stored} stored, "
              f"{stored_at_kill} stored at the kill, recovery {recovery:.1f} s")
        assert figures.problems == []
        assert figures.lost == 0
        assert figures.doubled == 0
        assert figures.stored == figures.sent
        assert figures.copies >= 3 * figures.sent
        assert figures.readings_match
        assert figures.readings > 0


@pytest.mark.skipif(not FAKETIME_LIB.exists(), reason=f"needs libfaketime ({FAKETIME_LIB})")
def test_collector_keeps_polling_after_its_wall_clock_steps_back(tmp_path: Path) -> None:
    # APScheduler waits by the wall clock: without the collector's clock guard a step back of
    # three days held every poll for three days (this test timed out waiting for the polls).
    figures = clock_jumps(tmp_path, Sizes(), steps=("+0", "-3d"))
    print(f"\n{figures.note}")
    assert figures.ok, figures.problems
