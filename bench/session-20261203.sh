#!/usr/bin/env bash
# Benchmark session 20261203: the disk buffer (issue 15), with this tree's release build.
# (W) the write-ahead log's cost end to end: `runtally replay` of the same kind of stream with
#     and without --buffer-dir, alternating (500-byte outputs: 1000 runs x 20 tasks, 128 runs at
#     once; 400 KB outputs: 5 runs x 100 tasks, 5 at once), on a fresh benchmark database;
# (O) overflow into the buffer with the database unreachable (`loadgen --store down`): results
#     accepted per second, MB/s of outputs, task_finished latency, at 500 B and 400 KB;
# (D) drain speed: `runtally drain` of an overflow's buffer against the live path
#     (`loadgen` of the same workload into the database), alternating.
# Appends JSON lines to bench/results-$SESSION.jsonl; progress to stderr.
#
# Usage: bench/session-20261203.sh [W] [O] [D]   (default: all; SERVERS="arcadedb neo4j")
set -uo pipefail

BIN=${BIN:-/work/main/target/release/runtally}
GEN=/work/shared/baseline/gen_events.py
SAMPLES=${SAMPLES:-3}
SESSION=${SESSION:-20261203}
SERVERS=${SERVERS:-arcadedb neo4j}
PARTS=${*:-W O D}
cd /work/main
OUT=/work/main/bench/results-$SESSION.jsonl
SCRATCH=$(mktemp -d /tmp/session-$SESSION.XXXXXX)

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap '[ -n "${SERVER:-}" ] && scripts/db stop >&2; rm -rf "$SCRATCH"' EXIT

stream=$SCRATCH/stream.jsonl
SMALL=(--runs 1000 --tasks 20)
LARGE=(--runs 5 --tasks 100 --output-bytes 400000)

if [[ " $PARTS " == *" O "* ]]; then
  SERVER=none
  say "O. overflow into the buffer, database unreachable"
  # Memory bounds small enough that the workload overflows: 10 MiB (4 MiB of rows) at 500 B,
  # 64 MiB at 400 KB. The paced series (20,000 results/s) gives task_finished latency while
  # overflowing at a steady rate; the others accept as fast as they can.
  SMALL_BOUND=(--max-batch-bytes 1048576 --max-pending-bytes 10485760)
  for i in $(seq "$SAMPLES"); do
    rm -rf "$SCRATCH/o"
    run overflow-500b 600 "$BIN" loadgen --store down --runs 200 --tasks 100 --output-bytes 500 \
      --concurrency 128 "${SMALL_BOUND[@]}" --buffer-dir "$SCRATCH/o" --when-full overflow \
      --prefix "$(prefix)"
    rm -rf "$SCRATCH/o"
    run overflow-500b-paced 600 "$BIN" loadgen --store down --runs 200 --tasks 100 \
      --output-bytes 500 --concurrency 32 --rate 20000 "${SMALL_BOUND[@]}" \
      --buffer-dir "$SCRATCH/o" --when-full overflow --prefix "$(prefix)"
    rm -rf "$SCRATCH/o"
    run overflow-400k 600 "$BIN" loadgen --store down --runs 10 --tasks 50 --output-bytes 400000 \
      --concurrency 10 --max-pending-bytes 67108864 --buffer-dir "$SCRATCH/o" \
      --when-full overflow --prefix "$(prefix)"
  done
  rm -rf "$SCRATCH/o"
fi

for server in $SERVERS; do
  if [[ " $PARTS " == *" W "* ]]; then
    bench_db "$server"
    say "W. write-ahead log cost on $server"
    gen "$stream" --runs 50 --tasks 20
    "$BIN" replay "$stream" >/dev/null 2>&1 # warm-up
    for i in $(seq "$SAMPLES"); do
      for mode in off on; do
        gen "$stream" "${SMALL[@]}"
        rm -rf "$SCRATCH/w"
        args=()
        [ "$mode" = on ] && args=(--buffer-dir "$SCRATCH/w")
        run "wal-$mode-500b" 900 "$BIN" replay "$stream" --concurrency 128 "${args[@]}"
      done
    done
    for i in $(seq "$SAMPLES"); do
      for mode in off on; do
        gen "$stream" "${LARGE[@]}"
        rm -rf "$SCRATCH/w"
        args=()
        [ "$mode" = on ] && args=(--buffer-dir "$SCRATCH/w")
        run "wal-$mode-400k" 900 "$BIN" replay "$stream" --concurrency 5 "${args[@]}"
      done
    done
  fi
  if [[ " $PARTS " == *" D "* ]]; then
    [ "${SERVER:-}" = "$server" ] || bench_db "$server"
    say "D. drain against the live path on $server"
    for i in $(seq "$SAMPLES"); do
      rm -rf "$SCRATCH/d"
      "$BIN" loadgen --store down --runs 200 --tasks 100 --output-bytes 500 --concurrency 128 \
        --buffer-dir "$SCRATCH/d" --when-full overflow --prefix "$(prefix)" >/dev/null 2>&1
      run drain-500b 900 "$BIN" drain --buffer-dir "$SCRATCH/d"
      run live-500b 900 "$BIN" loadgen --runs 200 --tasks 100 --output-bytes 500 \
        --concurrency 128 --probe-failures false --prefix "$(prefix)"
    done
    rm -rf "$SCRATCH/d"
  fi
done
say "done: $OUT"
