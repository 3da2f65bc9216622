#!/usr/bin/env bash
# Quick start, step 2 (and CI): install what is missing, build, start a throwaway
# PostgreSQL cluster, run every test suite with ctest, stop the cluster.
# Extra arguments go to ctest, e.g. scripts/test.sh -L unit
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cmake_args=()
[[ "${CI:-}" == "true" ]] && cmake_args+=(-DLUPINE_WERROR=ON)
"$here/scripts/bootstrap.sh" "${cmake_args[@]}"
pgdir="$(mktemp -d /tmp/lupine-test-pg.XXXXXX)"
cleanup() { "$here/scripts/pg_up.sh" --stop "$pgdir" || true; rm -rf "$pgdir"; }
trap cleanup EXIT
export LUPINE_TEST_DSN="$(LUPINE_PG_FSYNC=off "$here/scripts/pg_up.sh" "$pgdir" postgres)"
echo "test: throwaway PostgreSQL at $pgdir" >&2
cd "$here/build"
ctest --output-on-failure -j2 "$@"
