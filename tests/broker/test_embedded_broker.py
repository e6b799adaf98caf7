"""The embedded demo broker enforces credentials and the per-collector topic ACL."""

from __future__ import annotations

import asyncio
import threading

import paho.mqtt.client as mqtt
import pytest
from amqtt.contexts import Action

from central.embedded_broker import EmbeddedBroker, allowed, free_port


@pytest.mark.parametrize(
    ("user", "topic", "action", "expected"),
    [
        ("collector-c1", "imd/v1/c1/frames", Action.PUBLISH, True),
        ("collector-c1", "imd/v1/c1/status", Action.PUBLISH, True),
        ("collector-c1", "imd/v1/c2/frames", Action.PUBLISH, False),
        ("collector-c1", "imd/v1/c1/cmd", Action.PUBLISH, False),
        ("collector-c1", "imd/v1/c1/cmd", Action.SUBSCRIBE, True),
        ("collector-c1", "imd/v1/+/cmd", Action.SUBSCRIBE, False),
        ("collector-c1", "imd/v1/#", Action.SUBSCRIBE, False),
        ("collector-c1", "imd/v1/c1/receipt", Action.SUBSCRIBE, True),
        ("collector-c1", "imd/v1/c1/receipt", Action.RECEIVE, True),
        ("collector-c1", "imd/v1/c1/receipt", Action.PUBLISH, False),  # only central receipts
        ("collector-c1", "imd/v1/c2/receipt", Action.SUBSCRIBE, False),
        ("collector-c1", "imd/v1/+/receipt", Action.SUBSCRIBE, False),
        ("central", "imd/v1/c2/cmd", Action.PUBLISH, True),
        ("central", "imd/v1/c2/receipt", Action.PUBLISH, True),
        ("central", "$share/ingest/imd/v1/+/frames", Action.SUBSCRIBE, True),
        ("central", "other/topic", Action.PUBLISH, False),
        (None, "imd/v1/c1/frames", Action.PUBLISH, False),
        ("stranger", "imd/v1/c1/frames", Action.PUBLISH, False),
    ],
)
def test_acl(user: str | None, topic: str, action: Action, expected: bool) -> None:
    assert allowed(user, topic, action) is expected


def test_broker_refuses_bad_password_and_foreign_topics() -> None:
    port = free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    broker = EmbeddedBroker("127.0.0.1", port, {"central": "pw-central", "collector-c1": "pw-c1"})
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(timeout=10)
    received: list[tuple[str, bytes]] = []
    got_two = threading.Event()
    results: dict[str, list[object]] = {}
    clients = []
    try:
        def client(user: str, password: str) -> mqtt.Client:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{password}")
            c.username_pw_set(user, password)
            connected = threading.Event()
            results[f"{user}:{password}"] = []

            def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
                results[f"{user}:{password}"].append(rc)
                connected.set()

            c.on_connect = on_connect
            c.connect("127.0.0.1", port)
            c.loop_start()
            clients.append(c)
            assert connected.wait(5)
            return c

        central = client("central", "pw-central")

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            received.append((msg.topic, msg.payload))
            if len(received) >= 2:
                got_two.set()

        central.on_message = on_message
        central.subscribe("imd/v1/+/frames", 1)[0]
        collector = client("collector-c1", "pw-c1")
        client("collector-c1", "wrong")
        assert str(results["collector-c1:wrong"][0]) == "Not authorized"
        assert str(results["collector-c1:pw-c1"][0]) == "Success"
        import time

        time.sleep(0.3)  # let the subscription settle before publishing
        collector.publish("imd/v1/c2/frames", b"forged", qos=1).wait_for_publish(5)
        collector.publish("imd/v1/c1/frames", b"own", qos=1).wait_for_publish(5)
        central.publish("imd/v1/c1/frames", b"from-central", qos=1).wait_for_publish(5)
        assert got_two.wait(5)
        assert sorted(received) == [("imd/v1/c1/frames", b"from-central"), ("imd/v1/c1/frames", b"own")]
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
