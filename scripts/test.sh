#!/usr/bin/env bash
# The test suite: unit tests, and integration tests against the real PostgreSQL on
# 127.0.0.1:5432 (started here when it is down). Tests that read ../shared/acceptance
# skip with a message where it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/pg-up.sh
if [ ! -d ../shared/acceptance ]; then
  echo "SKIP: ../shared/acceptance is absent; the tests that read it skip (they pass without checking it)" >&2
fi
cargo build --release --tests --benches --quiet
cargo test --release "$@"
