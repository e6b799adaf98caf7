"""Golden telegrams (see wmbus_golden.py for sources and licences): decode, check the stated total."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from wmbus_golden import GOLDEN, Golden

from protocols.decode import decode_frame_json, decode_frame_json_line
from protocols.errors import SecurityError
from protocols.wmbus import FormatCache, decode_wmbus

_J_PER_WH = Decimal(3600)


def _keys(g: Golden) -> dict[str, bytes] | None:
    return {g.key_id: bytes.fromhex(g.key)} if g.key_id and g.key else None


def _total(records: tuple, quantity: str) -> Decimal:  # type: ignore[type-arg]
    for r in records:
        if r.storage or r.tariff or r.function != "instantaneous":
            continue
        if quantity == "volume" and r.unit == "m3":
            return Decimal(r.value)
        if quantity == "energy" and r.unit in ("Wh", "J"):
            return Decimal(r.value) if r.unit == "Wh" else Decimal(r.value) / _J_PER_WH
        if quantity == "hca" and r.unit == "HCA":
            return Decimal(r.value)
    raise AssertionError(f"no {quantity} total")


@pytest.fixture(scope="module")
def decoded() -> dict[str, object]:
    formats = FormatCache()
    return {g.name: decode_wmbus(bytes.fromhex(g.hex), _keys(g), formats=formats) for g in GOLDEN}


@pytest.mark.parametrize("g", GOLDEN, ids=lambda g: g.name)
def test_golden_total(g: Golden, decoded: dict[str, object]) -> None:
    w = decoded[g.name]
    assert _total(w.telegram.records, g.quantity) == g.total  # type: ignore[attr-defined]


def test_golden_covers_every_ci_and_security_mode() -> None:
    covered = set().union(*(g.features for g in GOLDEN))
    for feature in ("ci78", "ci79", "ci7a", "ci72", "ci8c", "ci8d", "ci8e", "ci90", "mode0", "mode5", "mode7",
                    "ell_ctr", "format_a", "format_b"):  # fmt: skip
        assert feature in covered, feature
    assert len(GOLDEN) >= 20


def test_golden_details(decoded: dict[str, object]) -> None:
    mc21 = decoded["kamstrup_mc21_ctr_full"]
    assert mc21.decrypted  # type: ignore[attr-defined]
    assert mc21.ell.encryption == 1  # type: ignore[attr-defined]
    assert mc21.telegram.id == "76348799"  # type: ignore[attr-defined]
    assert mc21.telegram.manufacturer == "KAM"  # type: ignore[attr-defined]
    assert mc21.telegram.medium == "cold_water"  # type: ignore[attr-defined]
    assert mc21.flags == ("dry",)  # type: ignore[attr-defined]
    compact = decoded["kamstrup_mc21_ctr_compact"]
    assert compact.compact  # type: ignore[attr-defined]
    assert compact.telegram.ci == 0x79  # type: ignore[attr-defined]
    gas = decoded["oms_gas_mode7_afl_ell"]
    assert gas.security_mode == 7  # type: ignore[attr-defined]
    assert gas.decrypted  # type: ignore[attr-defined]
    assert gas.afl.counter == bytes.fromhex("B30A0000")  # type: ignore[attr-defined]
    assert len(gas.afl.mac) == 8  # type: ignore[attr-defined]
    assert (gas.telegram.manufacturer, gas.telegram.medium) == ("ELS", "gas")  # type: ignore[attr-defined]
    adapter = decoded["oms_gas_mode7_radio_adapter"]
    assert adapter.link.manufacturer == "RAD"  # type: ignore[attr-defined]
    assert adapter.link.id == "11223344"  # type: ignore[attr-defined]
    assert adapter.telegram.id == "12345678"  # type: ignore[attr-defined]
    hca = decoded["oms_hca_mode5_partial"]
    assert [r.value for r in hca.telegram.records][-1] == 12345678  # type: ignore[attr-defined]
    water = decoded["oms_water_format_b"]
    assert water.link.frame_format == "B"  # type: ignore[attr-defined]
    assert water.link.link_mode == "C1"  # type: ignore[attr-defined]
    assert decoded["oms_gas_mode5_crc_a"].link.frame_format == "A"  # type: ignore[attr-defined]
    assert decoded["diehl_hydrus_mode5_decrypted"].telegram.manufacturer == "DME"  # type: ignore[attr-defined]


def test_golden_through_decode_frame_json() -> None:
    formats = FormatCache()
    for g in GOLDEN:
        obj = decode_frame_json(bytes.fromhex(g.hex), _keys(g), formats)
        assert obj["ok"], (g.name, obj["error"])
        assert obj["link"] == "wmbus"
        ok, line = decode_frame_json_line(bytes.fromhex(g.hex), _keys(g), formats)
        assert ok
        assert json.loads(line)["records"] == json.loads(json.dumps(obj["records"]))


@pytest.mark.parametrize("g", [g for g in GOLDEN if g.key], ids=lambda g: g.name)
def test_golden_without_key_says_key_missing(g: Golden) -> None:
    with pytest.raises(SecurityError, match=f"key missing for meter {g.key_id}"):
        decode_wmbus(bytes.fromhex(g.hex), None, formats=_learned_formats())


@pytest.mark.parametrize("g", [g for g in GOLDEN if g.key], ids=lambda g: g.name)
def test_golden_wrong_key_says_decryption_failed(g: Golden) -> None:
    assert g.key_id
    assert g.key
    wrong = bytes.fromhex(g.key)[::-1]
    with pytest.raises(
        SecurityError, match=f"decryption failed for meter {g.key_id} \\(wrong key\\?\\)"
    ) as info:
        decode_wmbus(bytes.fromhex(g.hex), {g.key_id: wrong}, formats=_learned_formats())
    assert g.key.lower() not in str(info.value).lower()
    assert wrong.hex() not in str(info.value).lower()


def _learned_formats() -> FormatCache:
    formats = FormatCache()
    for g in GOLDEN:
        if "ci79" not in g.features:
            decode_wmbus(bytes.fromhex(g.hex), _keys(g), formats=formats)
    return formats
