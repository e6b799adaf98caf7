"""The layers between the radio link and the records: extended link layer (ELL, CI 8Ch-8Fh),
authentication and fragmentation layer (AFL, CI 90h) and the transport layer header (TPL).

Each parser takes the bytes from its CI field and returns a frozen header plus the bytes that follow.
Decryption is not done here (see :mod:`protocols.wmbus.telegram`): these are the plain structures.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

from protocols.errors import DecodeError
from protocols.mbus.manufacturers import manufacturer_letters

__all__ = [
    "AFL_CI",
    "ELL_LENGTHS",
    "TPL_CI",
    "Afl",
    "Ell",
    "FragmentReassembler",
    "Tpl",
    "parse_afl",
    "parse_ell",
    "parse_tpl",
]

# ELL CI -> bytes after the CI: I (8Ch) CC ACC; II (8Dh) + SN + payload CRC; III (8Eh) + address;
# IV (8Fh) address + SN + payload CRC
ELL_LENGTHS: Final = {0x8C: 2, 0x8D: 8, 0x8E: 10, 0x8F: 16}
_ELL_HAS_ADDRESS: Final = frozenset((0x8E, 0x8F))
_ELL_HAS_SESSION: Final = frozenset((0x8D, 0x8F))

AFL_CI: Final = 0x90

HeaderKind = Literal["none", "short", "long"]
PayloadKind = Literal["full", "compact", "alarm", "error", "ack"]

# TPL CI -> (header, what follows). EN 13757-7 table of CI fields (from the meter).
TPL_CI: Final[dict[int, tuple[HeaderKind, PayloadKind]]] = {
    0x78: ("none", "full"),
    0x79: ("none", "compact"),
    0x7A: ("short", "full"),
    0x7B: ("short", "compact"),
    0x72: ("long", "full"),
    0x73: ("long", "compact"),
    0x70: ("none", "error"),
    0x6E: ("short", "error"),
    0x6F: ("long", "error"),
    0x71: ("none", "alarm"),
    0x74: ("short", "alarm"),
    0x75: ("long", "alarm"),
    0x8A: ("short", "ack"),
    0x8B: ("long", "ack"),
}

# AFL.MCL authentication type -> MAC length in bytes (EN 13757-7 table "AT")
_MAC_LENGTHS: Final = {0: 0, 3: 2, 4: 4, 5: 8, 6: 12, 7: 16, 8: 12}


@dataclass(frozen=True, slots=True)
class Ell:
    ci: int
    cc: int
    access_number: int
    address: bytes | None  # M(2) A(6) of the meter when a radio adapter sends for it (8Eh/8Fh)
    session_number: bytes | None  # SN as sent (4 bytes)
    payload_crc: int | None

    @property
    def encryption(self) -> int:
        """0: none, 1: AES-128-CTR (SN bits 29-31)."""
        if self.session_number is None:
            return 0
        return int.from_bytes(self.session_number, "little") >> 29

    @property
    def session(self) -> int:
        return 0 if self.session_number is None else self.session_number[0] & 0x0F

    @property
    def meter_id(self) -> str | None:
        return None if self.address is None else self.address[2:6][::-1].hex().upper()


def parse_ell(data: bytes) -> tuple[Ell, bytes]:
    """Parse an ELL; the returned rest starts after the header (at the payload CRC for 8Dh/8Fh)."""
    ci = data[0]
    need = ELL_LENGTHS[ci]
    if len(data) < 1 + need:
        raise DecodeError(f"extended link layer {ci:02X}h needs {need} bytes, got {len(data) - 1}")
    pos = 3
    address = None
    if ci in _ELL_HAS_ADDRESS:
        address = data[pos : pos + 8]
        pos += 8
    session = None
    payload_crc = None
    if ci in _ELL_HAS_SESSION:
        session = data[pos : pos + 4]
        payload_crc = data[pos + 4] | (data[pos + 5] << 8)
        pos += 4  # the payload CRC is encrypted with the payload: it stays in the rest
    return Ell(ci, data[1], data[2], address, session, payload_crc), data[pos:]


@dataclass(frozen=True, slots=True)
class Afl:
    fragment_control: int
    message_control: int | None
    key_info: int | None
    counter: bytes | None  # AFL.MCR as sent (4 bytes, little-endian)
    mac: bytes | None
    message_length: int | None

    @property
    def fragment_id(self) -> int:
        return self.fragment_control & 0xFF

    @property
    def more_fragments(self) -> bool:
        return bool(self.fragment_control & 0x4000)

    def mac_input_prefix(self) -> bytes:
        """AFL.MCL | AFL.MCR | {AFL.ML}: what the MAC covers before the TPL bytes."""
        out = bytes((self.message_control or 0,)) + (self.counter or b"")
        if self.message_length is not None:
            out += self.message_length.to_bytes(2, "little")
        return out


def parse_afl(data: bytes) -> tuple[Afl, bytes]:
    """Parse an AFL (CI 90h, AFLL, then FCL, MCL, KI, MCR, MAC, ML as flagged); return the rest."""
    if len(data) < 4:
        raise DecodeError("AFL header is truncated")
    afll = data[1]
    header = data[2 : 2 + afll]
    if len(header) < afll or afll < 2:
        raise DecodeError(f"AFL length {afll} does not fit the telegram")
    fc = header[0] | (header[1] << 8)
    pos = 2
    mcl = ki = ml = None
    counter = mac = None

    def take(count: int) -> bytes:
        nonlocal pos
        if pos + count > afll:
            raise DecodeError("AFL fields run past the AFL length")
        out = header[pos : pos + count]
        pos += count
        return out

    if fc & 0x2000:
        mcl = take(1)[0]
    if fc & 0x0200:
        ki = int.from_bytes(take(2), "little")
    if fc & 0x0800:
        counter = take(4)
    if fc & 0x0400:
        at = (mcl or 0) & 0x0F
        length = _MAC_LENGTHS.get(at)
        if not length:
            raise DecodeError(f"AFL announces a MAC with unsupported authentication type {at}")
        mac = take(length)
    if fc & 0x1000:
        ml = int.from_bytes(take(2), "little")
    return Afl(fc, mcl, ki, counter, mac, ml), data[2 + afll :]


@dataclass(frozen=True, slots=True)
class Tpl:
    ci: int
    header: HeaderKind
    payload: PayloadKind
    access_number: int
    status: int
    config: int
    config_ext: int | None
    address: bytes | None  # long header: M(2) A(6) in the order of the link layer address
    header_bytes: bytes  # from the CI field to the end of the header (incl. config extension)

    @property
    def security_mode(self) -> int:
        return (self.config >> 8) & 0x1F if self.header != "none" else 0

    @property
    def encrypted_blocks(self) -> int:
        return (self.config >> 4) & 0x0F

    @property
    def kdf(self) -> int:
        return 0 if self.config_ext is None else (self.config_ext >> 4) & 0x03

    @property
    def meter_id(self) -> str | None:
        return None if self.address is None else self.address[2:6][::-1].hex().upper()

    @property
    def manufacturer(self) -> str | None:
        return (
            None if self.address is None else manufacturer_letters(self.address[0] | (self.address[1] << 8))
        )


def parse_tpl(data: bytes, default_access: int = 0) -> tuple[Tpl, bytes]:
    """Parse the TPL header of a CI in :data:`TPL_CI`; return it and the (maybe encrypted) rest."""
    ci = data[0]
    header, payload = TPL_CI[ci]
    if header == "none":
        return Tpl(ci, header, payload, default_access, 0, 0, None, None, data[:1]), data[1:]
    pos = 1
    address = None
    if header == "long":
        if len(data) < 13:
            raise DecodeError(f"long transport header needs 12 bytes, got {len(data) - 1}")
        ident, man, rest = data[1:5], data[5:7], data[7:9]
        address = man + ident + rest
        pos = 9
    if len(data) < pos + 4:
        raise DecodeError(f"short transport header needs 4 bytes, got {len(data) - pos}")
    access, status = data[pos], data[pos + 1]
    config = data[pos + 2] | (data[pos + 3] << 8)
    pos += 4
    config_ext = None
    if (config >> 8) & 0x1F == 7:
        if len(data) <= pos:
            raise DecodeError("security mode 7 header lacks its configuration field extension")
        config_ext = data[pos]
        pos += 1
    tpl = Tpl(ci, header, payload, access, status, config, config_ext, address, data[:pos])
    return tpl, data[pos:]


class FragmentReassembler:
    """Collects AFL fragments per meter until the last one arrives (bounded, caller-owned, no I/O)."""

    def __init__(self, max_messages: int = 256, max_bytes: int = 16384) -> None:
        self._pending: OrderedDict[str, tuple[Afl, int, bytes]] = OrderedDict()
        self._max_messages = max_messages
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, meter: str, afl: Afl, payload: bytes) -> tuple[Afl, bytes] | None:
        """Add one fragment; return the merged AFL and the whole message when it is complete."""
        pending = self._pending.pop(meter, None)
        if pending is None:
            merged, last_id, body = afl, afl.fragment_id, payload
        else:
            first, last_id, body = pending
            if afl.fragment_id != (last_id + 1) & 0xFF:
                # a lost fragment: the message cannot be completed; start again from this one
                merged, last_id, body = afl, afl.fragment_id, payload
            else:
                merged = Afl(
                    afl.fragment_control,
                    first.message_control if first.message_control is not None else afl.message_control,
                    first.key_info if first.key_info is not None else afl.key_info,
                    first.counter or afl.counter,
                    first.mac or afl.mac,
                    first.message_length if first.message_length is not None else afl.message_length,
                )
                last_id, body = afl.fragment_id, body + payload
        if not afl.more_fragments:
            return merged, body
        if len(body) > self._max_bytes:
            return None
        self._pending[meter] = (merged, last_id, body)
        while len(self._pending) > self._max_messages:
            self._pending.popitem(last=False)
        return None
