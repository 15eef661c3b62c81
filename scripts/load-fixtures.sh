#!/usr/bin/env bash
# The main job on the bundled fixtures: build ddb2pg, make sure PostgreSQL is up and the
# `cloudshelf` database exists, then load books, users and orders per pipeline.toml.
# Re-runnable: it reloads (--mode replace --fresh: a new run each time). Extra arguments go to `ddb2pg load`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bash scripts/pg-up.sh
url=${DDB2PG_TARGET_URL:-postgresql://postgres@127.0.0.1:5432/cloudshelf}
db=${url##*/}; db=${db%%\?*}
admin=${url%/*}/postgres
if [ "$(psql "$admin" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
  psql "$admin" -qc "CREATE DATABASE \"$db\""
fi
exec env DDB2PG_TARGET_URL="$url" ./target/release/ddb2pg load --config pipeline.toml --mode replace --fresh "$@"
