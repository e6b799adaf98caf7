"""The meter list of one site: what the simulator exports and provisioning and central import.

One schema shared by every side, so a list written by ``imd sim ... --export`` is read unchanged by
``imd central import-site`` and by provisioning. Meter keys travel here only between trusted tools;
they are never logged.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.errors import MessageError


class Medium(StrEnum):
    """What a meter point measures (the domain's words, not the M-Bus medium codes)."""

    HEAT = "heat"
    HOT_WATER = "hot_water"
    COLD_WATER = "cold_water"
    ELECTRICITY = "electricity"
    ROOM_TEMPERATURE = "room_temperature"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SiteProperty(_Model):
    id: str = Field(min_length=1, max_length=64, description="stable key, e.g. the property designation")
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=200)
    city: str = Field(default="", max_length=100)


class SiteBuilding(_Model):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=200)


class SiteApartment(_Model):
    object_number: str = Field(min_length=1, max_length=64, description="rental admin system's object no.")
    number: str = Field(min_length=1, max_length=16, description="lägenhetsnummer, e.g. 1102")
    building: str = Field(min_length=1, max_length=64)
    area_m2: Decimal = Field(gt=0, max_digits=8, decimal_places=2)
    share: Decimal | None = Field(default=None, ge=0, description="andelstal where the BRF uses one")
    address: str = Field(default="", max_length=200)
    tenant_ref: str | None = Field(default=None, max_length=64)


class SiteMeter(_Model):
    id: str = Field(pattern=r"^[0-9]{8}$", description="the meter's 8-digit identification number")
    manufacturer: str = Field(pattern=r"^[A-Z@]{3}$")
    version: int = Field(ge=0, le=255)
    device_type: int = Field(ge=0, le=255, description="M-Bus medium/device type code")
    medium: Medium
    apartment: str | None = Field(default=None, description="object_number; None for a main meter")
    model: str = Field(default="", max_length=100, description="the real product imitated / installed")
    link: Literal["mbus", "wmbus"] = "mbus"
    bus: str = Field(default="mbus0", max_length=64, description="bus or radio stick name")
    primary_address: int | None = Field(default=None, ge=0, le=250)
    key: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{32}$", repr=False)

    @property
    def secondary_address(self) -> str:
        """The 16 hex digits used for secondary selection, as libmbus prints them: id, man, ver, med."""
        from protocols.mbus.manufacturers import manufacturer_code

        man = manufacturer_code(self.manufacturer)
        return f"{self.id}{man:04X}{self.version:02X}{self.device_type:02X}"


class SiteExport(_Model):
    schema_version: Literal[1] = 1
    property: SiteProperty
    buildings: list[SiteBuilding] = Field(min_length=1)
    apartments: list[SiteApartment]
    meters: list[SiteMeter]

    @field_validator("meters")
    @classmethod
    def _unique_meters(cls, meters: list[SiteMeter]) -> list[SiteMeter]:
        seen: set[tuple[str, str]] = set()
        for meter in meters:
            key = (meter.id, meter.manufacturer)
            if key in seen:
                raise ValueError(f"meter {meter.id} ({meter.manufacturer}) listed twice")
            seen.add(key)
        return meters

    @model_validator(mode="after")
    def _references(self) -> SiteExport:
        buildings = {b.id for b in self.buildings}
        apartments = {a.object_number for a in self.apartments}
        for apartment in self.apartments:
            if apartment.building not in buildings:
                raise ValueError(
                    f"apartment {apartment.object_number}: unknown building {apartment.building}"
                )
        for meter in self.meters:
            if meter.apartment is not None and meter.apartment not in apartments:
                raise ValueError(f"meter {meter.id}: unknown apartment {meter.apartment}")
        return self


def parse_site(payload: bytes | str) -> SiteExport:
    try:
        return SiteExport.model_validate_json(payload)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise MessageError(f"invalid site export: {reasons}") from exc
