#!/usr/bin/env bash
# Session 20261204p: the disk buffer written past the page cache (`O_DIRECT`, the default) or
# through it (`--buffer-page-cache`, how it was written before), against no buffer at all.
#
# (M) end to end: `runtally replay` of a fresh stream per replay, in rounds of off / page cache
#     / direct (every other round in reverse order, so a database that grows or warms favours
#     none), after three warm-up replays, on a reset benchmark database per stream. Streams:
#     10 runs x 100 tasks of 400 KB (5 at once), and 1000 runs x 20 tasks of 500 B (128 at
#     once). Each line also has the replay's user and system CPU seconds.
# (O) overflow into the buffer with the database unreachable (`loadgen --store down`), page
#     cache and direct alternating: 400 KB and 500 B outputs, and 500 B paced at 20,000/s
#     (task_finished latency), as in session 20261203b.
# Appends JSON lines to bench/results-$SESSION.jsonl; progress to stderr.
#
# Usage: bench/session-20261204p.sh [M] [O]   (ROUNDS=8, SAMPLES=3, SERVERS=neo4j)
# Session 20261204o is this script with the build before outputs were written raw (SESSION=…o).
set -uo pipefail

BIN=${BIN:-/work/main/target/release/runtally}
GEN=/work/shared/baseline/gen_events.py
ROUNDS=${ROUNDS:-8}
SAMPLES=${SAMPLES:-3}
SESSION=${SESSION:-20261204p}
SERVERS=${SERVERS:-neo4j}
PARTS=${*:-M O}
cd /work/main
OUT=/work/main/bench/results-$SESSION.jsonl
SCRATCH=$(mktemp -d /tmp/session-$SESSION.XXXXXX)

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap '[ -n "${SERVER:-}" ] && scripts/db stop >&2; rm -rf "$SCRATCH"' EXIT

stream=$SCRATCH/stream.jsonl
MODES=(off page-cache direct)

# mode_args MODE: the replay flags of a mode.
mode_args() {
  case $1 in
    off) ;;
    page-cache) echo "--buffer-dir $SCRATCH/b --buffer-page-cache" ;;
    direct) echo "--buffer-dir $SCRATCH/b" ;;
  esac
}

# timed SERIES CMD...: `run`, with the command's user and system seconds added to its line.
timed() {
  local series=$1; shift
  run "$series" 900 /usr/bin/time -f '{"user_s":%U,"sys_s":%S}' -o "$SCRATCH/time" "$@" >/dev/null
  python3 - "$OUT" "$SCRATCH/time" <<'EOF'
import json, sys
out, timing = sys.argv[1], sys.argv[2]
lines = open(out).read().splitlines()
cpu = json.loads(open(timing).read().splitlines()[-1])
last = json.loads(lines[-1]); last.update(cpu)
lines[-1] = json.dumps(last, sort_keys=True)
open(out, "w").write("\n".join(lines) + "\n")
print(last["series"], last.get("tasks_per_s"), cpu, file=sys.stderr)
EOF
}

if [[ " $PARTS " == *" M "* ]]; then
  for server in $SERVERS; do
    for size in 400k 500b; do
      if [ $size = 400k ]; then
        streamargs=(--runs 10 --tasks 100 --output-bytes 400000); conc=5
      else
        streamargs=(--runs 1000 --tasks 20); conc=128
      fi
      bench_db "$server"
      say "M. $size on $server: off / page cache / direct, $ROUNDS rounds"
      for _ in 1 2 3; do
        gen "$stream" "${streamargs[@]}"
        "$BIN" replay "$stream" --concurrency $conc >/dev/null 2>&1 # warm-up
      done
      for r in $(seq "$ROUNDS"); do
        order=("${MODES[@]}")
        ((r % 2 == 0)) && order=(direct page-cache off)
        for mode in "${order[@]}"; do
          gen "$stream" "${streamargs[@]}"
          rm -rf "$SCRATCH/b"
          # shellcheck disable=SC2046 # mode_args is a list of flags
          timed "wal-$mode-$size" "$BIN" replay "$stream" --concurrency $conc $(mode_args $mode)
        done
      done
    done
  done
fi

if [[ " $PARTS " == *" O "* ]]; then
  SERVER=none
  say "O. overflow into the buffer, database unreachable: page cache / direct"
  SMALL_BOUND=(--max-batch-bytes 1048576 --max-pending-bytes 10485760)
  for i in $(seq "$SAMPLES"); do
    for mode in page-cache direct; do
      flag=(); [ $mode = page-cache ] && flag=(--buffer-page-cache)
      rm -rf "$SCRATCH/o"
      run "overflow-400k-$mode" 600 "$BIN" loadgen --store down --runs 10 --tasks 50 \
        --output-bytes 400000 --concurrency 10 --max-pending-bytes 67108864 \
        --buffer-dir "$SCRATCH/o" --when-full overflow "${flag[@]}" --prefix "$(prefix)"
      rm -rf "$SCRATCH/o"
      run "overflow-500b-$mode" 600 "$BIN" loadgen --store down --runs 200 --tasks 100 \
        --output-bytes 500 --concurrency 128 "${SMALL_BOUND[@]}" --buffer-dir "$SCRATCH/o" \
        --when-full overflow "${flag[@]}" --prefix "$(prefix)"
      rm -rf "$SCRATCH/o"
      run "overflow-500b-paced-$mode" 600 "$BIN" loadgen --store down --runs 200 --tasks 100 \
        --output-bytes 500 --concurrency 32 --rate 20000 "${SMALL_BOUND[@]}" \
        --buffer-dir "$SCRATCH/o" --when-full overflow "${flag[@]}" --prefix "$(prefix)"
    done
  done
  rm -rf "$SCRATCH/o"
fi
