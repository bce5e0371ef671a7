#!/usr/bin/env bash
# Build l7c, then check, test and format-check every example policy and
# stdlib module.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin l7c
# Each example is a separate deployment: check each on its own (files named
# together form one program, and their scopes would overlap).
for policy in examples/*.l7 stdlib/*.l7; do
  ./target/release/l7c check "$policy"
done
./target/release/l7c test examples/*.l7 stdlib/*.l7
./target/release/l7c fmt --check examples/*.l7 stdlib/*.l7
