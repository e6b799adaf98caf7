"""Simulated meters that answer like real products, record for record.

Each model is a table of records (DIF, VIF, extensions) in the order the imitated product sends
them, plus a function from simulated time to register values. Registers are integers in the
resolution of their record (``value * 10**exponent`` in the decoder's normalized unit), so what the
simulator means and what a decoder reads can be compared exactly.

Meters keep their clocks on Swedish standard time (CET) like most meters in the field.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

from hwsim import climate
from hwsim.consumption import T1_SHARE_WORKDAY, Household, Series
from protocols.mbus import encode
from protocols.mbus.link import rsp_ud
from protocols.mbus.manufacturers import manufacturer_code
from protocols.site import Medium

if TYPE_CHECKING:
    from hwsim.faults import FaultBook

Value = int | datetime | date


@dataclass(frozen=True, slots=True)
class Field:
    """One data record of a telegram: its header bytes and how to read its register."""

    key: str
    dif: int
    vif: int
    vife: bytes = b""
    dife: bytes = b""
    unit: str = ""  # the decoder's normalized unit (Wh, m3, W, m3/h, °C, K, s, V, A)
    exponent: int = 0  # register * 10**exponent is the value in ``unit``
    multiplier: int = 1  # for durations: hours -> seconds

    def meant(self, register: Value) -> Value | Decimal:
        """The value a correct decoder must report for this register."""
        if isinstance(register, int) and self.unit:
            return Decimal(register * self.multiplier).scaleb(self.exponent)
        return register


def _f(
    key: str,
    dif: int,
    vif: int,
    unit: str = "",
    exponent: int = 0,
    *,
    vife: bytes = b"",
    dife: bytes = b"",
    multiplier: int = 1,
) -> Field:
    return Field(key, dif, vif, vife, dife, unit, exponent, multiplier)


# -- record layouts: what each imitated product sends, in its order ------------------------------

# Kamstrup MULTICAL 403/603 (M-Bus module): the layout of the Kamstrup MULTICAL 601 capture in the
# libmbus corpus, trimmed to what a 403 sends; the info code goes in the standard error-flags record.
KAMSTRUP_HEAT: tuple[tuple[Field, ...], ...] = (
    (
        _f("fabrication_no", 0x0C, 0x78),
        _f("energy", 0x04, 0x06, "Wh", 3),
        _f("volume", 0x04, 0x14, "m3", -2),
        _f("on_time", 0x04, 0x22, "s", 0, multiplier=3600),
        _f("flow_temperature", 0x04, 0x59, "°C", -2),
        _f("return_temperature", 0x04, 0x5D, "°C", -2),
        _f("temperature_difference", 0x04, 0x61, "K", -2),
        _f("power", 0x04, 0x2D, "W", 2),
        _f("power_max", 0x14, 0x2D, "W", 2),
        _f("flow", 0x04, 0x3B, "m3/h", -3),
        _f("flow_max", 0x14, 0x3B, "m3/h", -3),
        _f("error_flags", 0x02, 0xFD, vife=b"\x17"),
        _f("datetime", 0x04, 0x6D),
        _f("energy_set_day", 0x44, 0x06, "Wh", 3),
        _f("volume_set_day", 0x44, 0x14, "m3", -2),
        _f("set_day", 0x42, 0x6C),
    ),
)

# Kamstrup MULTICAL 21 cold water (wired variant of its C1 telegram's records): litres, reverse
# (backflow) volume with VIFE 3Ch, instantaneous flow, water and ambient temperature, info codes.
KAMSTRUP_WATER: tuple[tuple[Field, ...], ...] = (
    (
        _f("fabrication_no", 0x0C, 0x78),
        _f("volume", 0x04, 0x13, "m3", -3),
        _f("backflow", 0x04, 0x93, "m3", -3, vife=b"\x3c"),
        _f("flow", 0x02, 0x3B, "m3/h", -3),
        _f("flow_max", 0x12, 0x3B, "m3/h", -3),
        _f("water_temperature", 0x01, 0x5B, "°C", 0),
        _f("ambient_temperature", 0x01, 0x67, "°C", 0),
        _f("error_flags", 0x02, 0xFD, vife=b"\x17"),
        _f("battery_days", 0x02, 0xFD, "s", 0, vife=b"\x74", multiplier=86400),
        _f("datetime", 0x04, 0x6D),
        _f("volume_set_day", 0x44, 0x13, "m3", -3),
        _f("set_day", 0x42, 0x6C),
    ),
)

# Diehl Metering HYDRUS hot water (M-Bus): BCD registers like Diehl/Hydrometer devices send.
DIEHL_WATER: tuple[tuple[Field, ...], ...] = (
    (
        _f("volume", 0x0C, 0x13, "m3", -3),
        _f("backflow", 0x0C, 0x93, "m3", -3, vife=b"\x3c"),
        _f("flow", 0x0A, 0x3B, "m3/h", -3),
        _f("water_temperature", 0x0A, 0x5A, "°C", -1),
        _f("error_flags", 0x02, 0xFD, vife=b"\x17"),
        _f("battery_days", 0x02, 0xFD, "s", 0, vife=b"\x74", multiplier=86400),
        _f("datetime", 0x04, 0x6D),
        _f("volume_set_day", 0x4C, 0x13, "m3", -3),
        _f("set_day", 0x42, 0x6C),
    ),
)


# ABB A44 three-phase electricity meter: energies in the first telegram, instantaneous values in the
# second (ABB meters answer in several telegrams); per-phase values carry the manufacturer VIFE
# FFh + phase number as ABB, EMU and Saia-Burgess meters do.
def _phase(key: str, head: tuple[int, int], unit: str, exp: int, phase: int, *, ext: bytes = b"") -> Field:
    dif, vif = head
    return _f(key, dif, vif, unit, exp, vife=ext + bytes((0xFF, phase)))


ABB_ELECTRICITY: tuple[tuple[Field, ...], ...] = (
    (
        _f("fabrication_no", 0x0C, 0x78),
        _f("energy", 0x0E, 0x04, "Wh", 1),
        _f("energy_t1", 0x8E, 0x04, "Wh", 1, dife=b"\x10"),
        _f("energy_t2", 0x8E, 0x04, "Wh", 1, dife=b"\x20"),
        _f("energy_export", 0x8E, 0x04, "Wh", 1, dife=b"\x40"),
        _f("error_flags", 0x02, 0xFD, vife=b"\x17"),
        _f("datetime", 0x04, 0x6D),
        _f("energy_set_day", 0xCE, 0x04, "Wh", 1, dife=b"\x00"),
        _f("set_day", 0x42, 0x6C),
    ),
    (
        _f("power", 0x04, 0x2B, "W", 0),
        *(_phase(f"power_l{p}", (0x04, 0x2B), "W", 0, p) for p in (1, 2, 3)),
        *(_phase(f"voltage_l{p}", (0x02, 0xFD), "V", -1, p, ext=b"\xc8") for p in (1, 2, 3)),
        *(_phase(f"current_l{p}", (0x03, 0xFD), "A", -3, p, ext=b"\xd9") for p in (1, 2, 3)),
    ),
)

# Elvaco CMa10 room sensor, as in the libmbus capture: temperature now, min/max over the averaging
# period, the previous period's average in storage 1, fabrication number and software version.
ELVACO_ROOM: tuple[tuple[Field, ...], ...] = (
    (
        _f("room_temperature", 0x02, 0x65, "°C", -2),
        _f("room_temperature_min", 0x22, 0x65, "°C", -2),
        _f("room_temperature_max", 0x12, 0x65, "°C", -2),
        _f("averaging_hours", 0x01, 0x72, "s", 0, multiplier=3600),
        _f("room_temperature_average", 0x42, 0x65, "°C", -2),
        _f("fabrication_no", 0x0C, 0x78),
        _f("software_version", 0x03, 0xFD, vife=b"\x0f"),
    ),
)

# Error/info flag bits per kind of meter (the error-flags record); status byte bits are EN 13757-3.
FLAG_BITS: dict[str, dict[str, int]] = {
    "heat": {
        "supply_sensor": 0x01,
        "return_sensor": 0x02,
        "flow_sensor": 0x04,
        "temperature_reversed": 0x08,
        "tamper": 0x10,
        "low_battery": 0x20,
        "air": 0x40,
    },
    "water": {
        "dry": 0x01,
        "backflow": 0x02,
        "leak": 0x04,
        "burst": 0x08,
        "tamper": 0x10,
        "low_battery": 0x20,
    },
    "electricity": {"phase_loss": 0x01, "reverse_energy": 0x02, "tamper": 0x10, "low_battery": 0x20},
    "room": {"sensor": 0x01, "tamper": 0x10, "low_battery": 0x20},
}
STATUS_POWER_LOW = 0x04
STATUS_PERMANENT_ERROR = 0x08
STATUS_TEMPORARY_ERROR = 0x10


def _set_day(at: datetime) -> date:
    """Swedish IMD reads on the month boundary: the set day is the first of the current month."""
    loc = climate.local(at)
    return loc.date().replace(day=1)


def _set_moment(at: datetime) -> datetime:
    d = _set_day(at)
    return datetime(d.year, d.month, d.day, tzinfo=climate.CET)


@dataclass(frozen=True, slots=True)
class Identity:
    ident: int  # 8 BCD digits
    manufacturer: str
    version: int
    device_type: int


class Meter:
    """One simulated meter on a bus: identity, register model, faults and link state."""

    kind: ClassVar[str] = ""  # "heat", "water", "electricity", "room"
    flag_family: ClassVar[str] = ""
    layout: ClassVar[tuple[tuple[Field, ...], ...]] = ()
    model: ClassVar[str] = ""  # the real product this imitates
    manufacturer: ClassVar[str] = ""
    version: ClassVar[int] = 0
    device_type: ClassVar[int] = 0
    medium: ClassVar[Medium]
    main_registers: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        ident: int,
        primary_address: int,
        seed: int,
        *,
        apartment: str | None = None,
        installed: date | None = None,
    ) -> None:
        if not 0 <= ident <= 99_999_999:
            raise ValueError("ident must have at most 8 digits")
        self.ident = ident
        self.primary_address = primary_address
        self.seed = seed
        self.apartment = apartment
        self.key = climate.mix(seed, ident)
        self.installed = installed or (
            climate.EPOCH - timedelta(days=200 + int(climate.unit(self.key, 1) * 1500))
        )
        self.faults: FaultBook | None = None
        # link state, touched by the segment thread
        self._lock = threading.Lock()
        self._access = int(climate.unit(self.key, 2) * 256)
        self._last_fcb: bool | None = None
        self._telegram = 0
        self._last_answer: bytes | None = None
        self._selected = False

    # -- identity ----------------------------------------------------------------------------------

    def identity(self, at: datetime) -> Identity:
        base = Identity(self.ident, self.manufacturer, self.version, self.device_type)
        return self.faults.identity(self, at, base) if self.faults else base

    def secondary_address(self, at: datetime) -> str:
        ident = self.identity(at)
        man = manufacturer_code(ident.manufacturer)
        return f"{ident.ident:08d}{man:04X}{ident.version:02X}{ident.device_type:02X}"

    # -- registers ---------------------------------------------------------------------------------

    def base_registers(self, at: datetime) -> dict[str, Value]:
        raise NotImplementedError

    def registers(self, at: datetime) -> dict[str, Value]:
        """Register values at ``at`` as the meter would send them, faults applied."""
        values = self.base_registers(at)
        values.setdefault("error_flags", 0)
        values["status"] = 0
        values["fabrication_no"] = self.ident
        if self.faults:
            values = self.faults.apply(self, at, values)
        values["fabrication_no"] = self.identity(at).ident
        return values

    def meter_clock(self, at: datetime) -> datetime:
        return climate.local(at).replace(second=0, microsecond=0, tzinfo=None)

    # -- telegrams ---------------------------------------------------------------------------------

    def records(self, at: datetime, telegram: int = 0) -> list[tuple[Field, Value]]:
        values = self.registers(at)
        return [(field, values[field.key]) for field in self.layout[telegram]]

    def user_data(self, at: datetime, telegram: int, access_number: int) -> bytes:
        """The variable data structure after CI 72h for telegram number ``telegram``."""
        values = self.registers(at)
        ident = self.identity(at)
        records = [
            encode.data_record(f.dif, f.vif, _wire_value(values[f.key]), dife=f.dife, vife=f.vife)
            for f in self.layout[telegram]
        ]
        return encode.variable_data(
            f"{ident.ident:08d}",
            ident.manufacturer,
            ident.version,
            ident.device_type,
            access_number,
            status if isinstance(status := values["status"], int) else 0,
            records,
            more_follow=telegram + 1 < len(self.layout),
        )

    def rsp_ud(
        self, at: datetime, address: int, telegram: int = 0, access_number: int | None = None
    ) -> bytes:
        if access_number is None:
            access_number = self._access
        return rsp_ud(address, 0x72, self.user_data(at, telegram, access_number))

    # -- link behaviour (driven by the segment) ----------------------------------------------------

    def reset_link(self) -> None:
        with self._lock:
            self._last_fcb = None
            self._telegram = 0
            self._last_answer = None

    def answer_req_ud2(self, at: datetime, address: int, fcb: bool, fcv: bool) -> bytes:
        """RSP_UD for a REQ_UD2: a toggled FCB asks for the next telegram, a repeated FCB for the
        same one again (the master missed it)."""
        with self._lock:
            if fcv and self._last_answer is not None and self._last_fcb == fcb:
                return self._last_answer
            if fcv and self._last_fcb is not None and self._last_answer is not None:
                self._telegram = (self._telegram + 1) % len(self.layout)
            elif not fcv:
                self._telegram = 0
            self._access = (self._access + 1) & 0xFF
            frame = self.rsp_ud(at, address, self._telegram, self._access)
            self._last_fcb = fcb if fcv else None
            self._last_answer = frame if fcv else None
            if not fcv:
                self._telegram = 0
            return frame

    @property
    def selected(self) -> bool:
        return self._selected

    @selected.setter
    def selected(self, value: bool) -> None:
        self._selected = value

    def describe(self) -> str:
        return (
            f"{self.ident:08d} {self.manufacturer} v{self.version:02X} type {self.device_type:02X} "
            f"addr {self.primary_address:3d} {self.medium.value:<16} {self.model}"
        )


def _wire_value(value: Value) -> Value:
    return value


def _noise(key: int, at: datetime, salt: int, span_minutes: int = 1) -> float:
    """Minute-scale jitter in [-1, 1) for instantaneous values."""
    bucket = int(at.timestamp() // (60 * span_minutes))
    return climate.signed(key, salt, bucket)


class _Cumulative:
    """A cumulative register with a seeded start value (the meter's life before the epoch)."""

    def __init__(self, series: Series, start: float, scale: float) -> None:
        self.series = series
        self.start = start
        self.scale = scale

    def at(self, at: datetime) -> int:
        return math.floor((self.start + self.series.cumulative(at)) * self.scale)


# -- heat ------------------------------------------------------------------------------------------


def _delta_t(outdoor: float) -> float:
    """Radiator circuit cooling (K): larger when the load is larger."""
    return min(20.0, max(3.0, 4.0 + 0.5 * (17.0 - outdoor)))


def _supply_temperature(outdoor: float) -> float:
    """Heating curve of a Swedish radiator system: about 55 °C at -15 °C, 25 °C in summer."""
    return min(60.0, max(25.0, 22.0 + 1.0 * (17.0 - outdoor)))


class KamstrupMultical403(Meter):
    """Apartment heat meter imitating a Kamstrup MULTICAL 403 with its wired M-Bus module."""

    kind = "heat"
    flag_family = "heat"
    layout = KAMSTRUP_HEAT
    model = "Kamstrup MULTICAL 403 (M-Bus module)"
    manufacturer = "KAM"
    version = 0x35
    device_type = 0x04
    medium = Medium.HEAT
    main_registers = ("energy", "volume", "energy_set_day", "volume_set_day")

    def __init__(
        self,
        ident: int,
        primary_address: int,
        seed: int,
        *,
        heat_kwh: Callable[[int], float],
        apartment: str | None = None,
        installed: date | None = None,
    ) -> None:
        super().__init__(ident, primary_address, seed, apartment=apartment, installed=installed)
        self._heat = Series(heat_kwh, lambda day: "heat")
        self._peaks: dict[int, float] = {}

        def litres(day: int) -> float:
            outdoor = climate.daily_mean_temperature(seed, day)
            return heat_kwh(day) / (1.163 * _delta_t(outdoor)) * 1000

        self._litres = Series(litres, lambda day: "heat")
        yearly = sum(heat_kwh(d) for d in range(0, 365, 7)) * 7
        years = (climate.EPOCH - self.installed).days / 365.25
        self._energy = _Cumulative(self._heat, yearly * years * (0.9 + 0.2 * climate.unit(self.key, 3)), 1.0)
        self._volume = _Cumulative(self._litres, yearly * years * 1000 / (1.163 * 12.0), 0.1)  # 10 l steps

    def _peak_kw(self, day: int) -> float:
        """Maximum power since New Year (the meter's yearly max register), from the coldest day."""
        if (cached := self._peaks.get(day)) is not None:
            return cached
        year_start = climate.day_index(date((climate.EPOCH + timedelta(days=day)).year, 1, 1))
        coldest = max((self._heat.daily(d) for d in range(max(0, year_start), day + 1, 3)), default=0.0)
        if len(self._peaks) > 64:
            self._peaks.clear()
        self._peaks[day] = peak = coldest / 24 * 1.35
        return peak

    def base_registers(self, at: datetime) -> dict[str, Value]:
        outdoor = climate.outdoor_temperature(self.seed, at)
        day = climate.day_index(climate.local(at).date())
        kw = self._heat.rate(at) * (1.0 + 0.08 * _noise(self.key, at, 10))
        supply = _supply_temperature(outdoor) + 0.6 * _noise(self.key, at, 11)
        dt = _delta_t(outdoor) if kw > 0.01 else 1.0
        ret = supply - dt
        flow_m3h = kw / (1.163 * dt) if kw > 0.01 else 0.0
        peak_kw = self._peak_kw(day)
        set_at = _set_moment(at)
        return {
            "energy": self._energy.at(at),
            "volume": self._volume.at(at),
            "on_time": max(
                0,
                int(
                    (at - datetime.combine(self.installed, datetime.min.time(), climate.CET)).total_seconds()
                    // 3600
                ),
            ),
            "flow_temperature": round(supply * 100),
            "return_temperature": round(ret * 100),
            "temperature_difference": round(supply * 100) - round(ret * 100),
            "power": round(kw * 10),
            "power_max": max(round(kw * 10), round(peak_kw * 10)),
            "flow": round(flow_m3h * 1000),
            "flow_max": max(round(flow_m3h * 1000), round(peak_kw / (1.163 * 20) * 1000)),
            "datetime": self.meter_clock(at),
            "energy_set_day": self._energy.at(set_at),
            "volume_set_day": self._volume.at(set_at),
            "set_day": _set_day(at),
        }


class KamstrupMultical603(KamstrupMultical403):
    """Building main heat meter (district heating substation) imitating a Kamstrup MULTICAL 603."""

    model = "Kamstrup MULTICAL 603 (M-Bus module)"
    version = 0x36


# -- water -----------------------------------------------------------------------------------------


class _WaterMeter(Meter):
    kind = "water"
    flag_family = "water"
    main_registers = ("volume", "volume_set_day")
    hot: ClassVar[bool] = False

    def __init__(
        self,
        ident: int,
        primary_address: int,
        seed: int,
        *,
        litres: Callable[[int], float],
        day_shape: Callable[[int], str],
        apartment: str | None = None,
        installed: date | None = None,
    ) -> None:
        super().__init__(ident, primary_address, seed, apartment=apartment, installed=installed)
        self._series = Series(litres, day_shape)
        yearly = sum(litres(d) for d in range(0, 365, 7)) * 7
        years = (climate.EPOCH - self.installed).days / 365.25
        self._volume = _Cumulative(
            self._series, yearly * years * (0.9 + 0.2 * climate.unit(self.key, 3)), 1.0
        )
        # battery sized for 12 years (Kamstrup/Diehl lithium cells)
        self._battery_end = self.installed + timedelta(days=int(365.25 * 12))

    def _flow_lh(self, at: datetime) -> int:
        """Taps are open or closed: a tap open with probability rate/flow gives the right mean."""
        rate = self._series.rate(at)
        tap = 420.0 if self.hot else 540.0
        if climate.unit(self.key, 20, int(at.timestamp() // 60)) < min(0.95, rate / tap):
            return round(tap * (0.7 + 0.6 * climate.unit(self.key, 21, int(at.timestamp() // 60))))
        return 0

    def base_registers(self, at: datetime) -> dict[str, Value]:
        flow = self._flow_lh(at)
        doy = climate.local(at).timetuple().tm_yday
        mains = 9.0 + 5.0 * math.sin(2 * math.pi * (doy - 120) / 365.25)  # Swedish mains water 4..14 °C
        if self.hot:
            water = 52.0 + 2.0 * _noise(self.key, at, 30) if flow else 23.0
        else:
            water = mains if flow else 21.0
        set_at = _set_moment(at)
        return {
            "volume": self._volume.at(at),
            "backflow": 0,
            "flow": flow,
            "flow_max": max(flow, 1100 if self.hot else 1400),
            "water_temperature": round(water) if self.layout is KAMSTRUP_WATER else round(water * 10),
            "ambient_temperature": round(21.0 + 1.5 * _noise(self.key, at, 31, 60)),
            "battery_days": max(0, (self._battery_end - climate.local(at).date()).days),
            "datetime": self.meter_clock(at),
            "volume_set_day": self._volume.at(set_at),
            "set_day": _set_day(at),
        }


class KamstrupMultical21(_WaterMeter):
    """Apartment cold water meter imitating a Kamstrup MULTICAL 21 (records of its telegram)."""

    layout = KAMSTRUP_WATER
    model = "Kamstrup MULTICAL 21"
    manufacturer = "KAM"
    version = 0x1B
    device_type = 0x16
    medium = Medium.COLD_WATER


class DiehlHydrus(_WaterMeter):
    """Apartment hot water meter imitating a Diehl Metering HYDRUS with its M-Bus interface."""

    layout = DIEHL_WATER
    model = "Diehl Metering HYDRUS (M-Bus)"
    manufacturer = "HYD"
    version = 0x20
    device_type = 0x06
    medium = Medium.HOT_WATER
    hot = True


# -- electricity -----------------------------------------------------------------------------------


class AbbA44(Meter):
    """Apartment electricity meter imitating an ABB A44 (three-phase, two-telegram M-Bus readout)."""

    kind = "electricity"
    flag_family = "electricity"
    layout = ABB_ELECTRICITY
    model = "ABB A44 (M-Bus)"
    manufacturer = "ABB"
    version = 0x20
    device_type = 0x02
    medium = Medium.ELECTRICITY
    main_registers = ("energy", "energy_t1", "energy_t2", "energy_set_day")

    def __init__(
        self,
        ident: int,
        primary_address: int,
        seed: int,
        *,
        household: Household,
        apartment: str | None = None,
        installed: date | None = None,
    ) -> None:
        super().__init__(ident, primary_address, seed, apartment=apartment, installed=installed)
        hh = household

        def shape(day: int) -> str:
            return "electricity_" + hh.day_shape(day)

        def t1_level(day: int) -> float:
            return hh.electricity_kwh(day) * T1_SHARE_WORKDAY if hh.day_shape(day) == "workday" else 0.0

        self._total = Series(hh.electricity_kwh, shape)
        self._t1 = Series(t1_level, lambda day: "electricity_workday_t1")
        yearly = sum(hh.electricity_kwh(d) for d in range(0, 365, 7)) * 7
        years = (climate.EPOCH - self.installed).days / 365.25
        start = yearly * years * (0.9 + 0.2 * climate.unit(self.key, 3))
        self._energy = _Cumulative(self._total, start, 100.0)  # 0.01 kWh
        self._energy_t1 = _Cumulative(self._t1, start * 0.62, 100.0)
        self._split = (0.5 + 0.1 * climate.signed(self.key, 40), 0.3 + 0.05 * climate.signed(self.key, 41))

    def base_registers(self, at: datetime) -> dict[str, Value]:
        total = self._energy.at(at)
        t1 = min(total, self._energy_t1.at(at))
        watts = self._total.rate(at) * 1000 * (1.0 + 0.3 * _noise(self.key, at, 50))
        s1, s2 = self._split
        powers = [round(watts * s1), round(watts * s2)]
        powers.append(round(watts) - sum(powers))
        volts = [
            round(2300 + 40 * _noise(self.seed, at, 60 + p, 5) + 8 * _noise(self.key, at, 63 + p))
            for p in range(3)
        ]
        values: dict[str, Value] = {
            "energy": total,
            "energy_t1": t1,
            "energy_t2": total - t1,
            "energy_export": 0,
            "datetime": self.meter_clock(at),
            "energy_set_day": self._energy.at(_set_moment(at)),
            "set_day": _set_day(at),
            "power": sum(powers),
        }
        for p in range(3):
            values[f"power_l{p + 1}"] = powers[p]
            values[f"voltage_l{p + 1}"] = volts[p]
            values[f"current_l{p + 1}"] = round(abs(powers[p]) / (volts[p] / 10) * 1000)
        return values


# -- room temperature ------------------------------------------------------------------------------


class ElvacoCMa10(Meter):
    """Room temperature sensor imitating an Elvaco CMa10 (Swedish temperature-based IMD)."""

    kind = "room"
    flag_family = "room"
    layout = ELVACO_ROOM
    model = "Elvaco CMa10"
    manufacturer = "ELV"
    version = 0x16
    device_type = 0x1B
    medium = Medium.ROOM_TEMPERATURE
    main_registers = ("room_temperature_average",)

    def __init__(
        self,
        ident: int,
        primary_address: int,
        seed: int,
        *,
        household: Household,
        apartment: str | None = None,
        installed: date | None = None,
    ) -> None:
        super().__init__(ident, primary_address, seed, apartment=apartment, installed=installed)
        self._hh = household

    def _temperature(self, at: datetime) -> float:
        loc = climate.local(at)
        day = climate.day_index(loc.date())
        outdoor = climate.daily_mean_temperature(self.seed, day)
        base = 20.0 + 2.5 * (self._hh.warmth - 0.85) / 0.35
        summer = max(0.0, outdoor - 16.0) * 0.35  # no cooling: warm summers warm the flat
        hour = loc.hour + loc.minute / 60
        return (
            base + summer + 0.6 * math.sin(2 * math.pi * (hour - 10) / 24) + 0.15 * _noise(self.key, at, 70)
        )

    def base_registers(self, at: datetime) -> dict[str, Value]:
        now = round(self._temperature(at) * 100)
        loc = climate.local(at)
        midnight = datetime(loc.year, loc.month, loc.day, tzinfo=climate.CET)
        today = [
            round(self._temperature(midnight + timedelta(hours=h)) * 100) for h in range(max(1, loc.hour + 1))
        ] + [now]
        yesterday = [self._temperature(midnight - timedelta(hours=24 - h)) for h in range(24)]
        return {
            "room_temperature": now,
            "room_temperature_min": min(today),
            "room_temperature_max": max(today),
            "averaging_hours": 24,
            "room_temperature_average": round(sum(yesterday) / 24 * 100),
            "software_version": 0x040000,
        }


MODELS: Mapping[str, type[Meter]] = {
    "heat": KamstrupMultical403,
    "main_heat": KamstrupMultical603,
    "cold_water": KamstrupMultical21,
    "hot_water": DiehlHydrus,
    "electricity": AbbA44,
    "room_temperature": ElvacoCMa10,
}
