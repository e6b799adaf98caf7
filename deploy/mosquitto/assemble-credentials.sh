#!/bin/sh
# Rebuild Mosquitto's password file and ACL from the parts provisioning made, then reload the
# broker (SIGHUP re-reads password_file and acl_file; connected clients stay connected).
#
#   /etc/mosquitto/imd/passwd.d/*.passwd   one `username:$7$...` line each (central.passwd,
#                                          monitor.passwd, collector-<id>.passwd from the bundle)
#   /etc/mosquitto/imd/acl.base            deploy/mosquitto/acl
#   /etc/mosquitto/imd/acl.d/*.acl         one block per collector (collector.acl.template)
#
# Removing a collector = deleting its two files and running this script.
set -eu
dir=${IMD_MOSQUITTO_DIR:-/etc/mosquitto/imd}
umask 027

tmp_pw=$(mktemp "$dir/.passwd.XXXXXX")
tmp_acl=$(mktemp "$dir/.acl.XXXXXX")
trap 'rm -f "$tmp_pw" "$tmp_acl"' EXIT

for part in "$dir"/passwd.d/*.passwd; do
    [ -e "$part" ] || continue
    # one line per account, no blank or duplicate usernames (the broker would take the last one)
    grep -v '^[[:space:]]*$' "$part"
done > "$tmp_pw"
dups=$(cut -d: -f1 "$tmp_pw" | sort | uniq -d)
[ -z "$dups" ] || { echo "assemble-credentials: duplicate accounts: $dups" >&2; exit 1; }

cat "$dir/acl.base" > "$tmp_acl"
for part in "$dir"/acl.d/*.acl; do
    [ -e "$part" ] || continue
    printf '\n' >> "$tmp_acl"
    cat "$part" >> "$tmp_acl"
done

chgrp mosquitto "$tmp_pw" "$tmp_acl" 2>/dev/null || true
chmod 0640 "$tmp_pw" "$tmp_acl"
mv "$tmp_pw" "$dir/passwd"
mv "$tmp_acl" "$dir/acl"
trap - EXIT

# IMD_MOSQUITTO_NO_RELOAD=1: only write the files (tests, or a broker that is not installed yet).
if [ -z "${IMD_MOSQUITTO_NO_RELOAD:-}" ] && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl reload mosquitto
fi
echo "assemble-credentials: $(wc -l < "$dir/passwd") accounts, ACL $(grep -c '^user ' "$dir/acl") users"
