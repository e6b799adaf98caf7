"""imd.audit: the offline advisory check behind `make audit`, its pip-audit fallback and the refresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from imd import audit

SNAPSHOT: dict[str, Any] = {
    "format": 1,
    "snapshot_date": "2026-12-01",
    "source": "test",
    "newest_record_modified": "2026-11-30",
    "accepted": [],
    "packages": {
        "webthing": {
            "version": "1.4.0",
            "advisories": [
                {
                    "id": "PYSEC-2099-1",
                    "aliases": ["CVE-2099-0001"],
                    "affected": [{"introduced": "1.2", "fixed": "1.5.0"}],
                    "summary": "header injection",
                },
                {
                    "id": "PYSEC-2099-2",
                    "aliases": [],
                    "affected": [{"introduced": "0", "fixed": "1.0"}],
                    "summary": "old bug",
                },
            ],
        },
        "multirange": {
            "version": "2.3.0",
            "advisories": [
                {
                    "id": "PYSEC-2099-3",
                    "aliases": ["GHSA-xxxx-yyyy-zzzz"],
                    "affected": [
                        {"introduced": "0", "fixed": "1.10.13"},
                        {"introduced": "2.0.0", "fixed": "2.4.0"},
                    ],
                    "summary": "ReDoS",
                },
                {
                    "id": "PYSEC-2099-4",
                    "aliases": [],
                    "affected": [{"introduced": "0", "last_affected": "2.3.0"}],
                    "summary": "disputed",
                },
            ],
        },
        "clean": {"version": "3.0", "advisories": []},
    },
}


def test_vulnerable_range_is_found_with_id_and_fixed_version() -> None:
    report = audit.check_snapshot(SNAPSHOT, {"webthing": "1.4.0", "clean": "3.0"})
    assert [(f.package, f.advisory_id, f.fixed) for f in report.findings] == [
        ("webthing", "PYSEC-2099-1", ("1.5.0",))
    ]
    assert report.failed
    line = report.findings[0].line()
    assert "PYSEC-2099-1 (CVE-2099-0001)" in line
    assert "fixed in 1.5.0" in line


@pytest.mark.parametrize(
    ("version", "ids"),
    [
        ("1.1.9", []),  # below `introduced`
        ("1.5.0", []),  # the fixed version itself
        ("1.5.0rc1", ["PYSEC-2099-1"]),  # a pre-release of the fix is still before it
        ("0.9", ["PYSEC-2099-2"]),
    ],
)
def test_range_edges(version: str, ids: list[str]) -> None:
    report = audit.check_snapshot(SNAPSHOT, {"webthing": version})
    assert [f.advisory_id for f in report.findings] == ids


@pytest.mark.parametrize(
    ("version", "ids"),
    [
        ("1.10.12", ["PYSEC-2099-3", "PYSEC-2099-4"]),
        ("1.10.13", ["PYSEC-2099-4"]),  # between the two ranges
        ("2.3.0", ["PYSEC-2099-3", "PYSEC-2099-4"]),  # last_affected is inclusive
        ("2.3.1", ["PYSEC-2099-3"]),
        ("2.4.0", []),
    ],
)
def test_several_ranges_and_last_affected(version: str, ids: list[str]) -> None:
    assert [f.advisory_id for f in audit.check_snapshot(SNAPSHOT, {"multirange": version}).findings] == ids


def test_open_range_without_fix_affects_everything_after_introduced() -> None:
    assert audit.is_affected(Version("9.9"), [{"introduced": "2.0"}])
    assert not audit.is_affected(Version("1.9"), [{"introduced": "2.0"}])
    assert not audit.is_affected(Version("1.0"), [])  # a record without ranges affects nothing


def test_package_missing_from_snapshot_fails() -> None:
    report = audit.check_snapshot(SNAPSHOT, {"clean": "3.0", "newdep": "0.1"})
    assert report.findings == []
    assert report.missing == [("newdep", "0.1")]
    assert report.failed


def test_other_installed_version_is_a_note_not_a_failure() -> None:
    report = audit.check_snapshot(SNAPSHOT, {"clean": "3.1"})
    assert report.drift == [("clean", "3.1", "3.0")]
    assert not report.failed


def test_accepted_risk_by_alias_does_not_fail() -> None:
    snapshot = {
        **SNAPSHOT,
        "accepted": [{"package": "WebThing", "id": "CVE-2099-0001", "reason": "code path unused"}],
    }
    report = audit.check_snapshot(snapshot, {"webthing": "1.4.0"})
    assert report.findings == []
    assert [(f.advisory_id, f.accepted_reason) for f in report.accepted] == [
        ("PYSEC-2099-1", "code path unused")
    ]
    assert not report.failed


def _run_main(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, installed: dict[str, str], *argv: str
) -> tuple[int, Path]:
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(SNAPSHOT), encoding="utf-8")
    monkeypatch.setattr(audit, "installed_distributions", lambda: installed)
    return audit.main(["--snapshot", str(path), *argv]), path


def test_main_offline_fails_on_missing_package_with_refresh_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = _run_main(monkeypatch, tmp_path, {"clean": "3.0", "newdep": "0.1"}, "--offline")
    out = capsys.readouterr().out
    assert rc == 1
    assert "MISSING newdep 0.1: installed but not in the snapshot" in out
    assert "--refresh" in out
    assert "of 2026-12-01 (" in out  # date and age are printed


def test_main_offline_passes_clean_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _ = _run_main(monkeypatch, tmp_path, {"clean": "3.0", "webthing": "1.5.0"}, "--offline")
    assert rc == 0
    assert "audit: passed" in capsys.readouterr().out


PIP_AUDIT_ALL_SKIPPED = json.dumps(
    {
        "dependencies": [
            {
                "name": "clean",
                "skip_reason": "Dependency not found on PyPI and could not be audited: clean (3.0)",
            },
            {
                "name": "webthing",
                "skip_reason": "Dependency not found on PyPI and could not be audited: webthing",
            },
        ],
        "fixes": [],
    }
)


def test_pip_audit_unreachable_when_nothing_was_audited() -> None:
    result = audit.interpret_pip_audit(0, PIP_AUDIT_ALL_SKIPPED, "")
    assert not result.reachable
    assert "2 of 2 packages skipped" in result.reason


def test_pip_audit_unreachable_on_traceback() -> None:
    stderr = (
        "Traceback (most recent call last):\n...\nrequests.exceptions.ConnectionError: Max retries exceeded\n"
    )
    result = audit.interpret_pip_audit(1, "", stderr)
    assert not result.reachable
    assert "ConnectionError" in result.reason


def test_pip_audit_findings_decide_when_it_reached_the_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = {
        "dependencies": [
            {"name": "clean", "version": "3.0", "vulns": []},
            {
                "name": "WebThing",
                "version": "1.5.0",
                "vulns": [
                    {"id": "GHSA-live-only", "fix_versions": ["1.6"], "aliases": [], "description": "new\nx"}
                ],
            },
            {
                "name": "newdep",
                "skip_reason": "Dependency not found on PyPI and could not be audited: newdep (0.1)",
            },
        ]
    }
    result = audit.interpret_pip_audit(1, json.dumps(report), "")
    assert result.reachable
    assert [(f.package, f.advisory_id, f.fixed, f.summary) for f in result.findings] == [
        ("webthing", "GHSA-live-only", ("1.6",), "new")
    ]
    monkeypatch.setattr(audit, "run_pip_audit", lambda timeout_s, probe: result)
    rc, _ = _run_main(monkeypatch, tmp_path, {"clean": "3.0", "webthing": "1.5.0", "newdep": "0.1"})
    out = capsys.readouterr().out
    assert rc == 1
    assert "VULNERABLE webthing 1.5.0: GHSA-live-only" in out  # pip-audit's finding, not in the snapshot
    assert "MISSING newdep 0.1" in out  # skipped by pip-audit and not covered by the snapshot either


def test_main_falls_back_to_snapshot_when_pip_audit_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = audit.interpret_pip_audit(0, PIP_AUDIT_ALL_SKIPPED, "")
    monkeypatch.setattr(audit, "run_pip_audit", lambda timeout_s, probe: unreachable)
    rc, _ = _run_main(monkeypatch, tmp_path, {"clean": "3.0", "webthing": "1.4.0"})
    out = capsys.readouterr().out
    assert rc == 1
    assert out.startswith("audit: pip-audit could not reach its advisory service (")
    assert "2 of 2 packages skipped" in out.splitlines()[0]
    assert "VULNERABLE webthing 1.4.0: PYSEC-2099-1" in out


def test_probe_decides_before_the_full_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    answers = iter(
        [
            audit.PipAuditResult(False, "1 of 1 packages skipped"),
            audit.PipAuditResult(True, audited={"pip": "26.3"}),
            audit.PipAuditResult(True, audited={"clean": "3.0"}),
        ]
    )

    def fake(extra: list[str], timeout_s: float) -> audit.PipAuditResult:
        calls.append(list(extra))
        return next(answers)

    monkeypatch.setattr(audit, "_pip_audit", fake)
    first = audit.run_pip_audit(10, ("pip", "26.3"))
    assert not first.reachable
    assert first.reason.startswith("pip 26.3 looked up alone")
    assert len(calls) == 1  # unreachable: no full run
    assert audit.run_pip_audit(10, ("pip", "26.3")).audited == {"clean": "3.0"}
    assert calls[1][:2] == ["--no-deps", "--disable-pip"]
    assert calls[2] == ["--skip-editable"]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_refresh_from_advisory_database_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "adb"
    # The early PYSEC schema: the range carries introduced/fixed itself.
    _write(
        db / "vulns/webthing/PYSEC-2099-10.yaml",
        "id: PYSEC-2099-10\npackage: {name: webthing, ecosystem: PyPI}\nsummary: Vulnerability in webthing\n"
        "details: Webthing before 1.2 leaks a header. More text here.\naffects:\n  ranges:\n"
        "  - {type: GIT, repo: x, fixed: abc}\n  - {type: ECOSYSTEM, fixed: '1.2'}\n"
        "aliases: [CVE-2099-0010]\nmodified: '2021-01-02T00:00:00Z'\n",
    )
    # OSV schema with two ranges in one event list.
    _write(
        db / "vulns/webthing/PYSEC-2099-11.yaml",
        "id: PYSEC-2099-11\nsummary: cookie leak\naliases: [CVE-2099-0011, GHSA-aaaa-bbbb-cccc]\n"
        "modified: '2026-05-01T00:00:00Z'\naffected:\n"
        "- package: {name: WebThing, ecosystem: PyPI}\n  ranges:\n  - type: ECOSYSTEM\n"
        "    events: [{introduced: 2.0.0}, {fixed: 2.0.6}, {introduced: '0'}, {fixed: 1.26.17}]\n",
    )
    # A draft of the same CVE as a numbered record (dropped) and one without a numbered record (kept).
    _write(
        db / "vulns/webthing/PYSEC-0000-CVE-2099-0011.yaml",
        "id: PYSEC-0000-CVE-2099-0011\naliases: [CVE-2099-0011]\naffected:\n- package: {name: webthing}\n"
        "  ranges: [{type: ECOSYSTEM, events: [{introduced: '0'}, {fixed: 1.26.17}]}]\n",
    )
    _write(
        db / "vulns/webthing/PYSEC-0000-CVE-2099-0012.yaml",
        "id: PYSEC-0000-CVE-2099-0012\ndetails: new one\naliases: [CVE-2099-0012]\naffected:\n"
        "- package: {name: webthing}\n"
        "  ranges: [{type: ECOSYSTEM, events: [{introduced: '0'}, {last_affected: '3.0'}]}]\n",
    )
    _write(
        db / "vulns/webthing/PYSEC-2099-13.yaml", "id: PYSEC-2099-13\nwithdrawn: '2026-01-01'\naffected: []\n"
    )
    monkeypatch.setattr(audit, "installed_distributions", lambda: {"webthing": "2.0.1", "clean": "3.0"})
    path = tmp_path / "snapshot.json"
    path.write_text(
        json.dumps({**SNAPSHOT, "accepted": [{"package": "x", "id": "y", "reason": "z"}]}), "utf-8"
    )

    assert audit.main(["--snapshot", str(path), "--refresh", str(db), "--source", "deadbeef"]) == 0
    assert "wrote" in capsys.readouterr().out
    new = json.loads(path.read_text(encoding="utf-8"))
    assert new["accepted"] == [{"package": "x", "id": "y", "reason": "z"}]  # kept across refreshes
    assert "deadbeef" in new["source"]
    assert new["packages"]["clean"] == {"version": "3.0", "advisories": []}
    advisories = {a["id"]: a for a in new["packages"]["webthing"]["advisories"]}
    assert sorted(advisories) == ["PYSEC-0000-CVE-2099-0012", "PYSEC-2099-10", "PYSEC-2099-11"]
    assert advisories["PYSEC-2099-10"]["affected"] == [{"introduced": "0", "fixed": "1.2"}]
    assert advisories["PYSEC-2099-10"]["summary"] == "Webthing before 1.2 leaks a header"
    assert advisories["PYSEC-2099-11"]["affected"] == [
        {"introduced": "2.0.0", "fixed": "2.0.6"},
        {"introduced": "0", "fixed": "1.26.17"},
    ]
    assert advisories["PYSEC-0000-CVE-2099-0012"]["affected"] == [{"introduced": "0", "last_affected": "3.0"}]
    assert new["newest_record_modified"] == "2026-05-01"
    report = audit.check_snapshot(new, {"webthing": "2.0.1"})
    assert [f.advisory_id for f in report.findings] == ["PYSEC-0000-CVE-2099-0012", "PYSEC-2099-11"]


def test_committed_snapshot_is_well_formed() -> None:
    snapshot = audit.load_snapshot()
    assert snapshot["snapshot_date"]
    assert snapshot["source"]
    seen: set[tuple[str, str]] = set()
    for name, entry in snapshot["packages"].items():
        Version(entry["version"])
        for adv in entry["advisories"]:
            assert (name, adv["id"]) not in seen
            seen.add((name, adv["id"]))
            assert adv["summary"], adv["id"]
            for rng in adv["affected"]:
                assert set(rng) <= {"introduced", "fixed", "last_affected"}, adv["id"]
                for value in rng.values():
                    Version(value)
    for entry in snapshot["accepted"]:
        assert {"package", "id", "reason"} <= set(entry)
