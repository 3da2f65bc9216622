#!/usr/bin/env bash
# Fuzzes the parsers that read hostile input (fuzz/; docs/operations.md, "Fuzzing"): builds the
# libFuzzer targets with clang in build-fuzz/, replays every saved input under
# fuzz/regressions/<target>/, then runs each target for SECONDS (default 15) on a scratch copy
# of its seed corpus fuzz/corpus/<target>/, so the repository is never written. Exits non-zero
# when a target crashes, hangs (5 s on one input), leaks, passes 2 GB or trips a sanitizer or
# one of its own checks; the input is kept in build-fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh [SECONDS]     Needs clang-14 and libclang-rt-14-dev (scripts/bootstrap.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-15}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: scripts/fuzz.sh [SECONDS]" >&2
  exit 2
fi
cc="${LUPINE_FUZZ_CC:-clang-14}"
cxx="${LUPINE_FUZZ_CXX:-clang++-14}"
if ! command -v "$cxx" >/dev/null; then
  echo "fuzz: $cxx not found: apt-get install clang-14 libclang-rt-14-dev (scripts/bootstrap.sh does)" >&2
  exit 1
fi
build="${LUPINE_FUZZ_BUILD_DIR:-$here/build-fuzz}"
werror=OFF
[[ "${CI:-}" == "true" ]] && werror=ON
CC="$cc" CXX="$cxx" cmake -S "$here" -B "$build" -DLUPINE_FUZZ=ON -DLUPINE_BUILD_TESTS=OFF \
  -DLUPINE_WERROR="$werror" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzzers

targets=(fuzz_protocol fuzz_config fuzz_dnsbl fuzz_eml)
limits=(-timeout=5 -rss_limit_mb=2048)
# Our own settings, not the caller's (test.sh exports its own for the ctest run).
export ASAN_OPTIONS="detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
command -v llvm-symbolizer >/dev/null || [[ ! -x /usr/lib/llvm-14/bin/llvm-symbolizer ]] ||
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
scratch="$(mktemp -d /tmp/lupine-fuzz.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
failed=()

# The report of a failed run: from the first line of a sanitizer's, libFuzzer's or our own report
# (the whole log's end when there is none), without libFuzzer's progress lines.
show_report() {
  local start='invariant broken|==[0-9]+== ?ERROR|runtime error:|^ALARM|terminate called|uncaught exception'
  if grep -qE "$start" "$1"; then
    awk -v re="$start" '$0 ~ re { p = 1 } p' "$1" | grep -vE '^(#[0-9]+|[[:space:]]+NEW_FUNC)' | head -n 80 >&2 || true
  else
    tail -n 40 "$1" >&2
  fi
}

for dir in "$here"/fuzz/regressions/*/; do
  [[ -d "$dir" ]] || continue
  t="$(basename "$dir")"
  if [[ ! " ${targets[*]} " == *" $t "* ]]; then
    echo "fuzz: fuzz/regressions/$t: no such target" >&2
    failed+=("regressions/$t")
  fi
done

for t in "${targets[@]}"; do
  bin="$build/fuzz/$t"
  # Saved crashes first: each must run clean once the parser is fixed.
  if [[ -d "$here/fuzz/regressions/$t" ]]; then
    while IFS= read -r -d '' f; do
      log="$scratch/$t.regression.log"
      if "$bin" "${limits[@]}" "$f" >"$log" 2>&1; then
        echo "fuzz: $t: regression ${f#"$here"/} ok"
      else
        echo "fuzz: $t: regression ${f#"$here"/} FAILED:" >&2
        show_report "$log"
        failed+=("$t:${f#"$here"/}")
      fi
    done < <(find "$here/fuzz/regressions/$t" -type f -print0 | sort -z)
  fi

  mkdir -p "$scratch/$t" "$build/artifacts/$t"
  cp -R "$here/fuzz/corpus/$t/." "$scratch/$t/"
  dict=()
  [[ -f "$here/fuzz/dict/$t.dict" ]] && dict=(-dict="$here/fuzz/dict/$t.dict")
  log="$scratch/$t.log"
  status=0
  "$bin" "${dict[@]}" "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t/" "$scratch/$t" >"$log" 2>&1 || status=$?
  last="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)"
  execs="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
  cov="$(sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov=\1 ft=\2 corpus=\3/p' <<<"$last")"
  runs="$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")"
  if ((status == 0)); then
    echo "fuzz: $t: ok ${seconds}s runs=${runs:-?} exec/s=${execs:-?} $cov"
  else
    echo "fuzz: $t: FAILED (exit $status) after runs=${runs:-?} exec/s=${execs:-?} $cov:" >&2
    show_report "$log"
    echo "fuzz: $t: input kept in ${build#"$here"/}/artifacts/$t/; reproduce with $bin FILE" >&2
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets clean"
