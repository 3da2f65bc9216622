#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, and run policyd in the foreground on
# 127.0.0.1:10031 with the sample config (etc/policyd.conf). With no `database` in that
# config (the default), a private PostgreSQL cluster is started under var/pg (kept between
# runs; stopped when policyd exits) and policyd applies the migrations to it.
# Extra arguments go to policyd, e.g. scripts/run.sh -o greylist.delay=60s -v
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/bootstrap.sh"
conf="${LUPINE_CONFIG:-$here/etc/policyd.conf}"
args=(-c "$conf")
if ! grep -Eq '^[[:space:]]*database[[:space:]]*=[[:space:]]*[^[:space:]]' "$conf"; then
  dsn="$("$here/scripts/pg_up.sh" "$here/var/pg" lupine)"
  trap '"$here/scripts/pg_up.sh" --stop "$here/var/pg"' EXIT
  echo "run: private PostgreSQL at $here/var/pg ($dsn)" >&2
  echo "run: abusectl uses it with: export LUPINE_DATABASE='$dsn'" >&2
  args+=(-o "database=$dsn")
  # The private setup keeps its event-log spill (docs/operations.md) beside its database.
  args+=(-o "event_log.spill_dir=$here/var/spill")
fi
# policyd refuses to serve as root: started as root, it needs a user to switch to after
# binding. The quick start uses nobody unless the config names one (server.user).
if [[ $(id -u) -eq 0 ]] && ! grep -Eq '^[[:space:]]*(server\.)?user[[:space:]]*=' "$conf"; then
  args+=(-o "server.user=nobody")
fi
cd "$here"
"$here/build/policyd/policyd" "${args[@]}" "$@"
