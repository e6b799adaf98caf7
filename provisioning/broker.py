"""The broker side of a collector's MQTT account: a Mosquitto password-file line and its ACL block.

The password line is hashed exactly as ``mosquitto_passwd`` (Mosquitto 2.x, default
``-H sha512-pbkdf2``) writes it: ``user:$7$<iterations>$<base64 salt>$<base64 hash>`` with PBKDF2-
HMAC-SHA512, 101 iterations, a 12-byte random salt and a 64-byte derived key (verified against the
real binary in ``tests/provisioning``). The ACL gives the collector account ``collector-<id>`` the
same rights as ``central.embedded_broker.allowed``: publish ``frames``, ``status`` and
``cmd/result`` under ``imd/v1/<id>/``, subscribe to ``imd/v1/<id>/cmd`` and ``imd/v1/<id>/receipt``,
nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

from protocols.messages import COLLECTOR_ID_RE, TOPIC_ROOT

COLLECTOR_PREFIX: Final = "collector-"  # the account naming rule of central/embedded_broker.py
PBKDF2_ITERATIONS: Final = 101  # mosquitto_passwd's default (src/password_mosq.h PW_DEFAULT_ITERATIONS)
SALT_BYTES: Final = 12


def collector_username(collector_id: str) -> str:
    if not COLLECTOR_ID_RE.fullmatch(collector_id):
        raise ValueError(f"collector id {collector_id!r} does not match {COLLECTOR_ID_RE.pattern}")
    return f"{COLLECTOR_PREFIX}{collector_id}"


def new_password() -> str:
    """A random password (~190 bits) that needs no quoting in TOML, URLs or shells."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    derived = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(derived).decode()}"


def mosquitto_verify(password: str, hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    iterations, salt = int(parts[2]), base64.b64decode(parts[3])
    return hmac.compare_digest(mosquitto_hash(password, salt=salt, iterations=iterations), hashed)


def password_line(collector_id: str, password: str) -> str:
    return f"{collector_username(collector_id)}:{mosquitto_hash(password)}\n"


def acl_block(collector_id: str) -> str:
    """The ``acl_file`` entry for this collector (Mosquitto syntax)."""
    user = collector_username(collector_id)
    base = f"{TOPIC_ROOT}/{collector_id}"
    return (
        f"# collector {collector_id}: only its own subtree; commands come from central only\n"
        f"user {user}\n"
        f"topic write {base}/frames\n"
        f"topic write {base}/status\n"
        f"topic write {base}/cmd/result\n"
        f"topic read {base}/cmd\n"
        f"topic read {base}/receipt\n"
    )
