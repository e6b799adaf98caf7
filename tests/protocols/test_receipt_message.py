"""The ingest receipt (central -> collector): compact ranges, bounded, strict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from protocols.errors import MessageError
from protocols.messages import (
    MAX_RECEIPT_RANGES,
    IngestReceipt,
    encode,
    parse_receipt,
    receipt_topic,
    receipts_for,
    sequence_ranges,
)

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_sequences_become_merged_inclusive_ranges() -> None:
    assert sequence_ranges([7, 3, 4, 5, 9, 10, 3]) == [(3, 5), (7, 7), (9, 10)]
    assert sequence_ranges([]) == []


def test_receipt_round_trips_as_compact_json() -> None:
    (receipt,) = receipts_for("brf-1", [1, 2, 3, 10], AT)
    payload = encode(receipt)
    assert b'"ranges":[[1,3],[10,10]]' in payload
    again = parse_receipt(payload)
    assert again == receipt
    assert list(again.sequences()) == [1, 2, 3, 10]
    assert receipt_topic("brf-1") == "imd/v1/brf-1/receipt"


def test_many_gaps_are_split_over_several_receipts() -> None:
    sequences = range(0, 2 * (MAX_RECEIPT_RANGES + 5), 2)  # no two adjacent: one range each
    receipts = receipts_for("brf-1", sequences, AT)
    assert [len(r.ranges) for r in receipts] == [MAX_RECEIPT_RANGES, 5]
    assert [s for r in receipts for s in r.sequences()] == list(sequences)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"collector":"brf-1","ranges":[[5,3]],"committed_at":"2026-01-01T00:00:00Z"}', "lo <= hi"),
        (b'{"collector":"brf-1","ranges":[[-1,3]],"committed_at":"2026-01-01T00:00:00Z"}', "lo <= hi"),
        (b'{"collector":"brf-1","ranges":[],"committed_at":"2026-01-01T00:00:00Z"}', "ranges"),
        (b'{"collector":"brf 1","ranges":[[1,1]],"committed_at":"2026-01-01T00:00:00Z"}', "collector"),
        (b'{"collector":"brf-1","ranges":[[1,2,3]],"committed_at":"2026-01-01T00:00:00Z"}', "ranges"),
        (b'{"collector":"brf-1","ranges":[[1,1]]}', "committed_at"),
    ],
)
def test_bad_receipts_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        parse_receipt(payload)


def test_too_many_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="ranges"):
        IngestReceipt(collector="c", ranges=[(i * 2, i * 2) for i in range(MAX_RECEIPT_RANGES + 1)],
                      committed_at=AT)
