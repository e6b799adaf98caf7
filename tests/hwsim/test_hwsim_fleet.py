"""Fleets: same seed, same fleet; batches are valid FrameBatch messages that reach a real broker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from hwsim.fleet import Fleet, publish

from protocols.mbus.application import decode_long_frame
from protocols.messages import FRAMES_SUBSCRIPTION, parse_frame_batch
from protocols.mqtturl import parse_mqtt_url

AT = datetime(2025, 12, 1, 6, 0, tzinfo=UTC)


def test_same_seed_same_fleet():
    a = Fleet(seed=4, properties=2, apartments=2)
    b = Fleet(seed=4, properties=2, apartments=2)
    assert [p.sim.site for p in a.properties] == [p.sim.site for p in b.properties]
    assert len({p.sim.site.property.id for p in a.properties}) == 2
    batches_a = [batch for _c, batch in a.batches(AT, batch_size=5)]
    batches_b = [batch for _c, batch in b.batches(AT, batch_size=5)]
    assert batches_a == batches_b
    frames = [f for batch in batches_a for f in batch.frames]
    assert len(frames) == 2 * (2 * 5 + 1)  # electricity meters answer two telegrams
    for frame in frames:
        decode_long_frame(frame.raw_bytes)
    sequences = [(batch.collector, f.sequence) for batch in batches_a for f in batch.frames]
    assert len(set(sequences)) == len(sequences)


def test_publish_reaches_the_broker(mqtt_url):
    fleet = Fleet(seed=2, properties=2, apartments=1)
    url = parse_mqtt_url(mqtt_url)
    received: list[bytes] = []
    subscribed = threading.Event()
    done = threading.Event()
    expected_messages = 2 * 2  # two properties, two rounds, one batch each

    def on_connect(client, userdata, flags, reason, properties):
        client.subscribe(FRAMES_SUBSCRIPTION, qos=1)

    def on_subscribe(client, userdata, mid, reasons, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        if message.topic.startswith("imd/v1/fleet2-"):
            received.append(message.payload)
            if len(received) >= expected_messages:
                done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hwsim-fleet-test")
    if url.username:
        sub.username_pw_set(url.username, url.password)
    sub.on_connect = on_connect
    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    sub.connect(url.host, url.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        result = publish(fleet, mqtt_url, start=AT, rounds=2, rate=0)
        assert result.messages == expected_messages
        assert done.wait(10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    batches = [parse_frame_batch(p) for p in received]
    assert {b.collector for b in batches} == {"fleet2-0000", "fleet2-0001"}
    assert sum(len(b.frames) for b in batches) == result.frames == 2 * 2 * 6



def test_identification_numbers_are_unique_across_the_fleet() -> None:
    """Drawn per property, 40,000 random 8-digit numbers collide (26 pairs in 200 x 50 apartments);
    a property drawn with the numbers already taken avoids them - even one with the same seed,
    whose every first draw collides."""
    from hwsim.building import build_building

    taken: set[int] = set()
    first = build_building(seed=9, apartments=20, taken=taken)
    again = build_building(seed=9, apartments=20, taken=taken)
    ours = {m.ident for m in first.meters}
    assert len(ours) == len(first.meters) == len(again.meters)
    assert ours.isdisjoint(m.ident for m in again.meters)
    assert taken == ours | {m.ident for m in again.meters}
    fleet = Fleet(seed=2024, properties=3, apartments=4)
    idents = [m.ident for p in fleet.properties for m in p.sim.meters]
    assert len(set(idents)) == len(idents)
