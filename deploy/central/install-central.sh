#!/bin/sh
# Install IMD central on Debian 12 / Ubuntu 22.04+ (run as root from a checkout of the repo).
#
#   sudo deploy/central/install-central.sh [WORKERS [INGEST]]
#
# WORKERS: extra combined workers imd-central@8001... (default 0); INGEST: ingest-only workers
# imd-ingest@1... without HTTP ports (default 0).
#
# Makes: service user imd-central (no login, no home), /opt/imd/src (a copy of this checkout),
# /opt/imd/venv, /etc/imd (0750) with central.env (0600, from central.env.example unless present),
# /var/lib/imd/central (0750, data: meter-key file, token secret), /var/backups/imd (0700), the
# systemd units, the nightly backup timer and the nginx site (disabled until you edit it).
# PostgreSQL and Mosquitto: docs/OPERATIONS.md steps 2 and 3. Re-running is safe (upgrades code).
set -eu
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
workers=${1:-0}
ingest=${2:-0}
src=$(cd "$(dirname "$0")/../.." && pwd)

apt-get install -y python3 python3-venv postgresql-client nginx

getent group imd-central >/dev/null || groupadd --system imd-central
getent passwd imd-central >/dev/null || useradd --system --gid imd-central --no-create-home \
    --home-dir /var/lib/imd/central --shell /usr/sbin/nologin imd-central

install -d -m 0755 /opt/imd
rm -rf /opt/imd/src.new
cp -a "$src" /opt/imd/src.new
rm -rf /opt/imd/src.new/.venv /opt/imd/src.new/.git /opt/imd/src.new/data
rm -rf /opt/imd/src.old
[ -d /opt/imd/src ] && mv /opt/imd/src /opt/imd/src.old
mv /opt/imd/src.new /opt/imd/src
chown -R root:root /opt/imd/src

[ -x /opt/imd/venv/bin/python ] || python3 -m venv /opt/imd/venv
# the venv's seeded setuptools (Debian 12: 66.1) has published advisories (make audit); see pyproject
/opt/imd/venv/bin/pip install --quiet --upgrade pip 'setuptools>=83.0.0'
/opt/imd/venv/bin/pip install --quiet /opt/imd/src

install -d -m 0750 -o root -g imd-central /etc/imd
if [ ! -e /etc/imd/central.env ]; then
    install -m 0600 -o root -g root "$src/deploy/central/central.env.example" /etc/imd/central.env
    echo "edit /etc/imd/central.env (database URL, MQTT URL) before starting central"
fi
chmod 0600 /etc/imd/central.env
install -d -m 0755 /var/lib/imd
install -d -m 0750 -o imd-central -g imd-central /var/lib/imd/central
install -d -m 0700 -o root -g root /var/backups/imd

install -m 0644 "$src/deploy/central/imd-central-api.service" /etc/systemd/system/
install -m 0644 "$src/deploy/central/imd-central@.service" /etc/systemd/system/
install -m 0644 "$src/deploy/central/imd-ingest@.service" /etc/systemd/system/
install -m 0644 "$src/deploy/backup/imd-backup.service" "$src/deploy/backup/imd-backup.timer" /etc/systemd/system/
install -m 0644 "$src/deploy/central/nginx-imd.conf" /etc/nginx/sites-available/imd
systemctl daemon-reload
systemctl enable imd-central-api.service imd-backup.timer
i=1
while [ "$i" -le "$workers" ]; do
    systemctl enable "imd-central@$((8000 + i)).service"
    i=$((i + 1))
done
i=1
while [ "$i" -le "$ingest" ]; do
    systemctl enable "imd-ingest@$i.service"
    i=$((i + 1))
done

cat <<MSG
Installed. Next:
  1. edit /etc/imd/central.env; systemctl start imd-central-api (migrates the schema)
  2. systemd-run --pty --uid=imd-central -p EnvironmentFile=/etc/imd/central.env \\
         /opt/imd/venv/bin/imd central create-user admin --role admin
  3. edit /etc/nginx/sites-available/imd (name, certificate, one upstream line per worker),
     ln -s ../sites-available/imd /etc/nginx/sites-enabled/imd; nginx -t && systemctl reload nginx
  4. keep a copy of /var/lib/imd/central/meter-keys.fernet apart from the backups (OPERATIONS.md)
MSG
