#!/bin/sh
# Install Mosquitto for the IMD gateway on Debian 12 / Ubuntu 22.04+ (run as root from the repo).
#
#   sudo deploy/mosquitto/install-mosquitto.sh CA.crt SERVER.crt SERVER.key
#
# Certificates: a public certificate for the broker's DNS name, or one from your own CA (see
# docs/OPERATIONS.md; make-dev-ca.sh makes throwaway ones for staging). Accounts: this script
# creates `central` and `monitor` with random passwords printed once; collector accounts come
# from provisioning bundles (copy their passwd/acl parts into passwd.d/ and acl.d/, then run
# assemble-credentials.sh).
set -eu
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
[ "$#" -eq 3 ] || { echo "usage: $0 CA.crt SERVER.crt SERVER.key" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
dir=/etc/mosquitto/imd

apt-get install -y mosquitto
install -d -m 0750 -o root -g mosquitto "$dir" "$dir/passwd.d" "$dir/acl.d"
install -m 0644 -o root -g mosquitto "$1" "$dir/ca.crt"
install -m 0644 -o root -g mosquitto "$2" "$dir/server.crt"
install -m 0640 -o root -g mosquitto "$3" "$dir/server.key"
install -m 0644 "$here/acl" "$dir/acl.base"
install -m 0755 "$here/assemble-credentials.sh" /usr/local/sbin/imd-mosquitto-assemble

for account in central monitor; do
    part="$dir/passwd.d/$account.passwd"
    [ -e "$part" ] && continue
    password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    tmp=$(mktemp)
    mosquitto_passwd -b "$tmp" "$account" "$password"
    install -m 0640 -o root -g mosquitto "$tmp" "$part"
    rm -f "$tmp"
    echo "MQTT account $account password (store it now, shown once): $password"
done

[ -e /etc/mosquitto/mosquitto.conf ] && cp -n /etc/mosquitto/mosquitto.conf /etc/mosquitto/mosquitto.conf.debian
install -m 0644 "$here/mosquitto.conf" /etc/mosquitto/mosquitto.conf
install -d -m 0750 -o mosquitto -g mosquitto /var/lib/mosquitto
IMD_MOSQUITTO_DIR=$dir /usr/local/sbin/imd-mosquitto-assemble
systemctl enable mosquitto
systemctl restart mosquitto
systemctl --no-pager status mosquitto | head -5
