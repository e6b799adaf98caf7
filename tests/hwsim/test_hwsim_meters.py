"""Simulated meters: their frames decode with ``protocols.mbus`` to exactly the values they meant,
the same seed gives the same property and readings, and consumption behaves like households do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hwsim import climate
from hwsim.building import build_building
from hwsim.consumption import make_household
from hwsim.meters import FLAG_BITS, Field, Meter

from protocols.mbus.application import FUNCTIONS, decode_long_frame
from protocols.mbus.link import LongFrame, parse_frame
from protocols.site import Medium, SiteExport

MOMENTS = (
    datetime(2025, 1, 15, 7, 30, tzinfo=UTC),  # a cold winter morning
    datetime(2025, 7, 10, 13, 5, 17, tzinfo=UTC),  # summer holiday
    datetime(2026, 3, 1, 0, 0, tzinfo=UTC),  # a set day
)


@pytest.fixture(scope="module")
def building():
    return build_building(seed=7, apartments=4, room_sensors=True)


def _dif_meaning(field: Field) -> tuple[int, int, int, str]:
    """storage, tariff, subunit and function as EN 13757-3 packs them in DIF and DIFEs."""
    storage = (field.dif >> 6) & 1
    tariff = subunit = 0
    for i, dife in enumerate(field.dife):
        storage |= (dife & 0x0F) << (1 + 4 * i)
        tariff |= ((dife >> 4) & 0x03) << (2 * i)
        subunit |= ((dife >> 6) & 0x01) << i
    return storage, tariff, subunit, FUNCTIONS[(field.dif >> 4) & 0x03]


def _check_round_trip(meter: Meter, at: datetime) -> int:
    checked = 0
    for telegram in range(len(meter.layout)):
        raw = meter.rsp_ud(at, meter.primary_address, telegram, access_number=telegram + 10)
        frame = parse_frame(raw)
        assert isinstance(frame, LongFrame)
        decoded = decode_long_frame(raw)
        ident = meter.identity(at)
        assert decoded.id == f"{ident.ident:08d}"
        assert decoded.manufacturer == ident.manufacturer
        assert decoded.version == ident.version
        assert decoded.device_type == ident.device_type
        assert decoded.access_number == telegram + 10
        assert decoded.more_records_follow == (telegram + 1 < len(meter.layout))
        records = meter.records(at, telegram)
        assert len(decoded.records) == len(records), meter.model
        for (field, register), record in zip(records, decoded.records, strict=True):
            meant = field.meant(register)
            assert record.value == meant, f"{meter.model} {field.key}: {record.value!r} != {meant!r}"
            if field.unit:
                assert record.unit == field.unit, field.key
            assert (record.storage, record.tariff, record.subunit, record.function) == _dif_meaning(field)
            checked += 1
    return checked


@pytest.mark.parametrize("at", MOMENTS, ids=lambda m: m.date().isoformat())
def test_every_model_round_trips_exactly(building, at):
    kinds = {type(m).__name__ for m in building.meters}
    assert kinds == {
        "KamstrupMultical403",
        "KamstrupMultical603",
        "KamstrupMultical21",
        "DiehlHydrus",
        "AbbA44",
        "ElvacoCMa10",
    }
    checked = sum(_check_round_trip(m, at) for m in building.meters)
    assert checked > 4 * 50


def test_faulty_registers_round_trip_too(building):
    at = MOMENTS[0]
    faults = building.faults
    heat, hot, cold, elec = building.apartments[0].meters[:4]
    faults.inject(heat, "temperature_reversed", at - timedelta(hours=1))
    faults.inject(cold, "leak", at - timedelta(hours=10), flow_lh=20)
    faults.inject(hot, "backflow", at - timedelta(hours=5), flow_lh=4)
    faults.inject(elec, "wrong_clock", at - timedelta(hours=1), offset_hours=-48)
    try:
        for m in (heat, hot, cold, elec):
            _check_round_trip(m, at)
        values = heat.registers(at)
        assert values["flow_temperature"] < values["return_temperature"]
        assert values["temperature_difference"] < 0
        assert cold.registers(at)["flow"] >= 20
        assert hot.registers(at)["backflow"] == 20
        assert elec.registers(at)["datetime"] == climate.local(at).replace(tzinfo=None) - timedelta(hours=48)
    finally:
        for m in (heat, hot, cold, elec):
            faults.clear(m, None, at - timedelta(days=1))


def test_same_seed_same_building_and_bytes():
    a = build_building(seed=3, apartments=12)
    b = build_building(seed=3, apartments=12)
    c = build_building(seed=4, apartments=12)
    assert a.site == b.site
    assert a.site != c.site
    at = MOMENTS[1]
    # order of questions must not matter: ask b in reverse and at a later time first
    for m in reversed(b.meters):
        m.registers(at + timedelta(days=30))
    for ma, mb in zip(a.meters, b.meters, strict=True):
        assert ma.rsp_ud(at, 1, 0, 5) == mb.rsp_ud(at, 1, 0, 5)


def test_site_export_for_the_demo():
    sim = build_building(seed=1, apartments=12)
    site = SiteExport.model_validate_json(sim.site.model_dump_json())
    assert len(site.apartments) == 12
    assert len({a.number for a in site.apartments}) == 12
    assert site.apartments[0].number == "1001"
    for apartment in site.apartments:
        media = sorted(m.medium for m in site.meters if m.apartment == apartment.object_number)
        assert media == sorted([Medium.HEAT, Medium.HOT_WATER, Medium.COLD_WATER, Medium.ELECTRICITY])
    mains = [m for m in site.meters if m.apartment is None]
    assert len(mains) == 1
    assert mains[0].medium is Medium.HEAT
    assert [m.primary_address for m in site.meters] == list(range(1, 50))
    assert {m.bus for m in site.meters} == {"mbus0"}
    assert len({m.id for m in site.meters}) == 49
    for sm, meter in zip(site.meters, sim.meters, strict=True):
        assert sm.secondary_address == meter.secondary_address(MOMENTS[0])


def test_more_than_250_meters_spill_onto_a_second_bus():
    sim = build_building(seed=2, apartments=64, buildings=2)
    buses = sim.buses()
    assert sorted(buses) == ["mbus0", "mbus1"]
    assert len(buses["mbus0"]) == 250
    assert {m.primary_address for m in buses["mbus0"]} == set(range(1, 251))


def test_registers_never_run_backwards_and_follow_the_seasons():
    sim = build_building(seed=5, apartments=12)
    heat = [m for m in sim.meters if m.medium is Medium.HEAT and m.apartment]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    previous: dict[int, int] = {}
    for step in range(0, 24 * 400, 23):
        at = start + timedelta(hours=step, minutes=step % 60)
        for m in sim.meters[:8]:
            values = m.registers(at)
            energy_or_volume = values.get("energy", values.get("volume"))
            assert isinstance(energy_or_volume, int)
            assert energy_or_volume >= previous.get(m.ident, 0)
            previous[m.ident] = energy_or_volume

    def used(m: Meter, a: datetime, b: datetime) -> int:
        return int(m.registers(b)["energy"]) - int(m.registers(a)["energy"])

    january = sum(used(m, datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)) for m in heat)
    july = sum(used(m, datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 8, 1, tzinfo=UTC)) for m in heat)
    assert january > 10 * max(1, july)
    # a Swedish apartment uses some 60-150 kWh/m² a year for heat
    year = sum(used(m, datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)) for m in heat)
    area = sum(float(a.area_m2) for a in sim.site.apartments)
    assert 50 < year / area < 160


def test_water_follows_the_day_and_households():
    household = make_household(seed=1, key=99, area_m2=74.0)
    assert household.occupants >= 1
    empty = make_household(seed=1, key=98, area_m2=74.0, vacant=True)
    day = climate.day_index(datetime(2025, 3, 12).date())  # an ordinary Wednesday
    assert empty.hot_water_litres(day) == 0
    assert empty.electricity_kwh(day) > 0  # the fridge stays on
    sim = build_building(seed=11, apartments=12)
    cold = [m for m in sim.meters if m.medium is Medium.COLD_WATER]
    night = [m._series.rate(datetime(2025, 3, 12, 2, 30, tzinfo=UTC)) for m in cold]
    morning = [m._series.rate(datetime(2025, 3, 12, 6, 30, tzinfo=UTC)) for m in cold]
    assert sum(morning) > 5 * sum(night)
    vacant = [a for a in sim.apartments if a.household.vacant(day)]
    assert vacant, "a 12-apartment property has a vacant apartment"


def test_flags_and_status_from_faults():
    sim = build_building(seed=1, apartments=1)
    at = MOMENTS[0]
    cold = next(m for m in sim.meters if m.medium is Medium.COLD_WATER)
    sim.faults.inject(cold, "low_battery", at - timedelta(days=2), days=30)
    sim.faults.inject(cold, "tamper", at - timedelta(hours=1))
    values = cold.registers(at)
    assert values["battery_days"] == 28
    assert values["error_flags"] == FLAG_BITS["water"]["low_battery"] | FLAG_BITS["water"]["tamper"]
    assert values["status"] & 0x04
    decoded = decode_long_frame(cold.rsp_ud(at, 1))
    assert decoded.status & 0x04
    assert Decimal(28 * 86400) in [r.value for r in decoded.records]
