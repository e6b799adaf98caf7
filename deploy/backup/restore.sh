#!/bin/sh
# Restore a backup set made by backup.sh into a NEW, empty database and a data directory.
#
#   restore.sh SET_DIR TARGET_DATABASE_URL [TARGET_DATA_DIR]
#
# The manifest is checked first; nothing is touched when a file does not match. The target
# database must exist and be empty (createdb NAME); restoring over a live database is refused,
# so a mistyped URL cannot destroy production. TARGET_DATA_DIR (optional) must be empty or absent.
# Afterwards copy the meter-key file back (it is not in the set) and run `imd central migrate`.
set -eu
[ "$#" -ge 2 ] || { echo "usage: restore.sh SET_DIR TARGET_DATABASE_URL [TARGET_DATA_DIR]" >&2; exit 2; }
set_dir=$1
pg_url=$(printf '%s' "$2" | sed -E 's#^postgresql\+[a-z0-9]+://#postgresql://#')
data_dir=${3:-}

(cd "$set_dir" && sha256sum -c --quiet SHA256SUMS) || { echo "restore.sh: manifest check failed" >&2; exit 1; }

tables=$(psql --no-psqlrc --tuples-only --no-align --dbname="$pg_url" \
    -c "select count(*) from pg_tables where schemaname not in ('pg_catalog','information_schema')")
if [ "$tables" != "0" ]; then
    echo "restore.sh: target database has $tables tables; restore only into an empty database" >&2
    exit 1
fi

if [ -n "$data_dir" ]; then
    if [ -d "$data_dir" ] && [ -n "$(ls -A "$data_dir")" ]; then
        echo "restore.sh: $data_dir is not empty" >&2
        exit 1
    fi
fi

# --single-transaction: all or nothing; --exit-on-error: a failed object fails the restore.
pg_restore --no-owner --no-acl --single-transaction --exit-on-error --dbname="$pg_url" "$set_dir/database.dump"

if [ -n "$data_dir" ]; then
    mkdir -p "$data_dir"
    chmod 0750 "$data_dir"
    tar -C "$data_dir" -xzf "$set_dir/data.tar.gz"
fi
echo "restore.sh: restored $set_dir"
