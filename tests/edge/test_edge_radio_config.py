"""Radio sticks in the collector configuration: `imd edge config-from-site` writes the [[radios]]
sections and the meter keys file (0600), `check-config` checks the keys file without printing a key,
and `reload_config` restarts the radio listener with the new sticks, meters and keys."""

from __future__ import annotations

import asyncio
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hwsim.building import SimBuilding, build_building
from hwsim.radio import RadioAir, RadioStick
from test_edge_uplink import Listener

from edge.config import load_config
from edge.daemon import Collector
from edge.radio import load_meter_keys
from imd.cli import main as imd_main
from protocols.messages import frames_topic, parse_frame_batch

FAST = {"answer_timeout_s": 0.3, "idle_probe_s": 0.4, "backoff_s": (0.1, 0.5)}


@pytest.fixture(scope="module")
def building() -> SimBuilding:
    return build_building(seed=31, apartments=2, radio="imst", radio_interval_s=0.1)  # 4 radio, 5 wired


def _site(tmp_path: Path, building: SimBuilding) -> Path:
    path = tmp_path / "site.json"
    path.write_text(building.site.model_dump_json())
    return path


def _keys(building: SimBuilding) -> dict[str, str]:
    return {m.id: m.key.upper() for m in building.site.meters if m.key}


def test_config_from_site_writes_radio_sticks_and_a_private_keys_file(
    tmp_path: Path, building: SimBuilding, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "etc" / "collector.toml"
    rc = imd_main([
        "edge", "config-from-site", str(_site(tmp_path, building)), "--port", "/dev/imd-mbus0",
        "--collector", "brf-radio-1", "--mqtt-url", "mqtt://u:pw@127.0.0.1:1883",
        "--radio-port", "/dev/ttyACM0", "--forward-interval", "600", "-o", str(out),
    ])  # fmt: skip
    assert rc == 0
    config = load_config(out)
    (radio,) = config.radios
    radio_ids = [m.id for m in building.site.meters if m.link == "wmbus"]
    assert (radio.name, radio.port, radio.type, radio.link_mode) == ("radio0", "/dev/ttyACM0", "imst", "C1T1")
    assert radio.forward_interval_s == 600
    assert sorted(radio.meters) == sorted(radio_ids)
    assert len(radio_ids) == 4
    (bus,) = config.buses  # the wired meters stay on the bus, the radio ones are not polled
    assert len(bus.meters) == len(building.site.meters) - 4
    keys_file = out.parent / "brf-radio-1-meter-keys.txt"
    assert config.meter_keys_file == keys_file
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert {k: v.hex().upper() for k, v in load_meter_keys(keys_file).items()} == _keys(building)
    printed = capsys.readouterr()
    for key in _keys(building).values():  # keys live only in the keys file
        assert key not in out.read_text().upper()
        assert key not in (printed.out + printed.err).upper()

    # check-config reads the keys file and says how many keys it holds, never a key
    assert imd_main(["edge", "check-config", str(out)]) == 0
    printed = capsys.readouterr()
    assert "1 radio stick(s), 4 meter key(s) (4 for our radio meters)" in printed.out
    assert not any(key in printed.out.upper() for key in _keys(building).values())


def test_config_from_site_radio_ports_and_keys_to_stdout(
    tmp_path: Path, building: SimBuilding, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site(tmp_path, building)
    base = ["edge", "config-from-site", str(site), "--port", "/dev/x", "--collector", "c-2",
            "--mqtt-url", "mqtt://127.0.0.1:1883"]  # fmt: skip
    # to stdout the keys need a file of their own: they are never printed
    assert imd_main(base) == 2
    assert "--keys-file" in capsys.readouterr().err
    keys_file = tmp_path / "k" / "keys.txt"
    assert imd_main([*base, "--keys-file", str(keys_file), "--radio-port", "radio0=/dev/imd-radio7"]) == 0
    printed = capsys.readouterr()
    assert 'port = "/dev/imd-radio7"' in printed.out
    assert f'meter_keys_file = "{keys_file.resolve()}"' in printed.out
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert not any(key in printed.out.upper() for key in _keys(building).values())
    # an unknown stick name is refused, naming it
    assert imd_main([*base, "--keys-file", str(keys_file), "--radio-port", "radio9=/dev/y"]) == 2
    assert "radio9" in capsys.readouterr().err
    # without --radio-port the stick gets its udev name (deploy/edge/99-imd-mbus.rules)
    assert imd_main([*base, "--keys-file", str(keys_file)]) == 0
    assert 'port = "/dev/imd-radio0"' in capsys.readouterr().out


def test_check_config_names_a_bad_keys_entry_without_printing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = "00112233445566778899AABBCCDDEEFF"
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# keys\n12345678={good}\n23456789=ABCDEF\n")  # entry 3: a short key
    config = tmp_path / "c.toml"
    config.write_text(
        'collector_id = "c-3"\ndata_dir = "data"\nmeter_keys_file = "keys.txt"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[[radios]]\nname = "radio0"\nport = "/dev/imd-radio0"\nmeters = ["12345678", "23456789"]\n'
    )
    assert imd_main(["edge", "check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "meter_keys_file" in err
    assert str(keys) in err
    assert "entry 3" in err
    assert good not in err.upper()
    assert "ABCDEF" not in err.upper()
    keys.unlink()
    assert imd_main(["edge", "check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "meter_keys_file" in err
    assert "cannot read" in err
    keys.write_text(f"12345678={good}\n")
    assert imd_main(["edge", "check-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "1 meter key(s) (1 for our radio meters)" in out
    assert good not in out.upper()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _write_config(path: Path, *, collector: str, mqtt_url: str, port: str, meters: list[str],
                  keys_file: Path, interval: int) -> None:  # fmt: skip
    ids = ", ".join(f'"{m}"' for m in meters)
    path.write_text(
        f'collector_id = "{collector}"\ndata_dir = "data"\nmeter_keys_file = "{keys_file}"\n'
        f'[mqtt]\nurl = "{mqtt_url}"\n'
        f'[schedule]\nheartbeat_s = 3600\n'
        f'[[radios]]\nname = "radio0"\nport = "{port}"\ntype = "imst"\nforward_interval_s = {interval}\n'
        f"meters = [{ids}]\n"
    )


async def test_reload_config_restarts_the_radio_listener(
    tmp_path: Path, mqtt_url: str, building: SimBuilding
) -> None:
    keys = _keys(building)
    ours = sorted(keys)
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("".join(f"{i}={keys[i]}\n" for i in ours[:1]))  # one key to start with
    path = tmp_path / "collector.toml"
    collector_id = f"test-reload-{uuid.uuid4().hex[:8]}"
    air = RadioAir(building.radio, seed=building.seed, start_within_s=0.05)
    listener = Listener(mqtt_url, [frames_topic(collector_id)])

    def decrypted() -> set[str]:
        frames = [f for p in listener.on(frames_topic(collector_id)) for f in parse_frame_batch(p).frames]
        return {str(f.address) for f in frames if f.decoded and f.decoded["decrypted"]}

    with RadioStick("radio0", stick="imst") as stick:
        air.attach(stick)
        _write_config(path, collector=collector_id, mqtt_url=mqtt_url, port=stick.port, meters=ours[:2],
                      keys_file=keys_file, interval=3600)  # fmt: skip
        collector = Collector(load_config(path), config_path=path)
        collector.radio_options = {"driver_options": FAST}
        await collector.start()
        try:
            air.start()
            first = collector.radio
            assert first is not None
            await _until(lambda: decrypted() == set(ours[:1]) and first.filter.stats.forwarded >= 2)
            assert first.filter.meters == frozenset(ours[:2])
            assert set(first.filter.keys) == set(ours[:1])

            keys_file.write_text("".join(f"{i}={keys[i]}\n" for i in ours))
            _write_config(path, collector=collector_id, mqtt_url=mqtt_url, port=stick.port, meters=ours,
                          keys_file=keys_file, interval=1)  # fmt: skip
            result = await collector.reload_config()
            second = collector.radio
            assert second is not None
            assert second is not first
            assert all(d.health.state == "stopped" for d in first.drivers)  # the old sticks are closed
            assert result["radios"] == ["radio0"]
            assert (result["radio_meters"], result["meter_keys"]) == (4, 4)
            assert second.filter.meters == frozenset(ours)
            assert set(second.filter.keys) == set(ours)
            assert collector.config.radios[0].forward_interval_s == 1
            # the new listener reconfigures the stick and forwards all four meters, decrypted
            await _until(lambda: decrypted() == set(ours) and second.drivers[0].health.state == "listening")
        finally:
            air.stop()
            await collector.stop()
            listener.close()
