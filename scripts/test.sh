#!/usr/bin/env bash
# Quick start, step 2 (and CI): install what is missing, build, start a throwaway
# PostgreSQL cluster, run every test suite with ctest, stop the cluster.
# Extra arguments go to ctest, e.g. scripts/test.sh -L unit
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# CI builds with warnings as errors and AddressSanitizer + UndefinedBehaviorSanitizer, in
# its own build directory; LUPINE_SANITIZE=address,undefined scripts/test.sh does the same.
cmake_args=()
sanitize="${LUPINE_SANITIZE:-}"
if [[ "${CI:-}" == "true" ]]; then
  cmake_args+=(-DLUPINE_WERROR=ON)
  sanitize="${sanitize:-address,undefined}"
fi
export LUPINE_BUILD_DIR="${LUPINE_BUILD_DIR:-$here/build}"
if [[ -n "$sanitize" ]]; then
  cmake_args+=(-DLUPINE_SANITIZE="$sanitize")
  LUPINE_BUILD_DIR="$here/build-sanitize"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
  export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/tests/lsan.supp:print_suppressions=0}"
fi
"$here/scripts/bootstrap.sh" "${cmake_args[@]}"
pgdir="$(mktemp -d /tmp/lupine-test-pg.XXXXXX)"
cleanup() { "$here/scripts/pg_up.sh" --stop "$pgdir" || true; rm -rf "$pgdir"; }
trap cleanup EXIT
export LUPINE_TEST_DSN="$(LUPINE_PG_FSYNC=off "$here/scripts/pg_up.sh" "$pgdir" postgres)"
echo "test: throwaway PostgreSQL at $pgdir" >&2
cd "$LUPINE_BUILD_DIR"
ctest --output-on-failure -j2 "$@"
# CI also fuzzes the hostile-input parsers briefly, in build-fuzz/ with clang (docs/operations.md).
if [[ "${CI:-}" == "true" ]]; then
  "$here/scripts/fuzz.sh" 10
fi
