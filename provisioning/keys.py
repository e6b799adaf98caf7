"""Meter keys as they arrive from manufacturers and property owners, and the collector's keys file.

Accepted inputs (:func:`load_keys` detects which):

* **CSV** with a header: ``;``, ``,`` or tab separated; the meter column is one of ``id``,
  ``meter_id``, ``meter``, ``serial``, ``serialno``, ``serial_no``, ``serial number``,
  ``mätarnummer``/``matarnummer``, ``meter number``; the key column one of ``key``, ``aes_key``,
  ``aes key``, ``dek``, ``nyckel``, ``krypteringsnyckel``, ``encryption key``. Keys are 32 hex
  digits; spaces, dashes and colons inside a key are ignored (printed key sheets group them).
  A file without a header whose rows are ``meter id, key`` is read the same way.
* **The collector's own format** (``edge.radio.load_meter_keys``): lines ``12345678=HEX32`` or
  ``12345678 HEX32`` with ``#`` comments, or a JSON object ``{"12345678": "HEX32"}``.
* **Kamstrup KEM / KEM2 files** (what Kamstrup's order and READy tools deliver), also inside a zip:
  an XML-Encryption document whose ``CipherValue`` is AES-128-CBC with the file password as key
  (UTF-8, zero padded to 16 bytes) and also as IV. The plaintext is either ``MetersInOrder`` with
  ``Meter`` elements carrying ``SerialNo`` and ``DEK`` (KEM) or ``Devices`` with ``Device``
  elements carrying ``SerialNumber`` and a ``<Name>DEK</Name><Value>...</Value>`` pair (KEM2).
  An already decrypted KEM XML is accepted as well.

Keys never appear in an error message, a log line or the survey/mapping output.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from xml.etree import ElementTree

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class KeyImportError(ValueError):
    """The key file cannot be used; the message names the file and line, never a key."""


ID_COLUMNS: Final = (
    "id", "meter_id", "meter", "serial", "serialno", "serial_no", "serial number", "serialnumber",
    "mätarnummer", "matarnummer", "meter number", "meter_number", "meterno",
)  # fmt: skip
KEY_COLUMNS: Final = (
    "key", "aes_key", "aes key", "aes-key", "dek", "nyckel", "krypteringsnyckel", "encryption key",
    "encryption_key",
)  # fmt: skip
_KEY_JUNK = re.compile(r"[\s:\-]")


def normalise_id(value: str) -> str:
    """Meter ids as the telegrams carry them: 8 digits (leading zeros kept), upper case."""
    ident = value.strip().upper()
    if ident.isdigit() and len(ident) < 8:
        ident = ident.zfill(8)
    return ident


def parse_key(value: str, where: str) -> bytes:
    text = _KEY_JUNK.sub("", value)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise KeyImportError(f"{where}: key is not 32 hex digits (AES-128)")
    return key


def load_keys(path: Path | str, password: str | None = None) -> dict[str, bytes]:
    """Keys per meter id from any accepted format (see the module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyImportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if zipfile.is_zipfile(io.BytesIO(data)):
        data = _from_zip(path, data)
    text = data.decode("utf-8-sig", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("<"):
        return parse_kem(text, password, source=str(path))
    if stripped.startswith("{"):
        try:
            items = json.loads(text)
        except ValueError:
            raise KeyImportError(f"{path}: not valid JSON") from None
        if not isinstance(items, dict):
            raise KeyImportError(f"{path}: expected a JSON object of meter id -> key")
        return {normalise_id(str(k)): parse_key(str(v), f"{path}: meter {k}") for k, v in items.items()}
    return parse_key_lines(text, source=str(path))


def _from_zip(path: Path, data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.lower().endswith((".kem", ".kem2", ".xml", ".csv")):
                return archive.read(name)
    raise KeyImportError(f"{path}: zip file without a .kem, .kem2, .xml or .csv file")


def parse_key_lines(text: str, source: str = "<keys>") -> dict[str, bytes]:
    """CSV with a header, headerless ``id,key`` rows, or the collector's ``ID=KEY`` lines."""
    lines = [ln for ln in text.splitlines() if ln.split("#", 1)[0].strip()]
    if not lines:
        raise KeyImportError(f"{source}: no keys in the file")
    if "=" in lines[0] and not any(sep in lines[0] for sep in ";,\t"):
        return _edge_format(lines, source)
    delimiter = next((sep for sep in ";\t," if sep in lines[0]), " ")
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, skipinitialspace=True))
    header = [_norm(h) for h in rows[0]]
    id_col = next((header.index(_norm(c)) for c in ID_COLUMNS if _norm(c) in header), None)
    key_col = next((header.index(_norm(c)) for c in KEY_COLUMNS if _norm(c) in header), None)
    body = rows[1:]
    first_line = 2
    if id_col is None or key_col is None:
        if len(rows[0]) >= 2 and _looks_like_key(rows[0][1]):
            id_col, key_col, body, first_line = 0, 1, rows, 1  # no header: id, key
        else:
            raise KeyImportError(
                f"{source}: header needs a meter id column ({', '.join(ID_COLUMNS[:6])}, ...) and a key "
                f"column ({', '.join(KEY_COLUMNS[:5])}, ...); got {', '.join(header)}"
            )
    keys: dict[str, bytes] = {}
    for number, row in enumerate(body, first_line):
        if len(row) <= max(id_col, key_col):
            raise KeyImportError(f"{source}: line {number}: expected a meter id and a key")
        ident = normalise_id(row[id_col])
        if not ident:
            raise KeyImportError(f"{source}: line {number}: empty meter id")
        keys[ident] = parse_key(row[key_col], f"{source}: line {number}")
    return keys


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.strip().lower())


def _looks_like_key(value: str) -> bool:
    return len(_KEY_JUNK.sub("", value)) == 32


def _edge_format(lines: list[str], source: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(lines, 1):
        ident, _, key = raw.split("#", 1)[0].strip().partition("=")
        keys[normalise_id(ident)] = parse_key(key, f"{source}: entry {number}")
    return keys


# -- Kamstrup KEM ----------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def kem_cipher_key(password: str) -> bytes:
    raw = password.encode("utf-8")
    if len(raw) > 16:
        raise KeyImportError("KEM password: at most 16 bytes")
    return raw.ljust(16, b"\0")


def decrypt_kem(cipher_b64: str, password: str) -> str:
    try:
        data = base64.b64decode(cipher_b64.strip(), validate=False)
    except ValueError:
        raise KeyImportError("KEM file: CipherValue is not base64") from None
    if not data or len(data) % 16:
        raise KeyImportError("KEM file: encrypted data is not a whole number of AES blocks")
    key = kem_cipher_key(password)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key)).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    try:
        text = plain.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyImportError("KEM file: wrong password (the data does not decrypt)") from None
    # The plaintext is padded with control characters up to the block size.
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    if "<" not in text:
        raise KeyImportError("KEM file: wrong password (the data does not decrypt)")
    return text


def parse_kem(text: str, password: str | None, source: str = "<kem>") -> dict[str, bytes]:
    try:
        # Python's expat refuses external entities and (expat >= 2.4) entity expansion bombs.
        root = ElementTree.fromstring(text)  # noqa: S314 - key files come from the meter supplier
    except ElementTree.ParseError as exc:
        raise KeyImportError(f"{source}: not valid XML: {exc}") from None
    cipher = next((e.text for e in root.iter() if _local(e.tag) == "CipherValue"), None)
    if cipher is not None:
        if not password:
            raise KeyImportError(f"{source}: the KEM file is encrypted; give its password (--kem-password)")
        plain = decrypt_kem(cipher, password)
        try:
            root = ElementTree.fromstring(plain[plain.index("<") :])  # noqa: S314 - as above
        except (ElementTree.ParseError, ValueError):
            raise KeyImportError(f"{source}: wrong password (the data does not decrypt to XML)") from None
    keys: dict[str, bytes] = {}
    for element in root.iter():
        name = _local(element.tag)
        if name not in ("Meter", "Device"):
            continue
        fields = {_local(c.tag): (c.text or "").strip() for c in element.iter()}
        ident = fields.get("SerialNo") or fields.get("SerialNumber")
        key = fields.get("DEK")
        if key is None:  # KEM2: <Name>DEK</Name><Value>...</Value> inside a parameter element
            for parameter in element.iter():
                children = {_local(c.tag): (c.text or "").strip() for c in parameter}
                if children.get("Name") == "DEK" and "Value" in children:
                    key = children["Value"]
                    break
        if not ident or not key:
            raise KeyImportError(f"{source}: a {name} element without serial number or DEK")
        keys[normalise_id(ident)] = parse_key(key, f"{source}: meter {ident}")
    if not keys:
        raise KeyImportError(f"{source}: no Meter/Device elements with keys (a KEM file?)")
    return keys


def encrypt_kem(plain_xml: str, password: str) -> str:
    """The inverse of :func:`parse_kem`'s decryption (for tests and for handing keys on securely)."""
    data = plain_xml.encode("utf-8")
    data += b"\0" * (-len(data) % 16)
    key = kem_cipher_key(password)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key)).encryptor()
    cipher = base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<EncryptedData Type="http://www.w3.org/2001/04/xmlenc#Element" '
        'xmlns="http://www.w3.org/2001/04/xmlenc#">'
        '<EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
        f"<CipherData><CipherValue>{cipher}</CipherValue></CipherData></EncryptedData>\n"
    )


# -- the collector's keys file ------------------------------------------------------------------------


def write_secret(path: Path, data: bytes | str) -> None:
    """Create or replace a file readable by its owner only (0600 from the first byte)."""
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def render_keys_file(keys: Mapping[str, bytes]) -> str:
    """The collector's format (``edge.radio.load_meter_keys``): ``ID=HEX`` lines, sorted."""
    lines = ["# IMD meter keys (AES-128). Secret: mode 0600, never copy into tickets or mail."]
    lines += [f"{ident}={key.hex().upper()}" for ident, key in sorted(keys.items())]
    return "\n".join(lines) + "\n"
