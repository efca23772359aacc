#!/usr/bin/env bash
# Benchmark session 20261204: `runtally serve` (issue 17), with this tree's release build.
# (E) the HTTP edge alone: `serve --store null` fed by `loadgen --http` (event-stream JSON, a
#     request per run) and `loadgen --otlp` (an OTLP protobuf trace per run), 2,000 runs x 20
#     tasks, 32 requests in flight; events/s, spans/s, request latency. Beside it the database's
#     ceiling for the same rows (`loadgen --raw`) on each server, and the in-process null store.
# (H) end to end on the benchmark stream (gen_events.py --runs 1000 --tasks 20, 500-byte
#     outputs; and 5 runs x 100 tasks of 400 KB): `runtally replay STREAM` in process against
#     `runtally replay --http` through one `runtally serve` (requests of at most 1 MiB, the
#     default), alternating, on a fresh database.
# Appends JSON lines to bench/results-$SESSION.jsonl; progress to stderr.
#
# Usage: bench/session-20261204.sh [E] [H]   (default: both; SERVERS="arcadedb neo4j")
set -uo pipefail

BIN=${BIN:-/work/main/target/release/runtally}
GEN=/work/shared/baseline/gen_events.py
SAMPLES=${SAMPLES:-3}
SESSION=${SESSION:-20261204}
SERVERS=${SERVERS:-arcadedb neo4j}
PARTS=${*:-E H}
cd /work/main
OUT=/work/main/bench/results-$SESSION.jsonl
SCRATCH=$(mktemp -d /tmp/session-$SESSION.XXXXXX)
# shellcheck source=bench/lib.sh
. bench/lib.sh

trap 'stop_serve; [ -n "${SERVER:-}" ] && scripts/db stop >&2; rm -rf "$SCRATCH"' EXIT

stream=$SCRATCH/stream.jsonl
SMALL=(--runs 1000 --tasks 20)
LARGE=(--runs 5 --tasks 100 --output-bytes 400000)

if [[ " $PARTS " == *" E "* ]]; then
  SERVER=none
  say "E. the HTTP edge with the null store"
  start_serve --store null
  "$BIN" loadgen --http "$SERVE_URL" --runs 200 --tasks 20 --prefix "$(prefix)" >/dev/null # warm-up
  for i in $(seq "$SAMPLES"); do
    run edge-events 300 "$BIN" loadgen --http "$SERVE_URL" --runs 2000 --tasks 20 \
      --prefix "$(prefix)"
    run edge-otlp 300 "$BIN" loadgen --otlp "$SERVE_URL" --runs 2000 --tasks 20 \
      --prefix "$(prefix)"
    run in-process-null 300 "$BIN" loadgen --store null --runs 2000 --tasks 20 --pregenerate \
      --prefix "$(prefix)"
  done
  stop_serve
  SERVER=
fi

for server in $SERVERS; do
  if [[ " $PARTS " == *" E "* ]]; then
    bench_db "$server"
    say "E. the database's ceiling on $server"
    for i in $(seq "$SAMPLES"); do
      run ceiling-raw 600 "$BIN" loadgen --raw --runs 1000 --tasks 20 --concurrency 32 \
        --prefix "$(prefix)"
    done
  fi
  if [[ " $PARTS " == *" H "* ]]; then
    [ "${SERVER:-}" = "$server" ] || bench_db "$server"
    say "H. end to end, in process against over HTTP, on $server"
    start_serve
    gen "$stream" --runs 50 --tasks 20
    "$BIN" replay "$stream" >/dev/null 2>&1 # warm-up
    gen "$stream" --runs 50 --tasks 20
    "$BIN" replay --http "$SERVE_URL" "$stream" >/dev/null 2>&1
    for size in 500b 400k; do
      for i in $(seq "$SAMPLES"); do
        for mode in process http; do
          # LIVE=1: the runs start now, as a live orchestrator's do (gen_events' default start
          # is a fixed day in the past, as in a replay of old logs).
          live=()
          [ -n "${LIVE:-}" ] && live=(--start-ms "$(date +%s%3N)")
          if [ "$size" = 500b ]; then gen "$stream" "${SMALL[@]}" "${live[@]}"; conc=32; else gen "$stream" "${LARGE[@]}" "${live[@]}"; conc=5; fi
          args=()
          [ "$mode" = http ] && args=(--http "$SERVE_URL")
          run "e2e-$mode-$size" 900 "$BIN" replay "$stream" --concurrency "$conc" "${args[@]}"
        done
      done
    done
    stop_serve
  fi
done
say "done: $OUT"
