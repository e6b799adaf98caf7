#!/usr/bin/env bash
# Install the IMD collector on Raspberry Pi OS (64-bit, Bookworm or later). Run as root from a
# checkout or an unpacked release:   sudo ./deploy/edge/install-raspberry-pi.sh [collector.toml]
#
# Creates the service user imd-edge (member of dialout for the serial ports), a virtual
# environment in /opt/imd-edge/venv, /etc/imd-edge/collector.toml (from the given file, mode 0640)
# and /var/lib/imd-edge, installs the udev rule and the systemd unit, checks the configuration and
# starts the service. Safe to run again for an upgrade.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/../.." && pwd)"
PREFIX=/opt/imd-edge
CONFIG_DIR=/etc/imd-edge
STATE_DIR=/var/lib/imd-edge
CONFIG_IN="${1:-}"

if [[ $EUID -ne 0 ]]; then
    echo "run as root (sudo $0 ...)" >&2
    exit 1
fi

echo "== packages"
apt-get update -qq
apt-get install -y -qq python3 python3-venv python3-dev ca-certificates

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python 3.11 or newer is needed, found {sys.version.split()[0]}")
PY

echo "== service user"
if ! id imd-edge >/dev/null 2>&1; then
    useradd --system --home-dir "$STATE_DIR" --shell /usr/sbin/nologin imd-edge
fi
usermod -a -G dialout imd-edge

echo "== virtual environment in $PREFIX/venv"
install -d -m 0755 "$PREFIX"
python3 -m venv "$PREFIX/venv"
# the venv's seeded setuptools has published advisories (make audit); see pyproject
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip 'setuptools>=83.0.0'
"$PREFIX/venv/bin/pip" install --quiet "$SRC"
install -d -m 0755 "$PREFIX/deploy/edge"
install -m 0644 "$SRC/deploy/edge/README.md" "$PREFIX/deploy/edge/README.md"

echo "== configuration and state"
install -d -m 0750 -o root -g imd-edge "$CONFIG_DIR"
install -d -m 0750 -o imd-edge -g imd-edge "$STATE_DIR"
if [[ -n "$CONFIG_IN" ]]; then
    install -m 0640 -o root -g imd-edge "$CONFIG_IN" "$CONFIG_DIR/collector.toml"
fi
if [[ ! -f "$CONFIG_DIR/collector.toml" ]]; then
    echo "no $CONFIG_DIR/collector.toml yet: copy one there (mode 0640, group imd-edge) and run again" >&2
    exit 2
fi
"$PREFIX/venv/bin/imd" edge check-config "$CONFIG_DIR/collector.toml"

echo "== udev rule (stable port names /dev/imd-mbusN)"
if [[ -f "$SRC/deploy/edge/99-imd-mbus.rules" ]]; then
    install -m 0644 "$SRC/deploy/edge/99-imd-mbus.rules" /etc/udev/rules.d/99-imd-mbus.rules
    udevadm control --reload-rules
    udevadm trigger --subsystem-match=tty
fi

echo "== systemd"
install -m 0644 "$SRC/deploy/edge/imd-edge.service" /etc/systemd/system/imd-edge.service
systemctl daemon-reload
systemctl enable imd-edge.service
systemctl restart imd-edge.service
sleep 3
systemctl --no-pager --lines=5 status imd-edge.service || true
echo "installed; logs: journalctl -u imd-edge -f"
