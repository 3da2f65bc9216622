#!/usr/bin/env bash
# Installs what is missing (Debian 12 packages), then configures and builds into build/.
# Usage: scripts/bootstrap.sh [extra cmake args...]
# Run as root or with sudo rights (apt-get). Idempotent: a second run only rebuilds.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
packages=(g++ cmake make pkg-config python3 clang-format nsd dnsmasq-base
  libboost1.81-dev libboost-program-options1.81-dev
  libpqxx-dev libc-ares-dev libcurl4-openssl-dev libfmt-dev doctest-dev
  postgresql postgresql-client clang-14 libclang-rt-14-dev
  postfix swaks libsasl2-modules)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "bootstrap: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  # postfix asks how to configure the system mailer: "No configuration" writes no main.cf,
  # so the system Postfix never starts. The tests run private instances (tests/system/postfixenv.py).
  # An already installed (configured) postfix is never asked again.
  if [[ " ${missing[*]} " == *" postfix "* ]]; then
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  fi
  # postgresql's package would start a system cluster: we never use it, but allow it.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
build="${LUPINE_BUILD_DIR:-$here/build}"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE="${LUPINE_BUILD_TYPE:-RelWithDebInfo}" "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
