"""Collector configuration: valid files load, every error names the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge import cli as edge_cli
from edge.config import ConfigError, load_config

GOOD = """
collector_id = "brf-test-1"
data_dir = "data"

[mqtt]
url = "mqtt://collector:hunter2@broker.example:1883"

[[buses]]
name = "mbus0"
port = "/dev/ttyUSB0"
baud = 2400
meters = [{ primary = 1 }, { secondary = "12345678ffffffff", name = "heat 1102" }]

[schedule]
interval_s = 60
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def test_good_config_loads_with_relative_paths_resolved(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert config.collector_id == "brf-test-1"
    assert config.data_dir == tmp_path.resolve() / "data"
    assert config.outbox_path == tmp_path.resolve() / "data" / "outbox.sqlite"
    bus = config.bus("mbus0")
    assert [m.address for m in bus.meters] == ["1", "12345678FFFFFFFF"]
    assert config.schedule.poll_cron == "0 2 * * *"
    assert config.schedule.interval_s == 60
    broker = config.mqtt.broker()
    assert (broker.host, broker.port, broker.username, broker.password) == (
        "broker.example", 1883, "collector", "hunter2"
    )
    assert "hunter2" not in repr(config)
    assert 0 <= config.poll_jitter_offset_s() < config.schedule.jitter_s
    # Deterministic per collector: the same id gets the same slot every start.
    assert config.poll_jitter_offset_s() == load_config(_write(tmp_path, GOOD)).poll_jitter_offset_s()


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (('baud = 2400', 'baud = 2500'), "buses[0].baud", "baud must be one of"),
        (('{ primary = 1 }', '{ primary = 251 }'), "buses[0].meters[0].primary", "less than or equal to 250"),
        (('12345678ffffffff', '1234'), "buses[0].meters[1].secondary", "16 hex digits"),
        (('{ primary = 1 }', '{ primary = 1, secondary = "12345678FFFFFFFF" }'), "buses[0].meters[0]",
         "exactly one"),
        (('mqtt://collector', 'http://collector'), "mqtt.url", "mqtt:// or mqtts://"),
        (('interval_s = 60', 'poll_cron = "0 25 * * *"'), "schedule.poll_cron", "poll_cron"),
        (('brf-test-1', 'bad id!'), "collector_id", "pattern"),
        (('interval_s = 60', 'intervall_s = 60'), "schedule.intervall_s", "Extra inputs"),
        (('1883"\n', '1883"\ndelete_after = "ack"\n'), "mqtt.delete_after", "'receipt' or 'puback'"),
        (('1883"\n', '1883"\nreceipt_timeout_s = 1\n'), "mqtt.receipt_timeout_s",
         "greater than or equal to 5"),
    ],
)
def test_errors_name_file_field_and_reason(
    tmp_path: Path, change: tuple[str, str], field: str, reason: str
) -> None:
    assert change[0] in GOOD
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{field}:" in message
    assert reason in message
    assert "hunter2" not in message


def test_outbox_rows_wait_for_central_receipt_unless_told_otherwise(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert (config.mqtt.delete_after, config.mqtt.receipt_timeout_s) == ("receipt", 300.0)
    puback = GOOD.replace('1883"\n', '1883"\ndelete_after = "puback"\n')
    assert load_config(_write(tmp_path, puback)).mqtt.delete_after == "puback"


def test_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "collector_id = \n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_missing_mqtt_section_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt: Field required"):
        load_config(_write(tmp_path, 'collector_id = "x"\n'))


def _run_cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    edge_cli.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(["edge", "check-config", str(_write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr()
    assert "brf-test-1" in out.out
    assert "hunter2" not in out.out + out.err
    assert _run_cli(["edge", "check-config", str(_write(tmp_path, GOOD.replace("2400", "1")))]) == 2
    out = capsys.readouterr()
    assert "buses[0].baud" in out.err
    assert "hunter2" not in out.out + out.err


def test_config_from_site(tmp_path: Path) -> None:
    site = {
        "property": {"id": "p1", "name": "BRF Test"},
        "buildings": [{"id": "b1", "name": "Hus 1"}],
        "apartments": [{"object_number": "1001", "number": "1101", "building": "b1", "area_m2": "55.5"}],
        "meters": [
            {"id": "12345678", "manufacturer": "KAM", "version": 1, "device_type": 4, "medium": "heat",
             "apartment": "1001", "primary_address": 7},
            {"id": "23456789", "manufacturer": "ABB", "version": 2, "device_type": 2, "medium": "electricity",
             "apartment": "1001"},
            {"id": "34567890", "manufacturer": "KAM", "version": 1, "device_type": 7, "medium": "cold_water",
             "link": "wmbus", "bus": "radio0"},
        ],
    }
    site_path = tmp_path / "site.json"
    site_path.write_text(json.dumps(site))
    out = tmp_path / "c.toml"
    rc = _run_cli([
        "edge", "config-from-site", str(site_path), "--port", "/dev/pts/9", "--collector", "demo-1",
        "--mqtt-url", "mqtt://u:pw@127.0.0.1:1883", "--interval", "30", "-o", str(out),
    ])
    assert rc == 0
    config = load_config(out)
    assert config.collector_id == "demo-1"
    assert config.schedule.interval_s == 30
    (bus,) = config.buses
    assert bus.port == "/dev/pts/9"
    assert [m.address for m in bus.meters] == ["7", "23456789" + "0442" + "02" + "02"]
