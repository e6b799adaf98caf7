# The two commands a new user needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint unit bench fuzz audit clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/imd demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy protocols

unit: $(STAMP)
	$(BIN)/python -m pytest

# audit before unit: it takes a few seconds and fails fast on a vulnerable or unsnapshotted dependency.
test: lint audit unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks

fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz_long

# Fault scenarios against the real parts (a private Mosquitto and PostgreSQL, `imd central serve`
# workers, `imd edge run` on the simulator): broker outage and restart, kill -9 of a collector and
# of an ingest worker, database restart, disk full, clock steps, duplicates and reordering. Figures
# to stdout and test-artifacts/reliability.md. Root for the disk-full tmpfs, libfaketime for the
# clock steps (a scenario whose part is missing says why it did not run). About 6 minutes.
.PHONY: reliability
reliability: $(STAMP)
	$(BIN)/python -m tests.reliability

# schemathesis against a running central (admin token, real broker): 25 cases per API operation,
# 0 server errors required; the suite runs the same test with 5 (tests/ops/test_schemathesis.py).
.PHONY: schemathesis
schemathesis: $(STAMP)
	IMD_SCHEMATHESIS_EXAMPLES=25 $(BIN)/python -m pytest tests/ops/test_schemathesis.py -q -s -p no:cacheprovider

# Known vulnerabilities in the installed dependencies: pip-audit against PyPI's advisory data when it
# can reach it; when it cannot (this build machine and CI: every package "not found on PyPI") the
# committed snapshot imd/advisory_snapshot.json decides. Fails on any finding and on any installed
# package the snapshot does not cover. Refreshing the snapshot: docs/OPERATIONS.md, section 10.
audit: $(STAMP)
	$(BIN)/python -m imd.audit

# Debian's chromium for the browser tests in tests/web (Playwright drives it; never `playwright install`).
browser: $(STAMP)
	@if [ -x /usr/bin/chromium ]; then echo "chromium present: /usr/bin/chromium"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	else echo "run as root: apt-get update && apt-get install -y chromium"; fi
	$(BIN)/python -m pytest tests/web -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
