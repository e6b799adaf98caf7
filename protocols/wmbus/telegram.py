"""From a wM-Bus telegram (bytes) to a decoded :class:`WirelessTelegram`.

Layers in order: link (A/B/CRC-less) -> ELL (AES-CTR, payload CRC) -> AFL (fragments, MAC) -> TPL
(none/short/long header, security mode 0/5/7) -> records by the one EN 13757-3 decoder
(:func:`protocols.mbus.application.decode_user_data`), or a compact frame expanded by a learned layout.

Every decryption is verified before a value is read: the ELL payload CRC, the 2F2F check bytes of
CBC modes and the AFL MAC. A missing key or a failed check is a :class:`SecurityError` that names the
meter (never the key). Telegrams that a receiver or a log already decrypted (the header still says
"encrypted" but the plain data checks out) decode without a key, as wmbusmeters does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from protocols.errors import DecodeError, SecurityError, UnsupportedError
from protocols.mbus.application import Telegram, decode_user_data, medium_name
from protocols.mbus.manufacturers import manufacturer_letters
from protocols.wmbus.compact import FormatCache, FormatUnknownError, expand_compact
from protocols.wmbus.crc import crc16_en13757
from protocols.wmbus.layers import (
    AFL_CI,
    ELL_LENGTHS,
    TPL_CI,
    Afl,
    Ell,
    FragmentReassembler,
    Tpl,
    parse_afl,
    parse_ell,
    parse_tpl,
)
from protocols.wmbus.link import FrameFormat, LinkFrame, parse_link
from protocols.wmbus.security import aes_cmac, cbc_decrypt, ctr_crypt, derive_mode7_keys, ell_iv, mode5_iv
from protocols.wmbus.status import meter_flags

__all__ = ["FragmentPendingError", "Keys", "WirelessTelegram", "decode_wmbus", "decode_wmbus_telegram"]

Keys = Mapping[str, bytes]

_CHECK: Final = b"\x2f\x2f"


class FragmentPendingError(DecodeError):
    """An AFL fragment was kept; the message is decoded when its last fragment arrives."""


@dataclass(frozen=True, slots=True)
class WirelessTelegram:
    link: LinkFrame
    ell: Ell | None
    afl: Afl | None
    tpl: Tpl | None
    security_mode: int  # TPL security mode (0, 5, 7); ELL encryption is ``ell.encryption``
    decrypted: bool  # True when we opened it with a key (False: plain or decrypted upstream)
    compact: bool
    telegram: Telegram
    alarm: bytes | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        t = self.telegram
        return meter_flags(t.manufacturer, t.device_type, t.status, t.records)


def _key_for(keys: Keys | None, meter_id: str) -> bytes | None:
    if not keys:
        return None
    key = keys.get(meter_id)
    if key is None:
        key = keys.get(meter_id.lstrip("0") or "0")
    if key is not None and len(key) != 16:
        raise SecurityError(f"key for meter {meter_id} is not 16 bytes (AES-128)")
    return key


def _open_ell(link: LinkFrame, ell: Ell, rest: bytes, keys: Keys | None) -> tuple[Ell, bytes, bool]:
    """Check (and if needed decrypt) the ELL payload; return the ELL, the data after its CRC, decrypted?"""
    if ell.session_number is None:
        return ell, rest, False
    if len(rest) < 2:
        raise DecodeError("extended link layer payload CRC is missing")
    meter = ell.meter_id or link.id
    encryption = ell.encryption

    def crc_ok(payload: bytes) -> bool:
        return crc16_en13757(payload[2:]) == payload[0] | (payload[1] << 8)

    if encryption == 0:
        if not crc_ok(rest):
            raise DecodeError(f"extended link layer payload CRC mismatch for meter {meter}")
        return ell, rest[2:], False
    if encryption != 1:
        raise UnsupportedError(
            f"extended link layer encryption {encryption} is not supported (meter {meter})"
        )
    key = _key_for(keys, meter)
    if key is None:
        if crc_ok(rest):
            return ell, rest[2:], False
        raise SecurityError(f"key missing for meter {meter}")
    address = ell.address or link.address_bytes
    plain = ctr_crypt(key, ell_iv(address, ell.cc, ell.session_number), rest)
    if not crc_ok(plain):
        if crc_ok(rest):
            raise SecurityError(
                f"decryption failed for meter {meter} (wrong key?): telegram announces encryption but "
                "carries plain data"
            )
        raise SecurityError(f"decryption failed for meter {meter} (wrong key?): payload CRC mismatch")
    ell = dataclasses.replace(ell, payload_crc=plain[0] | (plain[1] << 8))
    return ell, plain[2:], True


def _open_tpl(
    link: LinkFrame,
    tpl: Tpl,
    body: bytes,
    *,
    ell: Ell | None,
    afl: Afl | None,
    tpl_bytes: bytes,
    keys: Keys | None,
) -> tuple[bytes, bool]:
    """Decrypt the TPL body by security mode; return the plain body and whether we decrypted it."""
    mode = tpl.security_mode
    if mode == 0:
        return body, False
    meter = tpl.meter_id or (ell.meter_id if ell else None) or link.id
    address = tpl.address or (ell.address if ell else None) or link.address_bytes
    if mode not in (5, 7):
        raise UnsupportedError(f"security mode {mode} is not supported (meter {meter})")
    blocks = tpl.encrypted_blocks
    size = blocks * 16 if blocks else len(body) // 16 * 16
    if size > len(body):
        raise DecodeError(
            f"{blocks} encrypted blocks announced but only {len(body)} bytes follow (meter {meter})"
        )
    key = _key_for(keys, meter)
    if key is None:
        if body[:2] == _CHECK:
            return body, False
        raise SecurityError(f"key missing for meter {meter}")
    encrypted, plain_tail = body[:size], body[size:]
    if mode == 5:
        plain = cbc_decrypt(key, mode5_iv(address, tpl.access_number), encrypted)
    else:
        kdf = tpl.kdf
        if kdf == 0:
            enc_key, mac_key = key, None
        elif kdf == 1:
            if afl is None or afl.counter is None:
                raise DecodeError(f"security mode 7 needs the AFL message counter (meter {meter})")
            enc_key, mac_key = derive_mode7_keys(key, afl.counter, address[2:6])
        else:
            raise UnsupportedError(f"key derivation function {kdf} is not supported (meter {meter})")
        if mac_key is not None and afl is not None and afl.mac is not None:
            expected = aes_cmac(mac_key, afl.mac_input_prefix() + tpl_bytes)[: len(afl.mac)]
            if expected != afl.mac:
                raise SecurityError(f"decryption failed for meter {meter} (wrong key?): MAC mismatch")
        plain = cbc_decrypt(enc_key, bytes(16), encrypted)
    if plain[:2] != _CHECK:
        if body[:2] == _CHECK:
            raise SecurityError(
                f"decryption failed for meter {meter} (wrong key?): telegram announces encryption but "
                "carries plain data"
            )
        raise SecurityError(f"decryption failed for meter {meter} (wrong key?): check bytes 2F2F missing")
    return plain + plain_tail, True


def decode_wmbus(
    raw: bytes,
    keys: Keys | None = None,
    *,
    formats: FormatCache | None = None,
    fragments: FragmentReassembler | None = None,
    link_mode: str | None = None,
    frame_format: FrameFormat | None = None,
) -> WirelessTelegram:
    """Decode one wM-Bus telegram. ``keys`` maps meter id (8 hex digits, upper case) to its AES key.

    ``formats`` learns layouts from full frames and expands compact frames; ``fragments`` collects AFL
    fragments (both are plain objects the caller keeps between telegrams).
    """
    link = parse_link(raw, link_mode=link_mode, frame_format=frame_format)
    data = link.data
    ell = None
    decrypted = False
    if data[0] in ELL_LENGTHS:
        ell, rest = parse_ell(data)
        ell, data, decrypted = _open_ell(link, ell, rest, keys)
        if not data:
            return _empty(link, ell, None, None, decrypted)
    afl = None
    if data[0] == AFL_CI:
        afl, data = parse_afl(data)
        if afl.more_fragments or afl.fragment_id > 1:
            meter = (ell.meter_id if ell else None) or link.id
            if fragments is None:
                raise UnsupportedError(f"fragmented message from meter {meter} needs a fragment reassembler")
            done = fragments.add(f"{link.manufacturer}{meter}", afl, data)
            if done is None:
                raise FragmentPendingError(
                    f"fragment {afl.fragment_id} from meter {meter} kept; waiting for the rest"
                )
            afl, data = done
        if not data:
            raise DecodeError("AFL carries no transport layer")
    ci = data[0]
    if ci not in TPL_CI:
        raise UnsupportedError(f"CI field {ci:02X}h is not supported")
    tpl, body = parse_tpl(data, ell.access_number if ell else 0)
    plain, tpl_decrypted = _open_tpl(link, tpl, body, ell=ell, afl=afl, tpl_bytes=data, keys=keys)
    decrypted = decrypted or tpl_decrypted
    meter_address = tpl.address or (ell.address if ell else None)
    ident, manufacturer, version, device_type = _identity(link, meter_address)
    short = bytes((tpl.access_number, tpl.status)) + tpl.config.to_bytes(2, "little")
    kind = tpl.payload
    compact = kind == "compact"
    if kind == "error":
        decode_user_data(0x70, plain, raw=link.raw)  # raises with the meter's error code
    if kind in ("alarm", "ack"):
        telegram = Telegram(tpl.ci, ident, manufacturer, version, medium_name(device_type), device_type,
                            tpl.access_number, tpl.status, tpl.config, (), False, b"", link.raw)  # fmt: skip
        return WirelessTelegram(link, ell, afl, tpl, tpl.security_mode, decrypted, False, telegram,
                                plain if kind == "alarm" else None)  # fmt: skip
    if compact:
        plain = _expand(
            plain, formats, manufacturer=manufacturer, version=version, device_type=device_type, meter=ident
        )
    if tpl.header == "long":
        telegram = decode_user_data(0x72, tpl.header_bytes[1:9] + short + plain, raw=link.raw)
    elif tpl.header == "short":
        telegram = decode_user_data(0x7A, short + plain, id=ident, manufacturer=manufacturer, version=version,
                                    device_type=device_type, raw=link.raw)  # fmt: skip
    else:
        telegram = decode_user_data(0x78, plain, id=ident, manufacturer=manufacturer, version=version,
                                    device_type=device_type, raw=link.raw)  # fmt: skip
        if ell is not None:
            telegram = dataclasses.replace(telegram, access_number=ell.access_number)
    if compact:
        telegram = dataclasses.replace(telegram, ci=tpl.ci)
    elif formats is not None and telegram.records:
        formats.learn(manufacturer, version, device_type, telegram.records)
    return WirelessTelegram(link, ell, afl, tpl, tpl.security_mode, decrypted, compact, telegram)


def _identity(link: LinkFrame, address: bytes | None) -> tuple[str, str, int, int]:
    if address is None:
        return link.id, link.manufacturer, link.version, link.device_type
    return (address[2:6][::-1].hex().upper(), manufacturer_letters(address[0] | (address[1] << 8)),
            address[6], address[7])  # fmt: skip


def _expand(
    plain: bytes,
    formats: FormatCache | None,
    *,
    manufacturer: str,
    version: int,
    device_type: int,
    meter: str,
) -> bytes:
    if len(plain) < 4:
        raise DecodeError(f"compact frame from meter {meter} is truncated")
    signature = plain[0] | (plain[1] << 8)
    layout = formats.layout(manufacturer, version, device_type, signature) if formats is not None else None
    if layout is None:
        raise FormatUnknownError(
            f"format unknown: compact frame signature {signature:04X}h from meter {meter} "
            "(no full frame of this format seen yet)"
        )
    return expand_compact(layout, plain[4:], plain[2] | (plain[3] << 8))


def _empty(
    link: LinkFrame, ell: Ell | None, afl: Afl | None, tpl: Tpl | None, decrypted: bool
) -> WirelessTelegram:
    access = ell.access_number if ell else 0
    telegram = Telegram(link.data[0], link.id, link.manufacturer, link.version, medium_name(link.device_type),
                        link.device_type, access, 0, 0, (), False, b"", link.raw)  # fmt: skip
    return WirelessTelegram(link, ell, afl, tpl, 0, decrypted, False, telegram)


def decode_wmbus_telegram(
    raw: bytes, keys: Keys | None = None, formats: FormatCache | None = None
) -> Telegram:
    """The :class:`Telegram` only: the shape ``protocols.decode.LINK_DECODERS`` wants."""
    return decode_wmbus(raw, keys, formats=formats).telegram
