#!/usr/bin/env bash
# End-to-end throughput of `ddb2pg load` on generated CloudShelf fixtures, beside the
# yardstick: PostgreSQL's own binary COPY FROM of the same rows (a server-side file written
# by COPY TO, same table definition: BEGIN; TRUNCATE; COPY … (FORMAT binary, FREEZE); COMMIT).
# Runs alternate in one go; medians are printed. Usage:
#   bash scripts/compare-copy.sh [SCALE=1000000] [RUNS=3] [TABLE=orders]
# Needs write access for the postgres server user to $WORK (default /tmp/ddb2pg-compare).
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-1000000}; runs=${2:-3}; table=${3:-orders}
work=${WORK:-/tmp/ddb2pg-compare}
db=ddb2pg_compare
mkdir -p "$work"; chmod 777 "$work"
cargo build --release --quiet
bash scripts/pg-up.sh
fx="$work/fixtures-$scale"
[ -f "$fx/$table/manifest-summary.json" ] || ./target/release/ddb2pg fixtures generate --out "$fx" --scale "$scale" --seed 7 >/dev/null
admin=postgresql://postgres@127.0.0.1:5432/postgres
url=postgresql://postgres@127.0.0.1:5432/$db
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
sed "s#fixtures/cloudshelf/#$fx/#" pipeline.toml > "$work/pipeline.toml"
export DDB2PG_TARGET_URL=$url
gz=$(du -cb "$fx/$table"/data/*.json.gz | tail -1 | cut -f1)
json=$(for f in "$fx/$table"/data/*.json.gz; do zcat "$f"; done | wc -c)
rows=$(for f in "$fx/$table"/data/*.json.gz; do zcat "$f"; done | wc -l)
run_load() { # mode -> "seconds cpu_seconds peak_kb"
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" ./target/release/ddb2pg load --config "$work/pipeline.toml" \
    --table "$table" --mode "$1" --no-progress --rejects "$work/rejects.jsonl" >/dev/null 2>"$work/load.log"
  awk '{print $1, $2+$3, $4}' "$work/time"
}
# First load creates the table (keys after data); it also provides the rows for COPY TO.
run_load create >/dev/null
psql "$url" -qc "COPY $table TO '$work/$table.bin' (FORMAT binary)" \
  -c "CREATE TABLE yardstick (LIKE $table INCLUDING ALL)"
loads_create=(); loads_replace=(); copies=(); cpus=(); peaks=()
for i in $(seq 1 "$runs"); do
  psql "$url" -qc "DROP TABLE $table"
  read -r s c p < <(run_load create); loads_create+=("$s"); cpus+=("$c"); peaks+=("$p")
  read -r s c p < <(run_load replace); loads_replace+=("$s")
  t0=$(date +%s.%N)
  psql "$url" -q -c "BEGIN" -c "TRUNCATE yardstick" -c "COPY yardstick FROM '$work/$table.bin' (FORMAT binary, FREEZE)" -c "COMMIT"
  t1=$(date +%s.%N); copies+=("$(echo "$t1 - $t0" | bc)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mc=$(median "${loads_create[@]}"); mr=$(median "${loads_replace[@]}"); my=$(median "${copies[@]}")
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; PostgreSQL $(psql "$admin" -Atc 'SHOW server_version')"
echo "input: $table, $rows items, $(echo "scale=1; $gz/1000000" | bc) MB gzip, $(echo "scale=1; $json/1000000" | bc) MB DynamoDB JSON"
echo "runs: $runs each, alternating; times in seconds"
echo "| run | load (create: keys after data) | load (replace: keyed table) | COPY FROM binary file (yardstick) |"
echo "| --- | --- | --- | --- |"
for i in $(seq 0 $((runs-1))); do echo "| $((i+1)) | ${loads_create[$i]} | ${loads_replace[$i]} | ${copies[$i]} |"; done
echo "| median | $mc | $mr | $my |"
echo "rows/s: create $(echo "$rows/$mc" | bc), replace $(echo "$rows/$mr" | bc), yardstick $(echo "$rows/$my" | bc)"
echo "JSON MB/s (create): $(echo "scale=1; $json/1000000/$mc" | bc); gzip MB/s: $(echo "scale=1; $gz/1000000/$mc" | bc)"
echo "ratio yardstick/load: create $(echo "scale=2; $my/$mc" | bc), replace $(echo "scale=2; $my/$mr" | bc)"
echo "ddb2pg CPU seconds per create run: ${cpus[*]}; peak RSS kB: ${peaks[*]}"
