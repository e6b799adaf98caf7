"""The meter list pages by key: id order, offset or keyset (``after``), the total counted with the
same filters and scope as the rows."""

from __future__ import annotations

from central_testdata import OTHER_PROPERTY_METERS, site_export
from sqlalchemy import select

from central.auth import Principal
from central.db import Database
from central.keys import MeterKeyBox
from central.models import Property
from central.queries import list_meters
from central.site_import import import_site


async def test_pages_by_offset_and_by_key_agree(db: Database, keybox: MeterKeyBox) -> None:
    await import_site(db, site_export("BRF-A"), keybox)
    await import_site(db, site_export("BRF-B", meters=OTHER_PROPERTY_METERS), keybox)
    admin = Principal(0, "admin", "admin", frozenset(), None)
    async with db.sessions() as session:
        everything, total = await list_meters(session, admin, limit=1000)
        refs = [m["ref"] for m in everything]
        assert refs == sorted(refs)
        assert total == len(everything) > 3
        by_offset = [m["ref"] for m in (await list_meters(session, admin, limit=2, offset=2))[0]]
        by_key = [m["ref"] for m in (await list_meters(session, admin, limit=2, after=refs[1]))[0]]
        assert by_offset == by_key == refs[2:4]
        assert (await list_meters(session, admin, after=refs[-1]))[0] == []

        b = (await session.execute(select(Property.id).where(Property.key == "BRF-B"))).scalar_one()
        board = Principal(1, "board-b", "board", frozenset({b}), None)
        seen, seen_total = await list_meters(session, board, limit=1)
        assert seen_total == len(OTHER_PROPERTY_METERS)
        assert [m["property"] for m in seen] == ["BRF-B"]
        heat, heat_total = await list_meters(session, admin, property_key="BRF-A", medium="heat")
        assert heat_total == len(heat)
        assert {(m["property"], m["medium"]) for m in heat} == {("BRF-A", "heat")}
        nobody = Principal(2, "x", "technician-without-role", frozenset(), None)
        assert await list_meters(session, nobody) == ([], 0)
