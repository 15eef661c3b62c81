#!/usr/bin/env bash
# The test suite: unit tests, and integration tests against the real PostgreSQL on
# 127.0.0.1:5432 (started here when it is down) and the AWS emulators on loopback
# (DynamoDB Local and moto S3, installed into .emulators/ and started here; see
# scripts/emulators.sh), and a TLS-only PostgreSQL on 127.0.0.1:5433 (scripts/pg-tls.sh). Tests that read ../shared/acceptance skip with a message where it
# is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/pg-up.sh
if [ ! -d ../shared/acceptance ]; then
  echo "SKIP: ../shared/acceptance is absent; the tests that read it skip (they pass without checking it)" >&2
fi
# Build first: compiling and a JVM on 2 cores at once slow each other down.
cargo build --release --tests --benches --quiet
bash scripts/emulators.sh up
eval "$(bash scripts/emulators.sh env)"
# The second, TLS-only PostgreSQL of the connection tests (port 5433).
bash scripts/pg-tls.sh up
eval "$(bash scripts/pg-tls.sh env)"
export DDB2PG_REQUIRE_EMULATORS=1
cargo test --release "$@"
