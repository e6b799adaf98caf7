"""End-to-end receipts: after a group's transaction commits, tell each collector which of its
sequences are now durably stored (``imd/v1/<collector>/receipt``, QoS 1).

A collector frees an outbox row on this receipt, not on the broker's PUBACK: the broker can
acknowledge a frame and still drop it (Mosquitto 2.0.11 does not restore ``$share/`` subscriptions
after a restart). Every frame of a committed batch counts - new, already stored (a redelivery),
or stored raw because decoding failed (the raw frame is kept, so it is delivered).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from protocols.errors import MessageError
from protocols.messages import (
    FrameBatch,
    collector_from_topic,
    encode,
    frames_topic,
    parse_frame_batch,
    receipt_topic,
    receipts_for,
)

log = logging.getLogger(__name__)


def committed_sequences(batches: Iterable[FrameBatch]) -> dict[str, set[int]]:
    """Sequences per collector of batches whose transaction has committed."""
    out: dict[str, set[int]] = {}
    for batch in batches:
        out.setdefault(batch.collector, set()).update(f.sequence for f in batch.frames)
    return out


def batches_of(messages: Sequence[tuple[str, bytes]]) -> list[FrameBatch]:
    """The valid frame batches among stored messages (the fallback path, when no parsed group is at
    hand); a message that does not parse was stored as rejected and is receipted by nothing."""
    out: list[FrameBatch] = []
    for topic, payload in messages:
        try:
            collector = collector_from_topic(topic)
            if topic != frames_topic(collector):
                continue
            batch = parse_frame_batch(payload)
        except MessageError:
            continue
        if batch.collector == collector:
            out.append(batch)
    return out


def publish_receipts(client: Any, batches: Iterable[FrameBatch], committed_at: float | None = None) -> int:
    """Queue one receipt per collector (more if its ranges exceed the bound) on the paho client.

    Never raises: a receipt that cannot be sent only makes the collector publish the frames again
    after its receipt timeout, and central de-duplicates them. Returns the receipts queued.
    """
    if client is None:
        return 0
    at = datetime.fromtimestamp(committed_at, UTC) if committed_at is not None else datetime.now(UTC)
    sent = 0
    try:
        for collector, sequences in committed_sequences(batches).items():
            for receipt in receipts_for(collector, sequences, at):
                info = client.publish(receipt_topic(collector), encode(receipt), qos=1)
                if info.rc == 0:
                    sent += 1
                else:
                    log.warning("receipt for %s not queued (rc %s)", collector, info.rc)
    except Exception:
        log.exception("publishing receipts failed; the collectors will publish those frames again")
    return sent
