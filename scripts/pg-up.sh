#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432; starts the local cluster when it is down.
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432; then
  exit 0
fi
echo "PostgreSQL is down: starting it" >&2
if command -v pg_ctlcluster >/dev/null; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
else
  echo "pg_ctlcluster not found: start PostgreSQL on 127.0.0.1:5432 yourself" >&2
  exit 1
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
  sleep 1
done
echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
