#!/usr/bin/env bash
# The whole test suite: unit, snapshot, property, differential, corpus and
# conformance tests of every crate in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
