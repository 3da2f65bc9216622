#!/usr/bin/env bash
# Starts a private PostgreSQL 15 cluster in DIR (initdb on first use, kept afterwards):
# unix socket only (DIR/run), trust authentication, no TCP. Prints the DSN of database
# DBNAME (created if missing) on stdout. `pg_up.sh --stop DIR` stops it.
# initdb refuses to run as root, so as root the cluster belongs to the postgres user.
# Usage: scripts/pg_up.sh DIR [DBNAME]     scripts/pg_up.sh --stop DIR
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x "$bin/initdb" ]] || { echo "pg_up: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [[ "${1:-}" == "--stop" ]]; then
  dir="$(realpath "$2")"
  [[ -f "$dir/data/postmaster.pid" ]] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  exit 0
fi
dir="$(realpath -m "$1")"
db="${2:-lupine}"
user=$( [[ $(id -u) -eq 0 ]] && echo postgres || id -un )
mkdir -p "$dir/run"
if [[ $(id -u) -eq 0 ]]; then
  chown postgres: "$dir" "$dir/run"
  # postgres must be able to reach DIR: every parent needs o+x. So must a policyd that
  # dropped root to server.user (tests run it as nobody): DIR and its socket directory too.
  chmod o+x "$dir" "$dir/run"
  p="$dir"; while [[ "$p" != "/" ]]; do p="$(dirname "$p")"; chmod o+x "$p" 2>/dev/null || true; done
fi
if [[ ! -f "$dir/data/PG_VERSION" ]]; then
  as_owner "$bin/initdb" -D "$dir/data" -A trust -U "$user" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
fi
if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  as_owner "$bin/pg_ctl" -D "$dir/data" -w -t 60 -l "$dir/postgres.log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$dir/run' -c fsync=${LUPINE_PG_FSYNC:-on} -c max_connections=200" \
    start >/dev/null
fi
if ! "$bin/psql" -h "$dir/run" -U "$user" -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
  "$bin/psql" -h "$dir/run" -U "$user" -d postgres -qc "CREATE DATABASE \"$db\"" >/dev/null
fi
echo "host=$dir/run user=$user dbname=$db"
