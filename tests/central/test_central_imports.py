"""CSV imports: row-by-row validation with reasons, nothing half-imported, keys encrypted."""

from __future__ import annotations

import pytest
from central_testdata import site_export
from sqlalchemy import func, select

from central.csv_import import CsvImportError, import_apartments_csv, import_meters_csv
from central.db import Database
from central.keys import MeterKeyBox
from central.models import Apartment, Meter
from central.site_import import import_site

APARTMENTS = """Objektsnummer;Lägenhetsnummer;Hus;Yta;Adress;Hyresgäst
OBJ-3001;3001;A;58,5;Storgatan 1;K-100
OBJ-3002;3002;A;71;Storgatan 1;
"""


async def apartments(db: Database) -> int:
    async with db.sessions() as session:
        return (await session.execute(select(func.count()).select_from(Apartment))).scalar_one()


async def test_apartment_register_in_swedish_csv(db: Database, keybox: MeterKeyBox) -> None:
    await import_site(db, site_export(), keybox)
    outcome = await import_apartments_csv(db, "BRF-TEST-1", APARTMENTS, keybox)
    assert outcome.refused == []
    assert outcome.imported
    assert outcome.summary["apartments_created"] == 2
    async with db.sessions() as session:
        row = (
            await session.execute(select(Apartment).where(Apartment.object_number == "OBJ-3001"))
        ).scalar_one()
    assert str(row.area_m2) == "58.5"
    assert row.tenant_ref == "K-100"
    again = await import_apartments_csv(db, "BRF-TEST-1", APARTMENTS, keybox)
    assert again.summary["apartments_created"] == 0


async def test_one_bad_row_refuses_the_whole_file(db: Database, keybox: MeterKeyBox) -> None:
    await import_site(db, site_export(), keybox)
    before = await apartments(db)
    bad = APARTMENTS + "OBJ-3003;3003;A;-4;Storgatan 3;\nOBJ-3001;3001;A;60;;\nOBJ-3004;3004;Z;50;;\n"
    outcome = await import_apartments_csv(db, "BRF-TEST-1", bad, keybox)
    assert not outcome.imported
    assert outcome.accepted == [2, 3, 6]
    reasons = {r["row"]: r["reason"] for r in outcome.refused}
    assert "area_m2" in reasons[4]
    assert "twice" in reasons[5]
    assert await apartments(db) == before
    with pytest.raises(CsvImportError, match="area_m2"):
        await import_apartments_csv(db, "BRF-TEST-1", "objektsnummer;lgh\nO-1;1\n", keybox)


async def test_meter_list_with_keys(db: Database, keybox: MeterKeyBox) -> None:
    await import_site(db, site_export(), keybox)
    key = "0F0E0D0C0B0A09080706050403020100"
    text = (
        "id,manufacturer,version,device_type,medium,apartment,primary_address,key\n"
        f"44556677,EFE,1,0x07,cold_water,OBJ-1002,9,{key}\n"
        "44556678,EFE,1,7,cold_water,OBJ-1002,10,\n"
    )
    outcome = await import_meters_csv(db, "BRF-TEST-1", text, keybox)
    assert outcome.imported
    assert outcome.summary["meters_created"] == 2
    assert outcome.summary["keys_set"] == 1
    async with db.sessions() as session:
        meter = (await session.execute(select(Meter).where(Meter.serial == "44556677"))).scalar_one()
    assert meter.device_type == 7
    assert keybox.decrypt(meter.key_encrypted or b"") == bytes.fromhex(key)

    bad_key = "XYZ" + key[3:]
    refused = await import_meters_csv(
        db,
        "BRF-TEST-1",
        f"id;manufacturer;medium;apartment;key\n55667788;EFE;heat;OBJ-9999;\n"
        f"55667789;EFE;heat;OBJ-1001;{bad_key}\n",
        keybox,
    )
    assert not refused.imported
    assert "OBJ-9999" in refused.refused[0]["reason"]
    assert "key" in refused.refused[1]["reason"]
    assert bad_key not in str(refused.as_dict())
