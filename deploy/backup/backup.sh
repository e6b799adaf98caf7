#!/bin/sh
# Back up central: PostgreSQL (pg_dump -Fc) + the data directory (document archive and other
# files) + a SHA-256 manifest; keep the newest IMD_BACKUP_KEEP sets.
#
#   backup.sh                    settings from /etc/imd/central.env (IMD_ENV_FILE to change)
#
#   IMD_DATABASE_URL   postgresql+asyncpg://user@host:port/db (the +driver part is dropped; the
#                      password comes from ~/.pgpass or PGPASSWORD, never from the command line)
#   IMD_DATA_DIR       central's data directory (default /var/lib/imd/central)
#   IMD_BACKUP_DIR     where sets go (default /var/backups/imd)
#   IMD_BACKUP_KEEP    sets to keep (default 14)
#
# The meter-key file (meter-keys.fernet) and the token secret are NOT in the data tar: a backup
# that holds both the database and the key would hand out every meter key to whoever gets the
# backup. Keep a copy of the key file apart (docs/OPERATIONS.md, "Backups"); restore.sh puts the
# rest back. Exit status 0 only when every part was written and verified.
set -eu

env_file=${IMD_ENV_FILE:-/etc/imd/central.env}
if [ -r "$env_file" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi
db_url=${IMD_DATABASE_URL:?backup.sh: IMD_DATABASE_URL is not set}
data_dir=${IMD_DATA_DIR:-/var/lib/imd/central}
backup_dir=${IMD_BACKUP_DIR:-/var/backups/imd}
keep=${IMD_BACKUP_KEEP:-14}

case $db_url in
    postgresql*) pg_url=$(printf '%s' "$db_url" | sed -E 's#^postgresql\+[a-z0-9]+://#postgresql://#') ;;
    *) echo "backup.sh: only PostgreSQL is supported here (got ${db_url%%:*}); for SQLite see docs/OPERATIONS.md" >&2
       exit 2 ;;
esac

umask 077
# milliseconds: two sets in the same second (a retry, a test) must not collide
stamp=$(date -u +%Y%m%dT%H%M%S.%3NZ)
mkdir -p "$backup_dir"
work="$backup_dir/.imd-$stamp.partial"
mkdir "$work"
trap 'rm -rf "$work"' EXIT

# -Fc: compressed, restorable selectively and in parallel; --no-owner/--no-acl: restorable
# into a database owned by another role.
pg_dump --format=custom --no-owner --no-acl --file="$work/database.dump" --dbname="$pg_url"
pg_restore --list "$work/database.dump" > /dev/null   # the dump is readable

if [ -d "$data_dir" ]; then
    tar -C "$data_dir" --exclude='./meter-keys.fernet*' --exclude='./token-secret' \
        --exclude='./*.sqlite-wal' --exclude='./*.sqlite-shm' -czf "$work/data.tar.gz" .
else
    tar -czf "$work/data.tar.gz" -T /dev/null
fi

(cd "$work" && sha256sum database.dump data.tar.gz > SHA256SUMS && sha256sum -c --quiet SHA256SUMS)
mv "$work" "$backup_dir/imd-$stamp"
trap - EXIT

# Rotation: sets sort by their UTC stamp; drop all but the newest $keep.
ls -1d "$backup_dir"/imd-*T*Z 2>/dev/null | sort -r | tail -n +"$((keep + 1))" | while read -r old; do
    rm -rf "$old"
done
echo "$backup_dir/imd-$stamp"
