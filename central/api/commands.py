"""Commands to collectors (read now, scan, report, reload config) over MQTT, and CSV imports."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from central.api.deps import SessionDep, StateDep, require_roles
from central.auth import Principal
from central.models import AuditLog, Collector, CommandRecord, utcnow
from protocols.messages import Command, CommandName

router = APIRouter(prefix="/api", tags=["collectors"])
Worker = Annotated[Principal, Depends(require_roles("admin", "staff", "technician"))]


class CommandRequest(BaseModel):
    command: CommandName
    args: dict[str, Any] = Field(default_factory=dict)


def command_dict(c: CommandRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "collector": c.collector_id,
        "command": c.command,
        "args": json.loads(c.args or "{}"),
        "issued_at": c.issued_at,
        "issued_by": c.issued_by,
        "finished_at": c.finished_at,
        "ok": c.ok,
        "result": json.loads(c.result) if c.result else None,
        "error": c.error,
    }


@router.post("/collectors/{collector_id}/commands", status_code=status.HTTP_202_ACCEPTED)
async def send_command(
    *, who: Worker, state: StateDep, session: SessionDep, collector_id: str, body: CommandRequest
) -> dict[str, Any]:
    """Queue a command for a collector; its result arrives on ``.../cmd/result`` and shows up here."""
    if await session.get(Collector, collector_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no collector {collector_id}")
    if state.ingest is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="central runs without a broker")
    now = utcnow()
    command = Command(id=uuid.uuid4().hex, command=body.command, args=body.args, issued_at=now)
    record = CommandRecord(
        id=command.id,
        collector_id=collector_id,
        command=command.command.value,
        args=json.dumps(body.args, default=str),
        issued_at=now,
        issued_by=who.username,
    )
    session.add(record)
    session.add(
        AuditLog(
            at=now,
            actor=who.username,
            action="collector.command",
            entity="collector",
            entity_id=collector_id,
            detail=json.dumps({"command": command.command.value, "id": command.id}),
        )
    )
    await session.commit()
    try:
        state.ingest.publish_command(command, collector_id)
    except RuntimeError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"command not sent: {exc}") from exc
    return command_dict(record)


@router.get("/collectors/{collector_id}/commands")
async def list_commands(
    *, who: Worker, session: SessionDep, collector_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(CommandRecord)
        .where(CommandRecord.collector_id == collector_id)
        .order_by(CommandRecord.issued_at.desc())
        .limit(limit)
    )
    return [command_dict(c) for c in rows.scalars()]


ImportWorker = Annotated[Principal, Depends(require_roles("admin", "staff"))]
IMPORT_KINDS = ("apartments", "meters", "tenancies")


@router.post("/properties/{property_id}/imports/{kind}", tags=["imports"])
async def import_csv(
    *,
    who: ImportWorker,
    state: StateDep,
    request: Request,
    property_id: str,
    kind: str,
    dry_run: bool = False,
    move_out_is_last_day: bool = False,
) -> JSONResponse:
    """Import an apartment register, a meter list or a tenancy register (CSV body). All rows valid or
    nothing is imported: the answer lists accepted rows and, for each refused row, the reason (422
    when any is refused). ``move_out_is_last_day`` (tenancies): the file gives the contract's last day."""
    from central.csv_import import (
        CsvImportError,
        csv_text,
        import_apartments_csv,
        import_meters_csv,
        import_tenancies_csv,
    )

    if kind not in IMPORT_KINDS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"kind: one of {', '.join(IMPORT_KINDS)}")
    body = await request.body()
    if len(body) > 10 * 1024 * 1024:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail="file larger than 10 MiB")
    text = csv_text(body)
    try:
        if kind == "tenancies":
            outcome = await import_tenancies_csv(
                state.db, property_id, text, move_out_is_last_day=move_out_is_last_day,
                dry_run=dry_run, actor=who.username,
            )  # fmt: skip
        else:
            importer = import_apartments_csv if kind == "apartments" else import_meters_csv
            outcome = await importer(
                state.db, property_id, text, state.keybox, dry_run=dry_run, actor=who.username
            )
    except CsvImportError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    code = 422 if outcome.refused else 200
    return JSONResponse(jsonable_encoder(outcome.as_dict()), status_code=code)
