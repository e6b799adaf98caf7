"""Known-vulnerability audit of the installed Python distributions (`make audit`).

pip-audit asks PyPI's JSON API (or OSV) for the advisories of every installed distribution. This build
machine and CI cannot reach either, and then pip-audit reports every package as "not found on PyPI"
and, without --strict, passes. So `python -m imd.audit` runs pip-audit first and, when it could not
audit a single package, says so and checks the committed snapshot `imd/advisory_snapshot.json`
instead: the PyPA advisory records of exactly the distributions installed in `.venv`, compared with the
installed versions by `packaging.version`. Any finding fails, and so does an installed distribution
the snapshot does not cover, so adding a dependency cannot leave the snapshot silently stale.

    python -m imd.audit                 # pip-audit, else the snapshot
    python -m imd.audit --offline       # the snapshot only
    python -m imd.audit --refresh DIR   # rebuild the snapshot from a checkout of pypa/advisory-database
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

SNAPSHOT_PATH = Path(__file__).with_name("advisory_snapshot.json")
PROJECT = "imd-gateway"
# Beyond this the snapshot is probably missing newer advisories. A warning, not a failure: a check
# that starts failing on a date alone would break CI with nothing changed in the code.
STALE_AFTER_DAYS = 90
REFRESH_HINT = (
    "refresh the snapshot: git clone --depth 1 https://github.com/pypa/advisory-database /tmp/adb && "
    ".venv/bin/python -m imd.audit --refresh /tmp/adb (docs/OPERATIONS.md, section 10)"
)


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory_id: str
    aliases: tuple[str, ...]
    fixed: tuple[str, ...]
    summary: str
    accepted_reason: str | None = None

    def line(self) -> str:
        ids = self.advisory_id + (f" ({', '.join(self.aliases)})" if self.aliases else "")
        fix = f"fixed in {', '.join(self.fixed)}" if self.fixed else "no fixed version listed"
        return f"{self.package} {self.version}: {ids}, {fix}: {self.summary}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    accepted: list[Finding] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    unparseable: list[tuple[str, str]] = field(default_factory=list)
    drift: list[tuple[str, str, str]] = field(default_factory=list)
    checked: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.findings or self.missing or self.unparseable)


def installed_distributions(exclude: Iterable[str] = (PROJECT,)) -> dict[str, str]:
    """Canonical name -> version of every distribution importlib.metadata sees (first on sys.path wins)."""
    skip = {canonicalize_name(n) for n in exclude}
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = canonicalize_name(name)
        if key not in skip:
            found.setdefault(key, dist.version)
    return found


def load_snapshot(path: Path = SNAPSHOT_PATH) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != 1:
        raise ValueError(f"{path}: unknown snapshot format {data.get('format')!r}")
    return data


def is_affected(version: Version, affected: Sequence[Mapping[str, str]]) -> bool:
    """OSV ECOSYSTEM semantics: introduced <= v < fixed, or introduced <= v <= last_affected."""
    for rng in affected:
        introduced = rng.get("introduced", "0")
        if introduced != "0" and version < Version(introduced):
            continue
        if "fixed" in rng:
            if version < Version(rng["fixed"]):
                return True
        elif "last_affected" in rng:
            if version <= Version(rng["last_affected"]):
                return True
        else:  # no fix yet: everything from `introduced` on
            return True
    return False


def _accepted_reasons(snapshot: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    reasons: dict[tuple[str, str], str] = {}
    for entry in snapshot.get("accepted", []):
        reasons[(canonicalize_name(entry["package"]), entry["id"])] = entry["reason"]
    return reasons


def _accept(finding: Finding, reasons: Mapping[tuple[str, str], str]) -> Finding:
    for ident in (finding.advisory_id, *finding.aliases):
        reason = reasons.get((finding.package, ident))
        if reason is not None:
            return Finding(**{**finding.__dict__, "accepted_reason": reason})
    return finding


def check_snapshot(snapshot: Mapping[str, Any], installed: Mapping[str, str]) -> Report:
    packages: Mapping[str, Any] = snapshot["packages"]
    reasons = _accepted_reasons(snapshot)
    report = Report()
    for name, version_text in sorted(installed.items()):
        entry = packages.get(name)
        if entry is None:
            report.missing.append((name, version_text))
            continue
        report.checked += 1
        if entry.get("version") != version_text:
            report.drift.append((name, version_text, str(entry.get("version"))))
        try:
            version = Version(version_text)
        except InvalidVersion:
            report.unparseable.append((name, version_text))
            continue
        for adv in entry["advisories"]:
            if not is_affected(version, adv["affected"]):
                continue
            finding = _accept(
                Finding(
                    package=name,
                    version=version_text,
                    advisory_id=adv["id"],
                    aliases=tuple(adv.get("aliases", ())),
                    fixed=tuple(r["fixed"] for r in adv["affected"] if "fixed" in r),
                    summary=adv.get("summary", ""),
                ),
                reasons,
            )
            (report.accepted if finding.accepted_reason else report.findings).append(finding)
    return report


# ---- pip-audit -------------------------------------------------------------------------------


@dataclass
class PipAuditResult:
    reachable: bool
    reason: str = ""
    findings: list[Finding] = field(default_factory=list)
    audited: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> skip reason


def interpret_pip_audit(returncode: int, stdout: str, stderr: str) -> PipAuditResult:
    """Decide from pip-audit's JSON whether it reached its advisory service, and what it found.

    Unreachable: no JSON at all (connection errors end in a traceback) or not one package audited
    (every one skipped, as "Dependency not found on PyPI" when the JSON API answers 404).
    """
    try:
        data = json.loads(stdout)
        deps = data["dependencies"]
    except (ValueError, KeyError, TypeError):
        tail = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "no output")
        return PipAuditResult(False, f"pip-audit exited {returncode} without a report ({tail.strip()[:160]})")
    result = PipAuditResult(True)
    for dep in deps:
        name = canonicalize_name(dep["name"])
        if "skip_reason" in dep:
            result.skipped[name] = dep["skip_reason"]
            continue
        result.audited[name] = dep.get("version", "")
        for vuln in dep.get("vulns", []):
            summary = (vuln.get("description") or "").strip().splitlines()
            result.findings.append(
                Finding(
                    package=name,
                    version=dep.get("version", ""),
                    advisory_id=vuln["id"],
                    aliases=tuple(vuln.get("aliases", ())),
                    fixed=tuple(vuln.get("fix_versions", ())),
                    summary=(summary[0] if summary else "")[:160],
                )
            )
    if not result.audited:
        first = next(iter(result.skipped.values()), "no packages listed")
        result.reachable = False
        result.reason = f"{len(result.skipped)} of {len(deps)} packages skipped, e.g. {first!r}"
    return result


def _pip_audit(extra: Sequence[str], timeout_s: float) -> PipAuditResult:
    cmd = [sys.executable, "-m", "pip_audit", *extra, "--progress-spinner", "off", "--format", "json"]
    cmd += ["--timeout", "15"]
    try:
        # The audit's own interpreter and a fixed argument list: nothing here comes from input.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        return PipAuditResult(False, f"pip-audit did not finish within {timeout_s:.0f} s")
    except OSError as exc:
        return PipAuditResult(False, f"pip-audit could not be started ({exc})")
    return interpret_pip_audit(proc.returncode, proc.stdout, proc.stderr)


def run_pip_audit(timeout_s: float = 180.0, probe: tuple[str, str] | None = None) -> PipAuditResult:
    """pip-audit of the environment; first of `probe` alone (one lookup), so that an unreachable service
    costs one query instead of one per installed package (a 404 each, 2-10 s in all here)."""
    if probe is not None:
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "probe.txt"
            req.write_text(f"{probe[0]}=={probe[1]}\n", encoding="utf-8")
            first = _pip_audit(["--no-deps", "--disable-pip", "--requirement", str(req)], timeout_s)
        if not first.reachable:
            first.reason = f"{probe[0]} {probe[1]} looked up alone: {first.reason}"
            return first
    return _pip_audit(["--skip-editable"], timeout_s)


# ---- refresh from a checkout of pypa/advisory-database --------------------------------------


def _events_to_ranges(events: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    ranges: list[dict[str, str]] = []
    start: str | None = None
    for raw in events:
        # The protobuf-style dumps spell last_affected "lastaffected" and carry every key, empty ones as "".
        ev = {
            k.replace("lastaffected", "last_affected"): str(v) for k, v in raw.items() if v not in ("", None)
        }
        if "introduced" in ev:
            if start is not None:
                ranges.append({"introduced": start})
            start = ev["introduced"]
        for end in ("fixed", "last_affected"):
            if end in ev:
                ranges.append({"introduced": start or "0", end: ev[end]})
                start = None
    if start is not None:
        ranges.append({"introduced": start})
    return ranges


def parse_advisory(doc: Mapping[str, Any], package: str) -> dict[str, Any] | None:
    """One advisory YAML (old `affects:` or OSV `affected:` schema) -> a snapshot record, or None."""
    doc = doc.get("vulnerability", doc)
    if doc.get("withdrawn"):
        return None
    ranges: list[dict[str, str]] = []
    if "affected" in doc:
        for aff in doc["affected"] or []:
            if canonicalize_name(str(aff.get("package", {}).get("name", package))) != package:
                continue
            for rng in aff.get("ranges") or []:
                if str(rng.get("type")) in ("ECOSYSTEM", "3"):
                    ranges += _events_to_ranges(rng.get("events") or [])
    else:  # the early PYSEC schema: affects.ranges with introduced/fixed on the range itself
        for rng in (doc.get("affects") or {}).get("ranges") or []:
            if rng.get("type") == "ECOSYSTEM":
                events = [{"introduced": str(rng.get("introduced", "0"))}]
                events += [{k: str(rng[k])} for k in ("fixed", "last_affected") if k in rng]
                ranges += _events_to_ranges(events)
    summary = str(doc.get("summary") or "").strip()
    if not summary or summary.lower().startswith("vulnerability in "):
        details = " ".join(str(doc.get("details") or "").split())
        summary = details.split(". ")[0]
    return {
        "id": str(doc["id"]),
        "aliases": [str(a) for a in doc.get("aliases") or []],
        "affected": ranges,
        "summary": summary[:140],
        "modified": str(doc.get("modified", ""))[:10],
    }


def refresh_snapshot(
    db_dir: Path, installed: Mapping[str, str], old: Mapping[str, Any] | None, today: dt.date, source: str
) -> dict[str, Any]:
    import yaml  # a dev dependency; only the refresh needs it

    vulns = db_dir / "vulns"
    if not vulns.is_dir():
        raise FileNotFoundError(f"{vulns} not found: pass a checkout of github.com/pypa/advisory-database")
    dirs: dict[str, Path] = {canonicalize_name(p.name): p for p in vulns.iterdir() if p.is_dir()}
    packages: dict[str, Any] = {}
    for name, version in sorted(installed.items()):
        records = []
        for file in sorted(dirs[name].glob("*.yaml")) if name in dirs else []:
            rec = parse_advisory(yaml.safe_load(file.read_text(encoding="utf-8")), name)
            if rec is not None:
                rec["source"] = f"vulns/{file.parent.name}/{file.name}"
                records.append(rec)
        # PYSEC-0000-* are drafts awaiting an id; keep one only if no numbered record has its CVE/GHSA.
        numbered = {
            i for r in records if not r["id"].startswith("PYSEC-0000-") for i in (r["id"], *r["aliases"])
        }
        records = [
            r for r in records if not r["id"].startswith("PYSEC-0000-") or not numbered & set(r["aliases"])
        ]
        packages[name] = {"version": version, "advisories": sorted(records, key=lambda r: r["id"])}
    modified = [a["modified"] for p in packages.values() for a in p["advisories"] if a["modified"]]
    return {
        "format": 1,
        "snapshot_date": today.isoformat(),
        "source": source,
        "newest_record_modified": max(modified, default=""),
        "refresh": (old or {}).get("refresh", REFRESH_HINT),
        "accepted": list((old or {}).get("accepted", [])),
        "packages": packages,
    }


def dump_snapshot(snapshot: Mapping[str, Any]) -> str:
    """JSON with one advisory per line, so a refresh diffs advisory by advisory."""
    head = {k: v for k, v in snapshot.items() if k != "packages"}
    lines = ["{"]
    lines += [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append(' "packages": {')
    items = list(snapshot["packages"].items())
    for i, (name, entry) in enumerate(items):
        advs = entry["advisories"]
        tail = "," if i < len(items) - 1 else ""
        if not advs:
            lines.append(
                f'  {json.dumps(name)}: {{"version": {json.dumps(entry["version"])}, "advisories": []}}{tail}'
            )
            continue
        lines.append(f'  {json.dumps(name)}: {{"version": {json.dumps(entry["version"])}, "advisories": [')
        lines += [
            f"   {json.dumps(a, ensure_ascii=False)}" + ("," if j < len(advs) - 1 else "")
            for j, a in enumerate(advs)
        ]
        lines.append(f"  ]}}{tail}")
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


# ---- command line ---------------------------------------------------------------------------


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_report(
    report: Report, snapshot: Mapping[str, Any], path: Path, today: dt.date, only: str = ""
) -> None:
    taken = dt.date.fromisoformat(snapshot["snapshot_date"])
    age = (today - taken).days
    n_adv = sum(len(p["advisories"]) for p in snapshot["packages"].values())
    newest = snapshot.get("newest_record_modified", "?")
    print(
        f"audit: snapshot {_shown(path)} of {taken} ({age} days old; newest advisory record in it "
        f"modified {newest}): {len(snapshot['packages'])} packages, {n_adv} advisories"
    )
    if age > STALE_AFTER_DAYS:
        print(
            f"audit: warning: the snapshot is {age} days old, newer advisories are not in it; {REFRESH_HINT}"
        )
    print(
        f"audit: {report.checked} installed distributions checked against it{only} ({PROJECT} itself skipped)"
    )
    if report.drift:
        listed = ", ".join(f"{n} {v} (snapshot: {s})" for n, v, s in report.drift[:8])
        more = f" and {len(report.drift) - 8} more" if len(report.drift) > 8 else ""
        print(
            f"audit: note: {len(report.drift)} installed at another version than snapshotted: {listed}{more}"
        )
    for f in report.accepted:
        print(f"ACCEPTED {f.line()} -- {f.accepted_reason}")
    for f in report.findings:
        print(f"VULNERABLE {f.line()}")
    for name, version in report.unparseable:
        print(f"UNCHECKED {name} {version}: not a PEP 440 version, cannot compare with the advisory ranges")
    for name, version in report.missing:
        print(f"MISSING {name} {version}: installed but not in the snapshot, so nothing checked it")
    if report.missing:
        print(f"audit: {REFRESH_HINT}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imd.audit",
        description="Known-vulnerability audit of the installed Python distributions.",
    )
    parser.add_argument("--offline", action="store_true", help="skip pip-audit; check the snapshot only")
    parser.add_argument(
        "--snapshot", type=Path, default=SNAPSHOT_PATH, help="snapshot file (default: %(default)s)"
    )
    parser.add_argument(
        "--refresh", type=Path, metavar="DB_DIR", help="rebuild the snapshot from this checkout"
    )
    parser.add_argument("--source", default="", help="with --refresh: where the checkout came from (commit)")
    parser.add_argument("--pip-audit-timeout", type=float, default=180.0, metavar="S")
    args = parser.parse_args(argv)
    today = dt.datetime.now(dt.UTC).date()
    installed = installed_distributions()

    if args.refresh:
        old = load_snapshot(args.snapshot) if args.snapshot.exists() else None
        source = f"PyPA advisory database, checkout {args.refresh}" + (
            f" at {args.source}" if args.source else ""
        )
        new = refresh_snapshot(args.refresh, installed, old, today, source)
        args.snapshot.write_text(dump_snapshot(new), encoding="utf-8")
        n_adv = sum(len(p["advisories"]) for p in new["packages"].values())
        print(f"audit: wrote {args.snapshot}: {len(new['packages'])} packages, {n_adv} advisories")
        return 0

    snapshot = load_snapshot(args.snapshot)
    if not args.offline:
        probe = ("pip", installed["pip"]) if "pip" in installed else None
        pip = run_pip_audit(args.pip_audit_timeout, probe)
        if pip.reachable:
            print(f"audit: pip-audit reached its advisory service: {len(pip.audited)} packages audited")
            reasons = _accepted_reasons(snapshot)
            live = [_accept(f, reasons) for f in pip.findings]
            report = Report(
                findings=[f for f in live if not f.accepted_reason],
                accepted=[f for f in live if f.accepted_reason],
            )
            for f in report.accepted:
                print(f"ACCEPTED {f.line()} -- {f.accepted_reason}")
            for f in report.findings:
                print(f"VULNERABLE {f.line()}")
            skipped = {n: v for n, v in installed.items() if n not in pip.audited}
            if skipped:
                # What pip-audit could not look up is still checked, against the snapshot.
                print(f"audit: pip-audit skipped {len(skipped)}: {', '.join(sorted(skipped))}")
                rest = check_snapshot(snapshot, skipped)
                _print_report(rest, snapshot, args.snapshot, today, only=" (those pip-audit skipped)")
                report.findings += rest.findings
                report.missing, report.unparseable = rest.missing, rest.unparseable
            return _verdict(report)
        print(f"audit: pip-audit could not reach its advisory service ({pip.reason}); checking the snapshot")
    report = check_snapshot(snapshot, installed)
    _print_report(report, snapshot, args.snapshot, today)
    return _verdict(report)


def _verdict(report: Report) -> int:
    problems = len(report.findings) + len(report.missing) + len(report.unparseable)
    if problems:
        print(
            f"audit: FAILED: {len(report.findings)} vulnerable, {len(report.missing)} not in the snapshot, "
            f"{len(report.unparseable)} unchecked"
        )
        return 1
    print(f"audit: passed ({len(report.accepted)} accepted risks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
