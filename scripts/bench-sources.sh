#!/usr/bin/env bash
# Throughput of the three sources on the same CloudShelf orders, in one run, alternating:
# the export from a local folder, the same export from S3 (moto), and a DynamoDB Local
# table scanned with 1, 4 and 16 segments. Prints items/s and ddb2pg's CPU per item, so
# where an emulator is the bottleneck it shows (our CPU stays low while the wall clock grows).
#
#   scripts/bench-sources.sh [SCALE=100000] [RUNS=2]
#
# Needs the release binary, PostgreSQL and the emulators (scripts/emulators.sh up).
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${1:-100000}"
runs="${2:-2}"
bin=./target/release/ddb2pg
work="${TMPDIR:-/tmp}/ddb2pg-bench-sources-$scale"
db=ddb2pg_bench_sources
eval "$(bash scripts/emulators.sh env)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
url="postgresql://postgres@127.0.0.1:5432/$db"
if [ ! -f "$work/fixtures/orders/manifest-summary.json" ]; then
  "$bin" fixtures generate --out "$work/fixtures" --scale "$scale" --seed 7 >/dev/null
fi
table="bench-orders-$scale"
bucket="ddb2pg-bench"
"$bin" fixtures seed --table "$table" --from "$work/fixtures/orders" --key orderId
"$bin" fixtures upload --from "$work/fixtures/orders" --to "s3://$bucket/orders-$scale"

# The orders entry of pipeline.toml with another source.
entry() {
  python3 - "$1" <<'EOF'
import sys
text = open("pipeline.toml").read()
block = next(b for b in text.split("[[tables]]") if 'name = "orders"' in b)
out = []
for line in block.splitlines():
    out.append("source = " + sys.argv[1] if line.startswith("source = ") else line)
print("[[tables]]" + "\n".join(out))
EOF
}
declare -A sources=(
  [folder]="{ export = \"$work/fixtures/orders\" }"
  [s3]="{ export = \"s3://$bucket/orders-$scale\" }"
  [scan1]="{ dynamodb = \"$table\", segments = 1 }"
  [scan4]="{ dynamodb = \"$table\", segments = 4 }"
  [scan16]="{ dynamodb = \"$table\", segments = 16 }"
)
for way in folder s3 scan1 scan4 scan16; do
  { printf '[target]\nurl = "%s"\nschema = "public"\n\n' "$url"; entry "${sources[$way]}"; } >"$work/$way.toml"
done
for run in $(seq 1 "$runs"); do
  for way in folder s3 scan1 scan4 scan16; do
    "$bin" load --config "$work/$way.toml" --mode replace --no-progress \
      --report "$work/$way-$run.json" --rejects "$work/rejects.jsonl" >/dev/null 2>&1
  done
done
python3 - "$work" "$runs" <<'EOF'
import json, sys, statistics
work, runs = sys.argv[1], int(sys.argv[2])
print(f"| source | items | median s | items/s | ddb2pg CPU µs/item | retries |")
print("|---|---:|---:|---:|---:|---:|")
for way in ["folder", "s3", "scan1", "scan4", "scan16"]:
    reps = [json.load(open(f"{work}/{way}-{r}.json")) for r in range(1, runs + 1)]
    secs = statistics.median(r["seconds"] for r in reps)
    items = reps[0]["tables"][0]["rows_read"]
    cpu = statistics.median(r["cpu_seconds"] for r in reps)
    retries = sum(r["tables"][0].get("source_retries", 0) for r in reps)
    print(f"| {way} | {items} | {secs:.2f} | {items/secs:,.0f} | {cpu/items*1e6:.1f} | {retries} |")
EOF
