#!/usr/bin/env bash
# Benchmark session 20261204 (issue 18): routing, and the driver's second protocol
# implementation it needs (neo4rs `unstable-bolt-protocol-impl-v2`, which replaces the message
# path of every URI, bolt:// included).
# (P) the protocol: `runtally replay STREAM` built before the change (OLD_BIN, v1) against this
#     tree's build (v2), both through bolt://, alternating, on a fresh database.
# (R) routing: this tree's build through bolt:// against neo4j:// (a ROUTE, then the table's
#     writer) to the same single server, alternating.
# Stream: gen_events.py --runs 1000 --tasks 20 (500-byte outputs), --concurrency 32; and 5 runs
# x 100 tasks of 400 KB, --concurrency 5. Appends JSON lines to bench/results-$SESSION.jsonl.
#
# Usage: OLD_BIN=/path/to/runtally bench/session-20261204-routing.sh [P] [R]
set -uo pipefail

BIN=${BIN:-/work/main/target/release/runtally}
OLD_BIN=${OLD_BIN:-}
GEN=/work/shared/baseline/gen_events.py
SAMPLES=${SAMPLES:-5}
SESSION=${SESSION:-20261204r}
SERVERS=${SERVERS:-arcadedb neo4j}
PARTS=${*:-P R}
cd /work/main
OUT=/work/main/bench/results-$SESSION.jsonl
SCRATCH=$(mktemp -d /tmp/session-$SESSION.XXXXXX)
# shellcheck source=bench/lib.sh
. bench/lib.sh

trap '[ -n "${SERVER:-}" ] && scripts/db stop >&2; rm -rf "$SCRATCH"' EXIT

stream=$SCRATCH/stream.jsonl
SMALL=(--runs 1000 --tasks 20)
LARGE=(--runs 5 --tasks 100 --output-bytes 400000)
# A fresh stream of the current size (fresh ids: every replay writes new nodes).
fresh() { if [ "$size" = 500b ]; then gen "$stream" "${SMALL[@]}"; else gen "$stream" "${LARGE[@]}"; fi; }

for server in $SERVERS; do
  bench_db "$server"
  bolt=$NEO4J_URI
  routed="neo4j://${NEO4J_URI#bolt://}"
  gen "$stream" --runs 50 --tasks 20
  "$BIN" replay "$stream" >/dev/null 2>&1 # warm-up
  # Each variant is "series binary URI", run in this order within every sample.
  variants=()
  [[ " $PARTS " == *" P "* && -n "$OLD_BIN" ]] &&
    variants+=("protocol-v1 $OLD_BIN $bolt" "protocol-v2 $BIN $bolt")
  [[ " $PARTS " == *" R "* ]] && variants+=("uri-bolt $BIN $bolt" "uri-neo4j $BIN $routed")
  for size in 500b 400k; do
    if [ "$size" = 500b ]; then conc=32; else conc=5; fi
    for _ in $(seq "$SAMPLES"); do
      for variant in "${variants[@]}"; do
        read -r series bin target <<<"$variant"
        fresh
        NEO4J_URI=$target run "$series-$size" 900 "$bin" replay "$stream" --concurrency "$conc"
      done
    done
  done
done
say "done: $OUT"
