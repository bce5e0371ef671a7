#!/usr/bin/env bash
# The whole test suite: unit, snapshot, property, differential, corpus and
# conformance tests of every crate in the workspace.
#
# --show-output prints what passing tests print, so a test that skips part
# of its work says so in the log (`SKIPPED ...`), never silently. The last
# line totals every test binary: `N passed, N failed`. --no-fail-fast runs
# every test binary even when an earlier one fails, so the total counts
# everything and one failure cannot hide another; the exit status is
# still cargo's (non-zero when anything failed).
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast -- --show-output 2>&1 | tee "$log" || status=$?
echo
echo "skipped parts (each says why):"
grep -h "SKIPPED" "$log" | sed 's/^/  /' | sort -u || echo "  none"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
if [ "$status" != 0 ]; then
  # Again at the end, where a truncated CI log still shows it: which tests
  # failed and what each one's panic said (the full output is above).
  echo
  echo "failed tests:"
  grep -h -E "^test .* FAILED$|^error: .*target.*failed|^    \`-p " "$log" | sed 's/^/  /' || true
  echo "their panics:"
  grep -h -A12 "panicked at" "$log" | grep -v -E "^ +[0-9]+: |^ +at |^stack backtrace:" | cut -c1-400 | head -150 | sed 's/^/  /' || true
fi
exit "$status"
