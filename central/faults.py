"""The fault workflow: one unresolved fault per (meter or collector, rule); open -> acknowledged -> resolved.

A check that finds its condition again updates the existing fault (count, last seen, evidence)
instead of opening another; when the condition clears the fault resolves itself, with the time.
Staff acknowledge, assign, comment and resolve by hand; every step lands in the fault's history
and in the audit log.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from central.models import AuditLog, Fault, FaultEvent

OPEN_STATES = ("open", "acknowledged")
SEVERITIES = ("info", "warning", "critical")
# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open",), "acknowledged"),
    "resolve": (("open", "acknowledged"), "resolved"),
    "reopen": (("resolved",), "open"),
}


class FaultTransitionError(ValueError):
    pass


async def unresolved(
    session: AsyncSession, rule: str, *, meter_id: int | None = None, collector_id: str | None = None
) -> Fault | None:
    query = select(Fault).where(Fault.rule == rule, Fault.state.in_(OPEN_STATES))
    query = query.where(Fault.meter_id.is_(None) if meter_id is None else Fault.meter_id == meter_id)
    query = query.where(
        Fault.collector_id.is_(None) if collector_id is None else Fault.collector_id == collector_id
    )
    return (await session.execute(query.order_by(Fault.id).limit(1))).scalar_one_or_none()


async def raise_fault(
    session: AsyncSession,
    rule: str,
    *,
    at: datetime,
    severity: str,
    message: str,
    evidence: dict[str, Any] | None = None,
    meter_id: int | None = None,
    collector_id: str | None = None,
    blocks_billing: bool = False,
    current: Fault | bool | None = True,
) -> tuple[Fault, bool]:
    """Open a fault or count a repeat of the unresolved one; returns (fault, newly opened).

    ``current`` is the unresolved fault when the caller already looked it up (None: there is none);
    the default ``True`` looks it up here.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity: one of {', '.join(SEVERITIES)}")
    evidence_json = json.dumps(evidence or {}, default=str, sort_keys=True)
    fault = (
        await unresolved(session, rule, meter_id=meter_id, collector_id=collector_id)
        if current is True
        else current or None
    )
    if fault is not None:
        fault.count += 1
        fault.last_seen_at = max(fault.last_seen_at, at)
        fault.severity = severity
        fault.message = message
        fault.evidence = evidence_json
        fault.blocks_billing = fault.blocks_billing or blocks_billing
        return fault, False
    fault = Fault(
        meter_id=meter_id,
        collector_id=collector_id,
        rule=rule,
        state="open",
        severity=severity,
        message=message,
        evidence=evidence_json,
        first_seen_at=at,
        last_seen_at=at,
        count=1,
        blocks_billing=blocks_billing,
    )
    session.add(fault)
    await session.flush()
    session.add(FaultEvent(fault_id=fault.id, at=at, actor=None, kind="opened", text=message))
    return fault, True


async def clear_fault(
    session: AsyncSession,
    rule: str,
    *,
    at: datetime,
    meter_id: int | None = None,
    collector_id: str | None = None,
    current: Fault | bool | None = True,
) -> Fault | None:
    """The check no longer sees the condition: resolve the unresolved fault, if any."""
    fault = (
        await unresolved(session, rule, meter_id=meter_id, collector_id=collector_id)
        if current is True
        else current or None
    )
    if fault is None:
        return None
    fault.state = "resolved"
    fault.resolved_at = at
    session.add(
        FaultEvent(fault_id=fault.id, at=at, actor=None, kind="auto_resolved", text="condition cleared")
    )
    return fault


def _audit(
    session: AsyncSession, fault: Fault, *, actor: str, action: str, at: datetime, detail: dict[str, Any]
) -> None:
    session.add(
        AuditLog(
            at=at,
            actor=actor,
            action=f"fault.{action}",
            entity="fault",
            entity_id=str(fault.id),
            detail=json.dumps(detail, default=str),
        )
    )


async def transition(
    session: AsyncSession, fault: Fault, action: str, *, actor: str, at: datetime, text: str = ""
) -> Fault:
    if action not in TRANSITIONS:
        raise FaultTransitionError(f"action: one of {', '.join(TRANSITIONS)}")
    sources, target = TRANSITIONS[action]
    if fault.state not in sources:
        raise FaultTransitionError(f"a fault in state {fault.state} cannot be {target} ({action})")
    before = fault.state
    fault.state = target
    if target == "acknowledged":
        fault.acknowledged_at = at
    elif target == "resolved":
        fault.resolved_at = at
    else:
        fault.resolved_at = None
    session.add(FaultEvent(fault_id=fault.id, at=at, actor=actor, kind=target, text=text[:2000]))
    _audit(session, fault, actor=actor, action=action, at=at, detail={"from": before, "to": target})
    return fault


async def comment(session: AsyncSession, fault: Fault, *, actor: str, at: datetime, text: str) -> None:
    if not text.strip():
        raise FaultTransitionError("text: a comment needs text")
    session.add(FaultEvent(fault_id=fault.id, at=at, actor=actor, kind="comment", text=text[:2000]))


async def assign(
    session: AsyncSession, fault: Fault, *, actor: str, at: datetime, assignee: str | None
) -> None:
    fault.assignee = assignee
    session.add(FaultEvent(fault_id=fault.id, at=at, actor=actor, kind="assigned", text=assignee or ""))
    _audit(session, fault, actor=actor, action="assign", at=at, detail={"assignee": assignee})
