#!/usr/bin/env bash
# The benchmark of docs/BENCHMARKS.md (issue 6): installs nginx, haproxy, wrk
# and curl from Debian when they are missing, builds l7c in release, measures
# A (wrk -> nginx), B (the same, wrk enrolled by `l7c run`) and C (wrk ->
# HAProxy -> nginx) on loopback, and rewrites docs/BENCHMARKS.md's measured
# section and docs/bench.svg. Root (cgroups, l7c run). About 12 minutes after
# the build; L7C_BENCH_QUICK=1 for 2-second runs (about 2 minutes).
#   scripts/bench.sh            measure and write the documents
#   scripts/bench.sh --check    validate the generated configs and policies only
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIPPED benchmark: ${missing[*]} missing, and installing them needs root" >&2
    exit 2
  fi
  # policy-rc.d keeps the packages' services from starting: the benchmark starts its own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.l7c-bench
  chmod +x /usr/sbin/policy-rc.d.l7c-bench
  [[ -e /usr/sbin/policy-rc.d ]] || ln -s policy-rc.d.l7c-bench /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [[ $(readlink /usr/sbin/policy-rc.d || true) == policy-rc.d.l7c-bench ]] && rm -f /usr/sbin/policy-rc.d
  rm -f /usr/sbin/policy-rc.d.l7c-bench
fi

cargo build --release --locked --bin l7c
export L7C_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/l7c"
exec python3 bench/bench.py "$@"
