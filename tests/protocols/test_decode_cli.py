"""``imd decode`` contract: JSON lines per frame, bad frames never stop the batch, exit 1 on failure."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from mbus_corpus import frame_bytes, good_frame_paths

from protocols.decode import decode_frame_json

FRAMES = [frame_bytes(p).hex() for p in good_frame_paths()]


def _run(
    argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    from imd.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    return code, capsys.readouterr().out


def test_json_lines_from_stdin_match_decode_frame_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(["decode", "--json"], "\n".join(FRAMES) + "\n", monkeypatch, capsys)
    lines = out.splitlines()
    assert len(lines) == len(FRAMES)
    for text, line in zip(FRAMES, lines, strict=True):
        obj = json.loads(line)
        assert obj == decode_frame_json(bytes.fromhex(text))
        assert obj["ok"] is True
        assert obj["link"] == "mbus"
        assert obj["error"] is None
    assert code == 0


def test_bad_frame_does_not_stop_batch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(["decode", "--json", FRAMES[0], "zz", "e5", FRAMES[1]], "", monkeypatch, capsys)
    objs = [json.loads(line) for line in out.splitlines()]
    assert [o["ok"] for o in objs] == [True, False, False, True]
    assert objs[1]["error"] == "input is not hex"
    assert "acknowledge" in objs[2]["error"]
    assert code == 1


def test_exact_decimal_digits_in_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from protocols.mbus.encode import data_record, rsp_ud_frame

    frame = rsp_ud_frame(1, "00000001", "KAM", 1, 4, 1, 0, [data_record(0x0C, 0x13, 12345678)])
    _, out = _run(["decode", "--json", frame.hex()], "", monkeypatch, capsys)
    assert '"value": 12345.678,' in out


def test_table_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(["decode"], FRAMES[0] + "\n\nnot-hex\n", monkeypatch, capsys)
    assert "quantity" in out
    assert "ERROR: input is not hex" in out
    assert code == 1


def test_subprocess_stdin_contract() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imd", "decode", "--json"],
        input=FRAMES[0] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
