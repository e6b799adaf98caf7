"""Sans-IO secondary-address search (EN 13757-3 selection with wildcards) as a tree search.

A *probe* is one selection (SND_UD to address 253 with a mask). Its answer has three outcomes:
silence (no meter matches), a clean E5 (one meter matches, confirmed and identified by a REQ_UD2
whose RSP_UD header carries the full secondary address) or a garbled answer (several meters matched
and their answers collided on the wire). A collision is resolved by going one nibble deeper.

What this does better than the classic libmbus scan:

- every probe result is used: a node whose siblings were all silent while the parent collided is a
  known collision, so it is split without probing it first;
- a clean E5 that turns out to be two meters (identical single characters can overlap cleanly) is
  caught by the REQ_UD2 check and treated as a collision, not as a meter;
- the manufacturer, version and medium fields are searched too (only needed when two meters share
  an identification number), with values A-F included, so meters with hex digits there are found
  (libmbus tries 0-9 only);
- the found meters' addresses are checked against the mask that selected them.

Nibble order: identification digits, most significant first (real installations buy meters in
batches with consecutive numbers, so dense subtrees resolve with about one probe per meter), then
medium, version and manufacturer. The manufacturer, version and medium fields are matched per byte by
the standard (``FF``/``FFFF`` is the wildcard), so they are enumerated as whole bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from protocols.mbus.link import (
    ADDRESS_NETWORK_LAYER,
    CONTROL_REQ_UD2,
    FCB_BIT,
    FCV_BIT,
    Garbage,
    LinkParser,
    LongFrame,
    SingleChar,
    select_secondary,
    short_frame,
)
from protocols.mbus.manufacturers import MANUFACTURER_NAMES, manufacturer_code
from protocols.mbus.master import Listen, Send, Timing

__all__ = ["SPLIT_POLICIES", "SearchDone", "SearchResult", "SecondarySearch", "secondary_address_of"]

WILDCARD: Final = "F" * 16
# Which free identification digit a collided node is split on: most significant first, least
# significant first, or learnt from the meters found so far (see SecondarySearch._adaptive_position).
SPLIT_POLICIES: Final = ("msb", "lsb", "adaptive")
_DEEP_DIGITS: Final = 3  # fixed id digits beyond which a collision means a batch (see adaptive)
# (first nibble, width in nibbles) of each field in the 16-character mask, in search order.
_ID_DIGITS: Final = tuple((i, 1) for i in range(8))
_BYTE_FIELDS: Final = ((14, 2), (12, 2), (8, 4))  # medium, version, manufacturer
# Only reached when two meters share identification number, medium and version: try the codes of
# known manufacturers rather than all 32767 possible ones.
_MANUFACTURER_VALUES: Final = tuple(sorted(f"{manufacturer_code(m):04X}" for m in MANUFACTURER_NAMES))


def secondary_address_of(frame: LongFrame) -> str | None:
    """The 16-hex secondary address from an RSP_UD with a long header (CI 72h/76h), else None."""
    if frame.ci not in (0x72, 0x76) or len(frame.data) < 8:
        return None
    data = frame.data
    return data[3::-1].hex().upper() + data[5:3:-1].hex().upper() + data[6:8].hex().upper()


def matches(mask: str, address: str) -> bool:
    """Does ``address`` match ``mask`` (F nibbles in the id, FF/FFFF fields elsewhere are wildcards)?"""
    for start, width in (*_ID_DIGITS, *_BYTE_FIELDS):
        part = mask[start : start + width]
        if part != "F" * width and part != address[start : start + width]:
            return False
    return True


@dataclass(slots=True)
class SearchResult:
    found: list[str] = field(default_factory=list)
    probes: int = 0  # selections sent
    reads: int = 0  # REQ_UD2 sent to identify a single answer
    collisions: int = 0
    inferred: int = 0  # probes saved: the parent collided and every sibling was silent
    notes: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def probes_per_meter(self) -> float:
        return self.probes / len(self.found) if self.found else float(self.probes)


@dataclass(frozen=True, slots=True)
class SearchDone:
    result: SearchResult
    kind: str = "done"


@dataclass(slots=True)
class _Node:
    mask: str
    level: int  # index into the field order of the next field to split
    known_collision: bool = False
    # siblings still to come share this record: did every earlier sibling stay silent?
    family: _Family | None = None


@dataclass(slots=True)
class _Family:
    remaining: int
    all_silent: bool = True


_SILENT: Final = "silent"
_ONE: Final = "one"
_COLLISION: Final = "collision"


class SecondarySearch:
    """Find every meter on the bus by secondary address. Drive like :class:`MeterReadout`."""

    def __init__(
        self,
        *,
        timing: Timing | None = None,
        baud: int = 2400,
        start_mask: str = WILDCARD,
        hex_ids: bool = False,
        max_probes: int = 100_000,
        split: str = "msb",
    ) -> None:
        self.timing = timing or Timing(baud)
        self.result = SearchResult()
        self._fields = (*_ID_DIGITS, *_BYTE_FIELDS)
        self._id_values = "0123456789ABCDE" if hex_ids else "0123456789"
        self._max_probes = max_probes
        if split not in SPLIT_POLICIES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_POLICIES)}, got {split!r}")
        self._split = split
        start = start_mask.upper()
        if len(start) != 16 or any(c not in "0123456789ABCDEF" for c in start):
            raise ValueError(f"start mask must be 16 hex characters, got {start_mask!r}")
        self._stack: list[_Node] = [_Node(start, self._first_open_level(start, 0))]
        self._node: _Node | None = None
        self._phase = ""
        self._parser = LinkParser()
        self._acks = 0
        self._garbled = False
        self._read_attempts = 0
        self._done: SearchDone | None = None

    # -- driver interface -------------------------------------------------------------------------

    def start(self) -> Send | SearchDone:
        return self._next_node()

    def feed(self, data: bytes) -> Send | Listen | SearchDone:
        if self._done is not None:
            return self._done
        self.result.bytes_received += len(data)
        for item in self._parser.feed(data):
            if isinstance(item, Garbage):
                self._garbled = True
            elif isinstance(item, SingleChar):
                self._acks += 1
            elif self._phase == "read" and isinstance(item, LongFrame) and not item.from_master:
                return self._on_read(item)
            elif getattr(item, "from_master", False):
                continue  # echo of our own request
            else:
                self._garbled = True
        # Keep listening a few character times: a second answer or collision debris may follow.
        return Listen(self.timing.idle_window(self._missing()))

    def timeout(self) -> Send | SearchDone:
        if self._done is not None:
            return self._done
        if any(isinstance(i, Garbage) for i in self._parser.flush()):
            self._garbled = True
        if self._phase == "read":
            if self._garbled:
                return self._resolve(_COLLISION)  # two meters gave the same E5; their RSP_UD collided
            self._read_attempts += 1
            if self._read_attempts <= 1:
                return self._send_read()
            node = self._node
            assert node is not None
            self.result.notes.append(f"{node.mask}: acknowledged the selection but never answered REQ_UD2")
            return self._resolve(_SILENT)
        if self._garbled or self._acks > 1:
            return self._resolve(_COLLISION)
        if self._acks == 1:
            return self._send_read()
        return self._resolve(_SILENT)

    @property
    def done(self) -> bool:
        return self._done is not None

    # -- internals ----------------------------------------------------------------------------------

    def _missing(self) -> int:
        return 0 if self._parser.pending == 0 else 5

    def _first_open_level(self, mask: str, level: int) -> int:
        """Skip fields the start mask already fixes."""
        while level < len(self._fields):
            start, width = self._fields[level]
            if mask[start : start + width] == "F" * width:
                break
            level += 1
        return level

    def _send(self, data: bytes) -> Send:
        self._parser = LinkParser()
        self._acks = 0
        self._garbled = False
        self.result.bytes_sent += len(data)
        return Send(data, self.timing.answer_window(len(data)))

    def _send_read(self) -> Send:
        self._phase = "read"
        self.result.reads += 1
        # REQ_UD2 without FCV: the meter answers telegram 1 and keeps no FCB state from the search.
        return self._send(short_frame(CONTROL_REQ_UD2 & ~(FCV_BIT | FCB_BIT), ADDRESS_NETWORK_LAYER))

    def _on_read(self, frame: LongFrame) -> Send | Listen | SearchDone:
        node = self._node
        assert node is not None
        address = secondary_address_of(frame)
        if address is None:
            self.result.notes.append(f"{node.mask}: answer without a long header (CI {frame.ci:02X}h)")
            return self._resolve(_SILENT)
        if not matches(node.mask, address):
            # Collision debris that happens to check out, or a meter that answers out of turn.
            return self._resolve(_COLLISION)
        if address not in self.result.found:
            self.result.found.append(address)
        return self._resolve(_ONE)

    def _id_position(self, mask: str) -> int | None:
        """Which free identification digit to split a collided node on (None: all are fixed)."""
        free = [i for i in range(8) if mask[i] == "F"]
        if not free:
            return None
        if self._split == "lsb":
            return free[-1]
        if self._split == "adaptive":
            return self._adaptive_position(mask, free)
        return free[0]

    def _adaptive_position(self, mask: str, free: list[int]) -> int:
        """Split where a collision this deep most likely comes from.

        Near the root a collision is expected (a bus holds up to 250 meters) and the ids spread over
        every digit: most significant first, as ``msb``. Once three digits are fixed, a random bus
        puts on average at most 250 / 1000 meters under the node, so a collision there says "a batch
        of meters with consecutive numbers": split on the least significant free digit, which
        separates up to ten consecutive ids in one level instead of walking their common prefix one
        digit at a time. Where meters under this node were already found, their digits decide: the
        least varied digit that still varies first (a batch's most significant varying digit).
        """
        fixed = [(i, c) for i, c in enumerate(mask[:8]) if c != "F"]
        known = [a for a in self.result.found if all(a[i] == c for i, c in fixed)]
        if len(known) >= 2:
            varying = [i for i in free if len({a[i] for a in known}) > 1]
            if varying:
                return min(varying, key=lambda i: (len({a[i] for a in known}), i))
        if len(fixed) >= _DEEP_DIGITS:
            return free[-1]
        return free[0]

    def _children(self, node: _Node) -> list[_Node]:
        position = self._id_position(node.mask)
        if position is not None:
            prefix, suffix = node.mask[:position], node.mask[position + 1 :]
            family = _Family(remaining=len(self._id_values))
            masks = [prefix + v + suffix for v in self._id_values]
            return [_Node(m, self._first_open_level(m, 0), family=family) for m in masks]
        if node.level >= len(self._fields):
            self.result.notes.append(f"{node.mask}: collision with every field fixed (duplicate address)")
            return []
        start, width = self._fields[node.level]
        prefix, suffix = node.mask[:start], node.mask[start + width :]
        if width == 1:
            values = list(self._id_values)
        elif width == 2:
            # Medium and version: every byte but FF (the wildcard itself), A-F nibbles included.
            values = [f"{v:02X}" for v in range(255)]
        else:
            values = list(_MANUFACTURER_VALUES)
        nxt = node.level + 1
        byte_family = _Family(remaining=len(values)) if width == 1 else None
        kids = []
        for value in values:
            mask = prefix + value + suffix
            kids.append(_Node(mask, self._first_open_level(mask, nxt), family=byte_family))
        return kids

    def _resolve(self, outcome: str) -> Send | SearchDone:
        node = self._node
        assert node is not None
        if outcome == _COLLISION:
            self.result.collisions += 1
        family = node.family
        if family is not None:
            family.remaining -= 1
            if outcome != _SILENT:
                family.all_silent = False
        if outcome == _COLLISION:
            # Depth first, lowest value first: push in reverse.
            self._stack.extend(reversed(self._children(node)))
        return self._next_node()

    def _next_node(self) -> Send | SearchDone:
        while self._stack:
            node = self._stack.pop()
            family = node.family
            if family is not None and family.remaining == 1 and family.all_silent:
                # The parent collided and every sibling was silent: this one must hold them all.
                node.known_collision = True
            self._node = node
            if node.known_collision:
                self.result.inferred += 1
                if family is not None:
                    family.remaining -= 1
                self._stack.extend(reversed(self._children(node)))
                continue
            if self.result.probes >= self._max_probes:
                self.result.notes.append(f"gave up after {self.result.probes} probes")
                break
            self._phase = "select"
            self._read_attempts = 0
            self.result.probes += 1
            return self._send(select_secondary(node.mask))
        self._done = SearchDone(self.result)
        return self._done
