"""Build wM-Bus telegrams (EN 13757-4 link, EN 13757-7 / OMS security): the simulator's radio meters.

The inverse of :func:`protocols.wmbus.decode_wmbus` for what a meter sends: C field 44h (SND_NR),
an optional extended link layer I (CI 8Ch), for security mode 7 the authentication and
fragmentation layer (CI 90h with counter and MAC), the transport layer with the short header
(CI 7Ah) and the records, encrypted in mode 5 (AES-CBC, IV from manufacturer, address and access
number) or mode 7 (OMS KDF-A keys from AES-CMAC, IV 0, CMAC over AFL and TPL), with the 2F2F check
bytes in front and 2Fh fill to the block boundary. Frame format A (a CRC per block), B or CRC-less.

Every byte is fixed by the standard once the records, the access number, the counter and the key
are given, so a real telegram re-encoded from its plain records comes out byte for byte the same
(the tests do this with the OMS examples). Pure: no randomness, no I/O; keys are never formatted
into an error message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocols.errors import FrameError
from protocols.mbus.manufacturers import manufacturer_code
from protocols.wmbus.link import FrameFormat, add_crc_format_a, add_crc_format_b
from protocols.wmbus.security import aes_cmac, cbc_encrypt, derive_mode7_keys, mode5_iv

__all__ = [
    "C_SND_NR",
    "RadioIdentity",
    "afl_mode7",
    "encode_wmbus",
    "link_header",
    "pad_plain",
    "tpl_short_header",
]

C_SND_NR: Final = 0x44  # a meter's unsolicited telegram
CI_TPL_SHORT: Final = 0x7A
CI_ELL_I: Final = 0x8C
CI_AFL: Final = 0x90
_CHECK: Final = b"\x2f\x2f"
_FILL: Final = 0x2F
_MODE_SHIFT: Final = 8
_BLOCKS_SHIFT: Final = 4
# Mode 7 as OMS Vol. 2 uses it: KDF-A (configuration field extension 10h) and an 8-byte MAC
# (authentication type 5 in AFL.MCL, with the message counter present: MCL = 25h).
_KDF_A: Final = 0x10
_MCL_COUNTER_AT5: Final = 0x25
_FCL_MCL_MCR_MAC: Final = 0x2C00
_MAC_LENGTH: Final = 8
_SECURITY_MODES: Final = frozenset((0, 5, 7))


@dataclass(frozen=True, slots=True)
class RadioIdentity:
    """Who sends: the link layer address of a radio meter."""

    manufacturer: str  # three letters
    id: str  # 8 digits as printed on the meter
    version: int
    device_type: int

    def address_bytes(self) -> bytes:
        """M(2) A(4) V T as the link layer sends them (the IV and KDF input use these bytes)."""
        if len(self.id) != 8 or not self.id.isdigit():
            raise ValueError(f"meter id must be 8 digits, got {self.id!r}")
        return (
            manufacturer_code(self.manufacturer).to_bytes(2, "little")
            + bytes.fromhex(self.id)[::-1]
            + bytes((self.version & 0xFF, self.device_type & 0xFF))
        )


def link_header(identity: RadioIdentity, c_field: int = C_SND_NR) -> bytes:
    """C field and address (the L field is added last, when the length is known)."""
    return bytes((c_field,)) + identity.address_bytes()


def pad_plain(records: bytes) -> bytes:
    """2F2F check bytes, the records, then 2Fh fill to a whole number of AES blocks."""
    plain = _CHECK + records
    return plain + bytes((_FILL,)) * (-len(plain) % 16)


def tpl_short_header(access_number: int, status: int, config: int, config_ext: int | None = None) -> bytes:
    out = bytes((CI_TPL_SHORT, access_number & 0xFF, status & 0xFF)) + (config & 0xFFFF).to_bytes(2, "little")
    return out + (bytes((config_ext,)) if config_ext is not None else b"")


def afl_mode7(counter: int, mac: bytes) -> bytes:
    """AFL with MCL, MCR and an 8-byte MAC, unfragmented (what OMS mode 7 meters send)."""
    body = (
        _FCL_MCL_MCR_MAC.to_bytes(2, "little")
        + bytes((_MCL_COUNTER_AT5,))
        + (counter & 0xFFFFFFFF).to_bytes(4, "little")
        + mac
    )
    return bytes((CI_AFL, len(body))) + body


def _config(mode: int, blocks: int, flags: int) -> int:
    if blocks > 15:
        raise FrameError(f"{blocks} encrypted blocks do not fit the configuration field (at most 15)")
    keep = flags & ~(0x1F << _MODE_SHIFT | 0x0F << _BLOCKS_SHIFT)
    return keep | mode << _MODE_SHIFT | blocks << _BLOCKS_SHIFT


def _frame(telegram_without_l: bytes, frame_format: FrameFormat) -> bytes:
    if len(telegram_without_l) > 255:
        raise FrameError(f"telegram of {len(telegram_without_l)} bytes after L does not fit a radio frame")
    telegram = bytes((len(telegram_without_l),)) + telegram_without_l
    if frame_format == "A":
        return add_crc_format_a(telegram)
    if frame_format == "B":
        return add_crc_format_b(telegram)
    return telegram


def encode_wmbus(
    identity: RadioIdentity,
    records: bytes,
    *,
    access_number: int,
    status: int = 0,
    security_mode: int = 0,
    key: bytes | None = None,
    message_counter: int = 0,
    config_flags: int = 0,
    ell_cc: int | None = None,
    c_field: int = C_SND_NR,
    frame_format: FrameFormat = "A",
) -> bytes:
    """One telegram from a meter: records (EN 13757-3 DIF/VIF data) behind a short TPL header.

    ``security_mode`` 0 sends the records in the clear (configuration field 0000h). Modes 5 and 7
    encrypt all of them (the block count is set from the length) with ``key`` (16 bytes).
    ``message_counter`` is the AFL counter of mode 7 (the KDF input: a new key pair per telegram).
    ``config_flags`` are the other configuration field bits a product sets (e.g. 2000h synchronous).
    ``ell_cc`` adds an extended link layer I (CI 8Ch) with that communication control byte.
    """
    if security_mode not in _SECURITY_MODES:
        raise ValueError(f"security mode {security_mode} cannot be encoded (0, 5 or 7)")
    if security_mode and (key is None or len(key) != 16):
        raise ValueError(f"security mode {security_mode} needs a 16-byte AES key for meter {identity.id}")
    head = link_header(identity, c_field)
    ell = b"" if ell_cc is None else bytes((CI_ELL_I, ell_cc & 0xFF, access_number & 0xFF))
    if security_mode == 0:
        tpl = tpl_short_header(access_number, status, config_flags & ~0x1FF0) + records
        return _frame(head + ell + tpl, frame_format)
    assert key is not None
    plain = pad_plain(records)
    blocks = len(plain) // 16
    address = identity.address_bytes()
    if security_mode == 5:
        header = tpl_short_header(access_number, status, _config(5, blocks, config_flags))
        encrypted = cbc_encrypt(key, mode5_iv(address, access_number), plain)
        return _frame(head + ell + header + encrypted, frame_format)
    counter = (message_counter & 0xFFFFFFFF).to_bytes(4, "little")
    enc_key, mac_key = derive_mode7_keys(key, counter, address[2:6])
    header = tpl_short_header(access_number, status, _config(7, blocks, config_flags), _KDF_A)
    tpl = header + cbc_encrypt(enc_key, bytes(16), plain)
    mac = aes_cmac(mac_key, bytes((_MCL_COUNTER_AT5,)) + counter + tpl)[:_MAC_LENGTH]
    return _frame(head + ell + afl_mode7(message_counter, mac) + tpl, frame_format)
