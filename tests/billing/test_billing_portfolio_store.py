"""The parallel portfolio runner merges in job order with the bytes of a sequential run; a stored run
(canonical JSON) rebuilds to the same value."""

from __future__ import annotations

import json

from central.billing import GENERIC_CSV, compute_run, render
from central.billing.portfolio import PortfolioJob, run_portfolio
from central.billing.runs import BillingRun, RunStopped
from central.billing.serial import canonical_json, from_jsonable
from central.billing.synthetic import CREATED, build_property


def _bytes(result: BillingRun | RunStopped) -> tuple[str, bytes, bytes]:
    run = result if isinstance(result, BillingRun) else result.preview
    assert run is not None
    return run.run_id, canonical_json(run), render(run, GENERIC_CSV)


def test_parallel_portfolio_equals_sequential_in_job_order() -> None:
    jobs = [PortfolioJob(f"R-{i}", source=build_property, args=(i, 6 + i % 3)) for i in range(7)]
    sequential = [_bytes(compute_run(build_property(i, 6 + i % 3), f"R-{i}", CREATED, "t")) for i in range(7)]
    parallel = run_portfolio(jobs, CREATED, "t", workers=2, chunk=2, summarise=_bytes)
    assert parallel == sequential
    one = run_portfolio([PortfolioJob("R-0", input=build_property(0, 6))], CREATED, "t", workers=1)
    assert _bytes(one[0]) == sequential[0]


def test_stored_run_rebuilds_to_the_same_value() -> None:
    for index in range(3):
        result = compute_run(build_property(index, 12), f"R-{index}", CREATED, "t")
        data = json.loads(canonical_json(result))
        back = from_jsonable(type(result), data)
        assert back == result
        assert canonical_json(back) == canonical_json(result)
