#!/usr/bin/env python3
"""Build Mosquitto's dynamic-security configuration from the password-file parts provisioning made.

The alternative to assemble-credentials.sh (password_file + acl_file), for brokers run with
``dynsec.conf``: Mosquitto's dynamic-security plugin checks SUBSCRIBE against the account's role,
so a collector account cannot join central's shared subscription ``$share/ingest/...`` (the gap
acl_file leaves open; docs/THREAT_MODEL.md, "Leaked MQTT password"). Tested against the real
broker in tests/ops/test_mosquitto_config.py.

    /etc/mosquitto/imd/passwd.d/*.passwd   one `username:$7$<iterations>$<salt>$<hash>` line each
                                           (central.passwd, monitor.passwd, collector-<id>.passwd
                                           from the bundle: the same files as for acl_file)
    -> /etc/mosquitto/imd/dynamic-security.json  (0640, group mosquitto)

The rights come from the account name, so no ACL parts are needed:

    central          publish and receive imd/v1/#; subscribe imd/v1/# and $share/ingest/imd/v1/+/frames
    monitor          receive and subscribe $SYS/#
    collector-<id>   publish imd/v1/<id>/frames, /status, /cmd/result; subscribe and receive
                     imd/v1/<id>/cmd and imd/v1/<id>/receipt (exactly those topics)
    anything else    refused: the script stops (an unknown account would get no rights anyway)

Everything not granted is denied (defaultACLAccess all false but unsubscribe). No account may use
``$CONTROL/dynamic-security``: the file is the only way to change accounts, so the broker never
rewrites it. The plugin reads the file at start only: the script restarts the broker (collectors
reconnect within seconds and resend from their outbox; central's session is persistent).
Standard library only; runs with the broker host's python3. Removing a collector = deleting its
passwd part and running this again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

COLLECTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # protocols.messages.COLLECTOR_ID_RE
HASH = re.compile(r"^\$7\$(?P<iterations>[0-9]+)\$(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]+)$")
ROOT = "imd/v1"


def _acl(kind: str, topic: str) -> dict[str, object]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def role_for(username: str) -> dict[str, object]:
    if username == "central":
        acls = [
            _acl("publishClientSend", f"{ROOT}/#"),
            _acl("publishClientReceive", f"{ROOT}/#"),
            _acl("subscribePattern", f"{ROOT}/#"),
            # The plugin checks a shared subscription with its $share/<group>/ prefix.
            _acl("subscribePattern", f"$share/ingest/{ROOT}/+/frames"),
        ]
    elif username == "monitor":
        acls = [_acl("publishClientReceive", "$SYS/#"), _acl("subscribePattern", "$SYS/#")]
    elif username.startswith("collector-") and COLLECTOR_ID.fullmatch(username.removeprefix("collector-")):
        base = f"{ROOT}/{username.removeprefix('collector-')}"
        acls = [
            _acl("publishClientSend", f"{base}/frames"),
            _acl("publishClientSend", f"{base}/status"),
            _acl("publishClientSend", f"{base}/cmd/result"),
            _acl("subscribeLiteral", f"{base}/cmd"),
            _acl("publishClientReceive", f"{base}/cmd"),
            # central's end-to-end receipts: what frees the collector's outbox rows
            _acl("subscribeLiteral", f"{base}/receipt"),
            _acl("publishClientReceive", f"{base}/receipt"),
        ]
    else:
        raise ValueError(f"account {username!r}: not central, monitor or collector-<id>")
    acls.append(_acl("unsubscribePattern", "#"))
    return {"rolename": username, "acls": acls}


def build(parts: list[Path]) -> dict[str, Any]:
    clients: list[dict[str, object]] = []
    roles: list[dict[str, object]] = []
    seen: set[str] = set()
    for part in parts:
        for number, line in enumerate(part.read_text().splitlines(), 1):
            if not line.strip():
                continue
            username, _, hashed = line.strip().partition(":")
            match = HASH.fullmatch(hashed)
            if match is None:
                # never echo the line: it is a password hash
                raise ValueError(
                    f"{part}:{number}: not a `user:$7$...` line (mosquitto_passwd -H sha512-pbkdf2)"
                )
            if username in seen:
                raise ValueError(f"duplicate account {username!r}")
            seen.add(username)
            roles.append(role_for(username))
            clients.append(
                {
                    "username": username,
                    "password": match["hash"],
                    "salt": match["salt"],
                    "iterations": int(match["iterations"]),
                    "roles": [{"rolename": username}],
                }
            )
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def write(path: Path, config: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
        try:
            import grp

            os.chown(tmp, -1, grp.getgrnam("mosquitto").gr_gid)
        except (KeyError, PermissionError):
            pass  # no mosquitto group here (tests) or not root: the mode still keeps others out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> int:
    directory = Path(os.environ.get("IMD_MOSQUITTO_DIR", "/etc/mosquitto/imd"))
    parts = sorted((directory / "passwd.d").glob("*.passwd"))
    try:
        config = build(parts)
    except ValueError as exc:
        print(f"dynsec-assemble: {exc}", file=sys.stderr)
        return 1
    write(directory / "dynamic-security.json", config)
    # IMD_MOSQUITTO_NO_RELOAD=1: only write the file (tests, or a broker that is not installed yet).
    if not os.environ.get("IMD_MOSQUITTO_NO_RELOAD"):
        systemctl = "/usr/bin/systemctl"
        active = subprocess.run([systemctl, "is-active", "--quiet", "mosquitto"], check=False)  # noqa: S603
        if active.returncode == 0:
            subprocess.run([systemctl, "restart", "mosquitto"], check=True)  # noqa: S603
    collectors = sum(1 for c in config["clients"] if c["username"].startswith("collector-"))
    print(f"dynsec-assemble: {len(config['clients'])} accounts, {collectors} collectors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
