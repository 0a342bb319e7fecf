#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints, unit/property/integration
# tests, and the end-to-end tests that drive the built broker with real Kafka clients.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
