"""Provisioning parts: broker credentials, key files, mapping, bundle, central client, report."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
import tomllib
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from amqtt.contexts import Action
from hwsim.building import build_building

from central.embedded_broker import allowed
from edge.config import load_config
from edge.radio import load_meter_keys
from provisioning import broker, keys
from provisioning.bundle import BundleOptions, RadioPort, build_bundle, extract_bundle, verify_bundle
from provisioning.central_client import CentralClient, CentralError, RegistrationUnsupportedError
from provisioning.commission import CommissionResult, MeterOutcome, commission
from provisioning.mapping import (
    MappingError,
    MeterMapping,
    build_mapping,
    interactive_assign,
    load_assignments,
    mapped_site,
    registration_body,
)
from provisioning.report import ReportInfo, render_html, render_pdf
from provisioning.survey import FoundMeter, RadioSurvey, SurveyResult

KEY_A = bytes(range(16))
KEY_HEX = KEY_A.hex().upper()


# -- broker --------------------------------------------------------------------------------------------


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        pytest.skip("mosquitto_passwd is not installed (package mosquitto)")
    path = tmp_path / "passwd"
    subprocess.run([binary, "-c", "-b", str(path), "collector-x1", "s3cret-Pässword"], check=True)
    user, hashed = path.read_text().strip().split(":", 1)
    assert user == "collector-x1"
    _, _seven, iterations, salt_b64, _ = hashed.split("$")
    import base64

    ours = broker.mosquitto_hash(
        "s3cret-Pässword", salt=base64.b64decode(salt_b64), iterations=int(iterations)
    )
    assert ours == hashed  # byte-identical to the real tool's line
    assert broker.mosquitto_verify("s3cret-Pässword", hashed)
    assert not broker.mosquitto_verify("wrong", hashed)
    line = broker.password_line("x1", "pw")
    assert line.startswith("collector-x1:$7$101$")
    assert line.endswith("\n")
    assert broker.mosquitto_verify("pw", line.strip().split(":", 1)[1])


def test_acl_block_grants_exactly_what_the_embedded_broker_allows() -> None:
    block = broker.acl_block("brf-1")
    rules = [ln.split(" ", 2)[1:] for ln in block.splitlines() if ln.startswith("topic ")]
    assert "user collector-brf-1" in block
    topics = [
        "imd/v1/brf-1/frames",
        "imd/v1/brf-1/status",
        "imd/v1/brf-1/cmd/result",
        "imd/v1/brf-1/cmd",
        "imd/v1/brf-1/receipt",
        "imd/v1/brf-2/frames",
        "imd/v1/brf-2/receipt",
        "imd/v1/brf-2/cmd",
        "imd/v1/+/frames",
        "imd/v1/#",
        "other/topic",
    ]
    for topic in topics:
        for action, access in ((Action.PUBLISH, "write"), (Action.SUBSCRIBE, "read")):
            granted = [access, topic] in rules
            assert granted == allowed("collector-brf-1", topic, action), (topic, action)
    with pytest.raises(ValueError):
        broker.collector_username("bad id/with slash")


def test_central_accepts_the_acl_block_and_refuses_a_collector_writing_receipts() -> None:
    from central.api.registration import MqttAccount, _check_mqtt

    block = broker.acl_block("brf-1")
    assert "topic read imd/v1/brf-1/receipt" in block
    assert _check_mqtt("brf-1", MqttAccount(username="collector-brf-1", acl=block)) == []
    for line in ("topic write imd/v1/brf-1/receipt", "topic readwrite imd/v1/brf-1/receipt",
                 "topic imd/v1/brf-1/receipt"):
        forged = MqttAccount(username="collector-brf-1", acl=block + line + "\n")
        (reason,) = _check_mqtt("brf-1", forged)
        assert "only central writes receipts" in reason


# -- keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"Serial No;AES Key\n12345678;{KEY_HEX}\n",
        f"mätarnummer,nyckel\n12345678,{KEY_A.hex()}\n",
        f"meter_id\tkey\n12345678\t{' '.join(KEY_HEX[i : i + 4] for i in range(0, 32, 4))}\n",
        f"12345678;{KEY_HEX}\n",  # no header
        f"# comment\n12345678={KEY_HEX}\n",  # the collector's own format
        json.dumps({"12345678": KEY_HEX}),
    ],
)
def test_key_files_in_every_accepted_format(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys.csv"
    path.write_text(text, encoding="utf-8")
    assert keys.load_keys(path) == {"12345678": KEY_A}


def test_bad_key_error_names_the_line_not_the_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.csv"
    path.write_text("id;key\n12345678;00112233445566778899AABBCCDDEE\n")  # 31 hex digits
    with pytest.raises(keys.KeyImportError) as info:
        keys.load_keys(path)
    assert "line 2" in str(info.value)
    assert "00112233" not in str(info.value)


KEM_PLAIN = (
    '<?xml version="1.0" encoding="utf-8"?><MetersInOrder><Meter><MeterName>MC21</MeterName>'
    f"<SerialNo>1234567</SerialNo><DEK>{KEY_HEX}</DEK></Meter>"
    f"<Meter><SerialNo>87654321</SerialNo><DEK>{'11' * 16}</DEK></Meter></MetersInOrder>"
)
KEM2_PLAIN = (
    "<Devices><Device><ShortName>MC403</ShortName><SerialNumber>12345678</SerialNumber>"
    f"<Parameters><Parameter><Name>DEK</Name><Value>{KEY_HEX}</Value></Parameter></Parameters>"
    "</Device></Devices>"
)


def test_kamstrup_kem_encrypted_zipped_and_kem2(tmp_path: Path) -> None:
    kem = tmp_path / "order.kem"
    kem.write_text(keys.encrypt_kem(KEM_PLAIN, "Kund1234"))
    got = keys.load_keys(kem, "Kund1234")
    assert got == {"01234567": KEY_A, "87654321": b"\x11" * 16}
    with pytest.raises(keys.KeyImportError, match="password"):
        keys.load_keys(kem, None)
    with pytest.raises(keys.KeyImportError, match="wrong password"):
        keys.load_keys(kem, "Wrong123")
    zipped = tmp_path / "order.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("x/order.kem", kem.read_text())
    assert keys.load_keys(zipped, "Kund1234") == got
    kem2 = tmp_path / "order.kem2"
    kem2.write_text(keys.encrypt_kem(KEM2_PLAIN, "pw"))
    assert keys.load_keys(kem2, "pw") == {"12345678": KEY_A}


def test_keys_file_is_0600_and_readable_by_the_collector(tmp_path: Path) -> None:
    path = tmp_path / "meter-keys.txt"
    keys.write_secret(path, keys.render_keys_file({"12345678": KEY_A}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_meter_keys(path) == {"12345678": KEY_A}


# -- mapping -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> object:
    return build_building(seed=5, apartments=4, radio="imst", neighbours=2, radio_interval_s=1.0)


def _survey_of(sim: object, *, drop: str | None = None, extra: FoundMeter | None = None) -> SurveyResult:
    from datetime import timedelta

    from provisioning.survey import Expected, finish

    site = sim.site  # type: ignore[attr-defined]
    rs = RadioSurvey({})
    at = datetime.now(UTC) - timedelta(hours=1)
    for rm in sim.radio + sim.neighbours:  # type: ignore[attr-defined]
        rs.add("radio0", rm.telegram(at), rm.rssi_dbm, rm.link_mode)
    wired = [
        FoundMeter(
            m.id, m.manufacturer, m.version, m.device_type, "mbus", m.bus, address=str(m.primary_address)
        )
        for m in site.meters
        if m.link == "mbus" and m.id != drop
    ]
    result = SurveyResult(meters=wired + list(rs.meters.values()) + ([extra] if extra else []))
    return finish(result, Expected(site), ["mbus", "wmbus"])


def test_mapping_flags_found_not_expected_and_expected_not_found(small: object) -> None:
    site = small.site  # type: ignore[attr-defined]
    wired = [m for m in site.meters if m.link == "mbus"]
    stranger = FoundMeter("99999999", "ABB", 2, 2, "mbus", "mbus0", address="200")
    survey = _survey_of(small, drop=wired[0].id, extra=stranger)
    assert {m.classification for m in survey.meters} == {"ours", "unknown", "neighbour"}
    assert [e["id"] for e in survey.expected_not_found] == [wired[0].id]
    site_keys = {m.id: bytes.fromhex(m.key) for m in site.meters if m.key}
    radio = [m for m in site.meters if m.link == "wmbus"]
    wrong = dict(site_keys, **{radio[0].id: b"\x00" * 16})
    mapping = build_mapping(site, survey, keys=wrong)
    assert [e["id"] for e in mapping.found_not_expected] == ["99999999"]
    assert [e["id"] for e in mapping.expected_not_found] == [wired[0].id]
    states = {m.id: m.key for m in mapping.meters}
    assert states[radio[0].id] == "wrong"
    assert all(states[m.id] == "ok" for m in radio[1:])
    assert all(states[m.id] == "not needed" for m in wired)
    assert len(mapping.meters) == len(site.meters)  # neighbours and the stranger are not mapped
    # keys missing entirely
    missing = build_mapping(
        site.model_copy(update={"meters": [m.model_copy(update={"key": None}) for m in site.meters]}), survey
    )
    assert {m.key for m in missing.meters if m.link == "wmbus"} == {"missing"}
    # the document round-trips and never carries a key
    text = mapping.to_json()
    assert KEY_HEX not in text
    assert radio[1].key not in text
    assert MeterMapping.from_json(text).as_dict() == mapping.as_dict()


def test_assignment_csv_by_object_number_and_lagenhetsnummer(small: object) -> None:
    site = small.site  # type: ignore[attr-defined]
    apts = site.apartments
    m0, m1, main = site.meters[0], site.meters[1], site.meters[-1]
    stranger = FoundMeter("99999999", "ABB", 2, 2, "mbus", "mbus0", address="200")
    text = (
        "objektsnummer;lägenhetsnummer;mätarnummer;medium\n"
        f"{apts[1].object_number};;{m0.id};\n"
        f";{apts[2].number};{m1.id};\n"
        f";;{main.id};\n"
        f"{apts[3].object_number};;99999999;electricity\n"
    )
    assignments = load_assignments(text, site)
    survey = _survey_of(small, extra=stranger)
    mapping = build_mapping(site, survey, assignments=assignments)
    by_id = {m.id: m for m in mapping.meters}
    assert by_id[m0.id].apartment == apts[1].object_number
    assert by_id[m0.id].source == "csv"
    assert by_id[m1.id].apartment == apts[2].object_number
    assert by_id[main.id].apartment is None
    assert by_id[main.id].meter_point.startswith("main")
    assert by_id["99999999"].apartment == apts[3].object_number
    assert by_id["99999999"].medium == "electricity"
    assert not mapping.found_not_expected
    with pytest.raises(MappingError, match="line 2: no apartment with object number"):
        load_assignments(f"objekt;id\nnope;{m0.id}\n", site)
    with pytest.raises(MappingError, match="header needs"):
        load_assignments("foo;bar\n1;2\n", site)
    with pytest.raises(MappingError, match="already assigned"):
        load_assignments(
            f"objekt;id\n{apts[0].object_number};{m0.id}\n{apts[1].object_number};{m0.id}\n", site
        )


def test_interactive_assignment(small: object) -> None:
    site = small.site  # type: ignore[attr-defined]
    stranger = FoundMeter("99999999", "ABB", 2, 2, "mbus", "mbus0", address="200")
    survey = _survey_of(small, extra=stranger)
    answers = iter(["9999", site.apartments[0].number])  # first an unknown number, then a good one
    said: list[str] = []
    out = interactive_assign(site, survey, [], ask=lambda prompt: next(answers), say=said.append)
    assert [(a.meter_id, a.apartment, a.source) for a in out] == [
        ("99999999", site.apartments[0].object_number, "terminal")
    ]
    assert said
    assert "9999" in said[0]


# -- bundle ---------------------------------------------------------------------------------------------


def test_bundle_archive_checksum_modes_and_config(tmp_path: Path, small: object) -> None:
    site = small.site  # type: ignore[attr-defined]
    survey = _survey_of(small)
    site_keys = {m.id: bytes.fromhex(m.key) for m in site.meters if m.key}
    mapping = build_mapping(site, survey, keys=site_keys)
    options = BundleOptions(
        collector_id="kv-1",
        mqtt_url="mqtts://mqtt.example.se:8883",
        ports={"mbus0": "/dev/ttyUSB0"},
        radios={"radio0": RadioPort("/dev/ttyUSB1", "amber", "T1")},
        data_dir="data",
    )
    bundle = build_bundle(mapping, site_keys, options, tmp_path / "out")
    assert stat.S_IMODE(bundle.archive.stat().st_mode) == 0o600
    assert verify_bundle(bundle.archive) == bundle.sha256
    assert bundle.checksum_file.read_text() == f"{bundle.sha256}  {bundle.archive.name}\n"
    if shutil.which("sha256sum"):
        subprocess.run(
            ["sha256sum", "-c", bundle.checksum_file.name],
            cwd=bundle.checksum_file.parent,
            check=True,
            capture_output=True,
        )
    with tarfile.open(bundle.archive) as tar:
        modes = {m.name.split("/", 1)[-1]: m.mode for m in tar.getmembers()}
    for secret in ("collector.toml", "meter-keys.txt", "broker/mosquitto-passwd"):
        assert modes[secret] == 0o600
    for name in (
        "deploy/edge/imd-edge.service",
        "deploy/edge/install-raspberry-pi.sh",
        "install.sh",
        "broker/mosquitto-acl.conf",
        "manifest.json",
        "mapping.json",
    ):
        assert name in modes
    target = extract_bundle(bundle.archive, tmp_path / "pi")
    assert stat.S_IMODE((target / "collector.toml").stat().st_mode) == 0o600
    config = load_config(target / "collector.toml")
    assert config.collector_id == "kv-1"
    broker_url = config.mqtt.broker()
    assert broker_url.username == "collector-kv-1"
    assert broker_url.tls
    password = broker_url.password
    assert password
    assert len(password) >= 24
    passwd_line = (target / "broker" / "mosquitto-passwd").read_text()
    assert broker.mosquitto_verify(password, passwd_line.strip().split(":", 1)[1])
    manifest = (target / "manifest.json").read_text()
    assert password not in manifest
    assert password not in (target / "mapping.json").read_text()
    wired = {m.primary_address for m in mapping.meters if m.link == "mbus"}
    assert {m.primary for m in config.buses[0].meters} == wired
    assert config.radios[0].type == "amber"
    assert config.radios[0].link_mode == "T1"
    assert set(config.radios[0].meters) == {m.id for m in mapping.meters if m.link == "wmbus"}
    assert config.meter_keys_file is not None
    assert load_meter_keys(config.meter_keys_file) == dict(site_keys.items())
    assert json.loads(manifest)["files"]["collector.toml"]
    # a second bundle for the same collector gets a different password
    again = build_bundle(mapping, site_keys, options, tmp_path / "out2")
    with tarfile.open(again.archive) as tar:
        handle = tar.extractfile("kv-1/collector.toml")
        assert handle is not None
        assert tomllib.loads(handle.read().decode())["mqtt"]["password"] != password
    # tampering is detected
    data = bytearray(bundle.archive.read_bytes())
    data[-40] ^= 1
    bundle.archive.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match"):
        verify_bundle(bundle.archive)


# -- central client and commissioning -----------------------------------------------------------------


def _fake_central(
    meters: list[dict[str, object]], frames: list[dict[str, object]], *, registration: bool = True
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path == "/api/auth/token":
            assert b"password=pw" in request.content
            return httpx.Response(200, json={"access_token": "tok", "token_type": "bearer"})
        assert request.headers["authorization"] == "Bearer tok"
        if path.endswith("/registration"):
            if not registration:
                return httpx.Response(404, json={"detail": "Not Found"})
            body = json.loads(request.content)
            return httpx.Response(
                201,
                json={
                    "collector": body["collector"]["id"],
                    "property": body["property"],
                    "meters_created": len(body["meters"]),
                    "meters_updated": 0,
                    "meter_points_created": 0,
                    "keys_set": 1,
                },
            )
        if path.endswith("/commands"):
            return httpx.Response(202, json={"id": "c1", "command": "read_all"})
        if path == "/api/meters":
            return httpx.Response(200, json=meters)
        if path == "/api/frames":
            status = request.url.params.get("status")
            return httpx.Response(200, json=[f for f in frames if f["status"] == status])
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(handler), seen


def test_registration_contract_and_fallback(small: object) -> None:
    site = small.site  # type: ignore[attr-defined]
    site_keys = {m.id: bytes.fromhex(m.key) for m in site.meters if m.key}
    mapping = build_mapping(site, _survey_of(small), keys=site_keys)
    body = registration_body(mapping, "kv-1", site_keys, broker={"username": "collector-kv-1"})
    assert body["property"] == site.property.id
    assert body["collector"]["mqtt"]["username"] == "collector-kv-1"
    assert {m["id"] for m in body["meters"] if "key" in m} == set(site_keys)
    transport, seen = _fake_central([], [])
    with CentralClient("http://central", transport=transport) as client:
        client.login("tech", "pw")
        answer = client.register(body)
    assert answer["meters_created"] == len(site.meters)
    assert seen[-1].method == "POST"
    assert seen[-1].url.path == "/api/collectors/kv-1/registration"
    transport, _ = _fake_central([], [], registration=False)
    with CentralClient("http://central", token="tok", transport=transport) as client:
        with pytest.raises(RegistrationUnsupportedError):
            client.register(body)
        with pytest.raises(CentralError, match="HTTP 404"):
            client._check(client._http.get("/api/nothing"), "x")
    # the fallback: the mapped site export imports into central unchanged
    fallback = mapped_site(site, mapping, site_keys)
    assert {m.id: m.apartment for m in fallback.meters} == {m.id: m.apartment for m in site.meters}
    assert {m.id for m in fallback.meters if m.key} == set(site_keys)


def test_commission_names_the_cause_of_each_missing_meter(small: object) -> None:
    site = small.site  # type: ignore[attr-defined]
    mapping = build_mapping(site, _survey_of(small))
    wired = [m for m in mapping.meters if m.link == "mbus"]
    radio = [m for m in mapping.meters if m.link == "wmbus"]
    now = datetime.now(UTC).isoformat()
    dead, wrong, unheard, garbled, unknown = wired[0], radio[0], radio[1], wired[1], wired[2]
    skip = {dead.id, wrong.id, unheard.id, garbled.id, unknown.id}
    meters = [
        {
            "id": m.id,
            "manufacturer": m.manufacturer,
            "last_reading_at": None if m.id in skip else now,
            "values": [{"value": "12.5", "unit": "kWh"}],
        }
        for m in mapping.meters
        if m.id != unknown.id
    ]
    frames = [
        {
            "status": "no_answer",
            "port": dead.bus,
            "address": dead.address,
            "reason": "no answer",
            "received_at": now,
        },
        {
            "status": "failed",
            "port": wrong.bus,
            "address": wrong.id,
            "received_at": now,
            "reason": f"collector: decryption failed for meter {wrong.id} (wrong key?): MAC mismatch",
        },
        {
            "status": "failed",
            "port": garbled.bus,
            "address": garbled.address,
            "received_at": now,
            "reason": "collision: garbled answer",
        },
    ]
    transport, seen = _fake_central(meters, frames)
    progress: list[tuple[int, int]] = []
    with CentralClient("http://central", token="tok", transport=transport) as client:
        result = commission(
            client,
            mapping,
            "kv-1",
            timeout_s=0.3,
            poll_s=0.1,
            progress=lambda d, t, _e: progress.append((d, t)),
        )
    causes = {m.id: m.cause for m in result.missing()}
    assert causes == {
        dead.id: "no answer",
        wrong.id: "wrong key",
        unheard.id: "not heard",
        garbled.id: "collision",
        unknown.id: "not registered",
    }
    assert progress[-1] == (len(mapping.meters) - 5, len(mapping.meters))
    assert result.read_now.startswith("read_all sent")
    assert any(r.url.path == "/api/collectors/kv-1/commands" for r in seen)
    assert not result.ok
    # the report: HTML and PDF list every meter and the visits
    info = ReportInfo(technician="Anna Tekniker", date=datetime(2025, 3, 1, 10, 0, tzinfo=UTC))
    page = render_html(result, info)
    assert "Anna Tekniker" in page
    assert site.property.id in page
    assert page.count("<tr") == len(mapping.meters) + 1
    assert "Meters that need a visit (5)" in page
    assert "wrong key" in page
    pdf = render_pdf(result, info)
    assert pdf.startswith(b"%PDF-1.4")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert b"Installation report" in pdf
    assert b"wrong key" in pdf
    assert render_pdf(result, info) == pdf  # deterministic


def test_report_from_saved_result_via_cli(tmp_path: Path) -> None:
    from imd.cli import main

    result = CommissionResult("kv-1", "P-1", "Prop", "2025-03-01T10:00:00+00:00", "2025-03-01T10:05:00+00:00")
    result.meters = [
        MeterOutcome(
            "12345678",
            "KAM",
            "mbus",
            "mbus0",
            "1",
            "01-1101",
            "1101",
            "heat",
            "heat",
            ok=True,
            first_reading_at="2025-03-01T10:01:00+00:00",
        )
    ]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result.as_dict()))
    code = main(
        [
            "provision",
            "report",
            str(path),
            "--technician",
            "Bo",
            "--html",
            str(tmp_path / "r.html"),
            "--pdf",
            str(tmp_path / "r.pdf"),
        ]
    )
    assert code == 0
    assert "12345678" in (tmp_path / "r.html").read_text()
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


def test_no_secret_in_cli_output_of_bundle(
    tmp_path: Path, small: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from imd.cli import main

    site = small.site  # type: ignore[attr-defined]
    site_path = tmp_path / "site.json"
    site_path.write_text(site.model_dump_json())
    keys_path = tmp_path / "keys.csv"
    keys_path.write_text("id;key\n" + "".join(f"{m.id};{m.key}\n" for m in site.meters if m.key))
    assert (
        main(
            [
                "provision",
                "map",
                "--site",
                str(site_path),
                "--keys",
                str(keys_path),
                "-o",
                str(tmp_path / "mapping.json"),
                "--keys-out",
                str(tmp_path / "k.txt"),
            ]
        )
        == 0
    )
    assert stat.S_IMODE(os.stat(tmp_path / "k.txt").st_mode) == 0o600
    assert (
        main(
            [
                "provision",
                "bundle",
                "--mapping",
                str(tmp_path / "mapping.json"),
                "--keys",
                str(tmp_path / "k.txt"),
                "--collector",
                "kv-9",
                "--mqtt-url",
                "mqtt://127.0.0.1:1883",
                "-o",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    target = extract_bundle(tmp_path / "b" / "kv-9-bundle.tar.gz", tmp_path / "x")
    password = tomllib.loads((target / "collector.toml").read_text())["mqtt"]["password"]
    for text in (out.out, out.err):
        assert password not in text
        assert all(m.key not in text and m.key.lower() not in text for m in site.meters if m.key)
    assert "\nbundle: " in out.out
    assert "MQTT user collector-kv-9" in out.out


# -- wired survey on a real pseudo-terminal ------------------------------------------------------------


def test_wired_survey_secondary_search_and_primary_scan() -> None:
    from hwsim.segment import MbusSegment

    from edge.bus import SerialBus
    from provisioning.survey import Expected, Progress, finish, survey_wired

    sim = build_building(seed=7, apartments=1, main_meter=False)
    site = sim.site
    rows: list[FoundMeter] = []
    steps: list[tuple[int, int]] = []

    class Recorder(Progress):
        def row(self, meter: FoundMeter) -> None:
            rows.append(meter)

        def step(self, text: str, done: int, total: int) -> None:
            steps.append((done, total))

    segment = MbusSegment(sim.buses()["mbus0"]).start()
    try:
        # 9600 baud: the simulator answers at any speed and the answer windows are shorter
        # a wide margin: this checks the survey, not the timing, and the test host may be busy
        with SerialBus(segment.port, 9600, margin_s=0.1) as bus:
            found = survey_wired(
                bus, "mbus0", mode="both", addresses=range(3), attempts=2, progress=Recorder()
            )
    finally:
        segment.stop()
    assert {(m.id, m.manufacturer, m.version, m.device_type) for m in found} == {
        (m.id, m.manufacturer, m.version, m.device_type) for m in site.meters
    }
    assert rows == found  # every meter shown once as it was found
    by_id = {m.id: m for m in found}
    for meter in site.meters:
        address = by_id[meter.id].address or ""
        assert address.endswith(meter.secondary_address)
        if meter.primary_address in (1, 2):
            assert address == f"{meter.primary_address} / {meter.secondary_address}"
    assert steps[-1] == (3, 3)
    result = finish(SurveyResult(meters=found), Expected(site), ["mbus"])
    assert result.counts()["ours"] == len(site.meters)
    assert not result.expected_not_found
    assert result.to_csv().count("\n") == len(site.meters) + 1
    assert SurveyResult.from_json(result.to_json()).as_dict() == result.as_dict()
