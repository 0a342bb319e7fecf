#!/usr/bin/env bash
# The whole test suite: installs what it needs, then formatting, lints, unit/property/integration
# tests, and the end-to-end tests that drive the built broker with real Kafka clients.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

# End-to-end: the built broker driven by real clients (confluent-kafka, kafka-python, kcat).
cargo build --bin sluice
SLUICE_BIN="$PWD/target/debug/sluice" python3 -m pytest tests/e2e -q
