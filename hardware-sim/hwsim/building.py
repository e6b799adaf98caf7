"""A simulated property: buildings, apartments, households and their meters, plus the site export."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from hwsim import climate
from hwsim.consumption import Household, make_household
from hwsim.faults import FaultBook
from hwsim.meters import (
    AbbA44,
    DiehlHydrus,
    ElvacoCMa10,
    KamstrupMultical21,
    KamstrupMultical403,
    KamstrupMultical603,
    Meter,
)
from hwsim.radio import RADIO_PROFILES, RadioMeter, make_radio_meters, radio_key
from protocols.site import SiteApartment, SiteBuilding, SiteExport, SiteMeter, SiteProperty

MAX_PER_BUS = 250
_ASCII = str.maketrans("ÅÄÖåäö", "AAOaao")

# Street names and property designations (fastighetsbeteckning) to pick from by seed.
_STREETS = ("Kvarngatan", "Björkvägen", "Sjöviksgatan", "Tallstigen", "Storgatan", "Ekbacken", "Lärkgatan")
_BLOCKS = ("Kvarnen", "Björken", "Sjöviken", "Tallen", "Läraren", "Ekorren", "Lärkan")
_CITIES = ("Uppsala", "Västerås", "Örebro", "Stockholm", "Linköping", "Gävle", "Sundsvall")
# Typical Swedish rental apartment sizes: 1 rok .. 4 rok
_AREAS = (
    Decimal("38.5"),
    Decimal("56.0"),
    Decimal("61.5"),
    Decimal("74.0"),
    Decimal("82.5"),
    Decimal("96.0"),
)


@dataclass
class SimApartment:
    apartment: SiteApartment
    household: Household
    meters: list[Meter] = field(default_factory=list)


@dataclass
class SimBuilding:
    """What :func:`build_building` returns: the site export and the live meter models."""

    seed: int
    site: SiteExport
    meters: list[Meter]
    apartments: list[SimApartment]
    faults: FaultBook
    # radio (hwsim/radio.py): the stick type and name, our radio meters and the neighbours' ones
    stick_type: str | None = None
    radio_stick: str | None = None
    radio: list[RadioMeter] = field(default_factory=list)
    neighbours: list[RadioMeter] = field(default_factory=list)

    def buses(self) -> dict[str, list[Meter]]:
        """Wired buses only; radio meters are heard by the stick (see ``radio``)."""
        out: dict[str, list[Meter]] = {}
        by_id = {m.ident: m for m in self.meters}
        for sm in self.site.meters:
            if sm.link == "mbus":
                out.setdefault(sm.bus, []).append(by_id[int(sm.id)])
        return out

    def meter(self, ident: int | str) -> Meter:
        want = int(ident)
        for m in self.meters:
            if m.ident == want:
                return m
        raise KeyError(f"no meter {ident}")

    def describe(self) -> list[str]:
        def where(sm: SiteMeter) -> str:
            return f"addr {sm.primary_address or 0:3d}" if sm.link == "mbus" else "radio   "

        return [
            f"{sm.bus:6} {where(sm)}  {sm.id} {sm.manufacturer} "
            f"v{sm.version:02X} type {sm.device_type:02X}  {sm.medium.value:<16} "
            f"apt {sm.apartment or '-':>10}  {sm.model}"
            for sm in self.site.meters
        ]


def _ident(seed: int, n: int, prefix: int, used: set[int]) -> int:
    """8-digit identification numbers in the manufacturer's typical range, unique in the site."""
    salt = 0
    while True:
        value = prefix * 10_000_000 + int(climate.unit(seed, n, 300, salt) * 9_999_999)
        if value not in used:
            used.add(value)
            return value
        salt += 1


_PREFIX = {
    "heat": 6,
    "main_heat": 6,
    "hot_water": 4,
    "cold_water": 7,
    "electricity": 3,
    "room_temperature": 2,
}


def build_building(
    seed: int = 1,
    apartments: int = 12,
    *,
    buildings: int = 1,
    room_sensors: bool = False,
    main_meter: bool = True,
    bus_prefix: str = "mbus",
    property_id: str | None = None,
    radio: str | None = None,
    radio_stick: str = "radio0",
    neighbours: int = 0,
    radio_interval_s: float | None = None,
    taken: set[int] | None = None,
) -> SimBuilding:
    """A deterministic property with ``apartments`` apartments over ``buildings`` buildings.

    Every apartment has heat, hot water, cold water and electricity meters (and a room temperature
    sensor when ``room_sensors``); each building may have a main heat meter. Primary addresses run
    1..250 per bus; more meters spill onto the next bus (``mbus1``...). Same seed, same property.

    ``radio`` (a stick type, ``"imst"`` or ``"amber"``) makes the water meters radio meters heard
    by the stick ``radio_stick`` (``link="wmbus"`` in the export, with their AES keys), and adds
    ``neighbours`` radio meters of the house next door that the stick hears but that are not ours.

    ``taken``: identification numbers already used elsewhere (a fleet's other properties), to be
    avoided and added to: a meter's number and manufacturer are unique in the world, and central
    keeps one meter row per pair.
    """
    if apartments < 1 or buildings < 1:
        raise ValueError("need at least one apartment and one building")
    pick = int(climate.unit(seed, 200) * len(_STREETS))
    block = _BLOCKS[pick]
    number = 1 + int(climate.unit(seed, 201) * 20)
    city = _CITIES[int(climate.unit(seed, 202) * len(_CITIES))]
    prop = SiteProperty(
        id=property_id or f"{block.upper()}-{number}".translate(_ASCII),
        name=f"{block} {number}",
        address=f"{_STREETS[pick]} {number}",
        city=city,
    )
    site_buildings = [
        SiteBuilding(
            id=f"B{b + 1}", name=f"Hus {chr(ord('A') + b)}", address=f"{_STREETS[pick]} {number + 2 * b}"
        )
        for b in range(buildings)
    ]
    faults = FaultBook()
    used: set[int] = set() if taken is None else taken
    sim_apartments: list[SimApartment] = []
    site_meters: list[SiteMeter] = []
    meters: list[Meter] = []
    vacant_index = int(climate.unit(seed, 203) * apartments) if apartments >= 8 else -1
    per_building = -(-apartments // buildings)
    per_floor = 3 if apartments <= 12 else 4
    address = 0
    n = 0
    wired = 0
    radio_keys: dict[int, bytes] = {}

    def add(meter: Meter, apartment: str | None) -> None:
        nonlocal address, wired
        meter.faults = faults
        meters.append(meter)
        # radio meters (hwsim/radio.py) take no primary address and no place on a wired bus
        if radio is not None and type(meter) in RADIO_PROFILES:
            key = radio_keys[meter.ident] = radio_key(seed, meter.ident)
            site_meters.append(
                SiteMeter(
                    id=f"{meter.ident:08d}",
                    manufacturer=meter.manufacturer,
                    version=meter.version,
                    device_type=meter.device_type,
                    medium=meter.medium,
                    apartment=apartment,
                    model=meter.model.replace(" (M-Bus)", "") + " (wM-Bus)",
                    link="wmbus",
                    bus=radio_stick,
                    key=key.hex().upper(),
                )
            )
            return
        wired += 1
        meter.primary_address = (wired - 1) % MAX_PER_BUS + 1
        bus = f"{bus_prefix}{(wired - 1) // MAX_PER_BUS}"
        site_meters.append(
            SiteMeter(
                id=f"{meter.ident:08d}",
                manufacturer=meter.manufacturer,
                version=meter.version,
                device_type=meter.device_type,
                medium=meter.medium,
                apartment=apartment,
                model=meter.model,
                bus=bus,
                primary_address=meter.primary_address,
            )
        )

    def next_address() -> int:
        nonlocal address
        address = address % MAX_PER_BUS + 1
        return address

    for a in range(apartments):
        b = a // per_building
        local_index = a - b * per_building
        floor, door = divmod(local_index, per_floor)
        number_text = f"{10 + floor}{door + 1:02d}"
        object_number = f"{number:02d}{b + 1}-{number_text}"
        area = _AREAS[int(climate.unit(seed, a, 204) * len(_AREAS))]
        key = climate.mix(seed, 400, a)
        household = make_household(seed, key, float(area), vacant=(a == vacant_index))
        apt = SiteApartment(
            object_number=object_number,
            number=number_text,
            building=site_buildings[b].id,
            area_m2=area,
            address=f"{site_buildings[b].address}, lgh {number_text}",
        )
        sim = SimApartment(apt, household)
        hh = household

        def water_shape(day: int, hh: Household = hh) -> str:
            return "water_" + hh.day_shape(day)

        created: list[Meter] = [
            KamstrupMultical403(
                _ident(seed, n := n + 1, _PREFIX["heat"], used),
                next_address(),
                seed,
                heat_kwh=hh.heat_kwh,
                apartment=object_number,
            ),
            DiehlHydrus(
                _ident(seed, n := n + 1, _PREFIX["hot_water"], used),
                next_address(),
                seed,
                litres=hh.hot_water_litres,
                day_shape=water_shape,
                apartment=object_number,
            ),
            KamstrupMultical21(
                _ident(seed, n := n + 1, _PREFIX["cold_water"], used),
                next_address(),
                seed,
                litres=hh.cold_water_litres,
                day_shape=water_shape,
                apartment=object_number,
            ),
            AbbA44(
                _ident(seed, n := n + 1, _PREFIX["electricity"], used),
                next_address(),
                seed,
                household=hh,
                apartment=object_number,
            ),
        ]
        if room_sensors:
            created.append(
                ElvacoCMa10(
                    _ident(seed, n := n + 1, _PREFIX["room_temperature"], used),
                    next_address(),
                    seed,
                    household=hh,
                    apartment=object_number,
                )
            )
        for meter in created:
            add(meter, object_number)
            sim.meters.append(meter)
        sim_apartments.append(sim)

    if main_meter:
        for b in range(buildings):
            members = [s.household for s in sim_apartments if s.apartment.building == site_buildings[b].id]

            def building_heat(day: int, members: list[Household] = members) -> float:
                space = sum(h.heat_kwh(day) for h in members) * 1.12  # stairwells, distribution losses
                hot_water = sum(h.hot_water_litres(day) for h in members) * 0.058  # 50 K rise
                return space + hot_water + 6.0  # hot water circulation losses

            add(
                KamstrupMultical603(
                    _ident(seed, n := n + 1, _PREFIX["main_heat"], used),
                    next_address(),
                    seed,
                    heat_kwh=building_heat,
                ),
                None,
            )

    site = SiteExport(
        property=prop,
        buildings=site_buildings,
        apartments=[s.apartment for s in sim_apartments],
        meters=site_meters,
    )
    building = SimBuilding(seed=seed, site=site, meters=meters, apartments=sim_apartments, faults=faults)
    if radio is not None:
        building.stick_type, building.radio_stick = radio, radio_stick
        ours = [m for m in meters if m.ident in radio_keys]
        building.radio = make_radio_meters(ours, radio_keys, seed=seed, interval_s=radio_interval_s)
        building.neighbours = _neighbours(seed, neighbours, used, radio_interval_s)
    return building


def _neighbours(seed: int, count: int, used: set[int], interval_s: float | None) -> list[RadioMeter]:
    """Water meters of the house next door: heard through the wall, weaker, keys we do not have."""
    out: list[Meter] = []
    for i in range(count):
        hh = make_household(seed, climate.mix(seed, 900, i), 60.0)

        def shape(day: int, hh: Household = hh) -> str:
            return "water_" + hh.day_shape(day)

        kind = (KamstrupMultical21, DiehlHydrus)[i % 2]
        prefix = _PREFIX["cold_water"] if kind is KamstrupMultical21 else _PREFIX["hot_water"]
        litres = hh.cold_water_litres if kind is KamstrupMultical21 else hh.hot_water_litres
        out.append(kind(_ident(seed, 5000 + i, prefix, used), 0, seed, litres=litres, day_shape=shape))
    keys = {m.ident: radio_key(seed + 7919, m.ident) for m in out}
    return make_radio_meters(out, keys, seed=seed + 1, interval_s=interval_s, rssi_range=(-102, -86))
