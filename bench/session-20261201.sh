#!/usr/bin/env bash
# Benchmark session 20261201: large (400 KB) outputs, batch byte limit, ceiling, memory during an
# outage, and no regression at 500-byte outputs. Appends raw JSON lines to
# bench/results-20261201.jsonl with {"session","series","bin"} added. Human-readable progress,
# stderr of every command and the RSS samples of step 5 go to this script's stderr/stdout (run it
# with output to a log).
#
# Usage: bench/session-20261201.sh   (binaries: NEW=/tmp/runtally-new OLD=/tmp/runtally-old)
#
# If OLD is byte-identical to NEW (a failed build of the previous commit), every "old" run is
# skipped with a notice: it would only measure NEW a second time under the wrong label.
set -uo pipefail

NEW=${NEW:-/tmp/runtally-new}
OLD=${OLD:-/tmp/runtally-old}
SEED_DIR=/tmp/runtally-seed-baseline
GEN=/work/shared/baseline/gen_events.py
SAMPLES=3
SESSION=20261201

# The benchmark database of its own, as scripts/bench does it.
export RUNTALLY_STATE=$HOME/.cache/runtally/bench-state RUNTALLY_BOLT_PORT=7787 RUNTALLY_HTTP_PORT=2580 RUNTALLY_DB_HEAP=4g; unset NEO4J_URI NEO4J_USER NEO4J_PASSWORD NEO4J_DATABASE; cd /work/main; scripts/db reset; eval "$(scripts/db start)"
trap 'scripts/db stop >&2' EXIT

OUT=/work/main/bench/results-$SESSION.jsonl
mkdir -p /work/main/bench

BASELINE_DIR=$SEED_DIR /work/shared/baseline/setup.sh >&2

old_ok=1
if [ ! -x "$OLD" ]; then
  old_ok=0
  echo "NOTICE: no $OLD; skipping every old run" >&2
elif cmp -s "$NEW" "$OLD"; then
  old_ok=0
  echo "NOTICE: $OLD is byte-identical to $NEW (sha256 $(sha256sum <"$NEW" | cut -c1-16)); skipping every old run" >&2
fi
echo "binaries: new $(sha256sum <"$NEW" | cut -c1-16), old $( [ -f "$OLD" ] && sha256sum <"$OLD" | cut -c1-16)" >&2

say() { echo "=== $(date -u +%H:%M:%S) $*" >&2; }

# A fresh id prefix per stream.
prefix() { echo "b$(date +%s%N)"; }

# Appends stdin's last JSON line to the results, with extra fields (from scripts/bench's record).
# With no JSON line (a timeout, a crash), records the error instead.
record() {
  python3 -c '
import json, sys
extra = json.loads(sys.argv[1])
lines = [l for l in sys.stdin.read().splitlines() if l.startswith("{")]
d = json.loads(lines[-1]) if lines else {"error": extra.pop("error", "no JSON line")}
d.update(extra)
print(json.dumps(d, sort_keys=True))
' "$1" | tee -a "$OUT"
}

# run SERIES BIN TIMEOUT_S CMD...: runs CMD with a timeout (stdout captured, stderr to the log)
# and records its JSON line, or a line saying it timed out / failed.
run() {
  local series=$1 bin=$2 limit=$3; shift 3
  local tmp rc t0 t1
  tmp=$(mktemp)
  say "$series [$bin] $*"
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" >"$tmp"; rc=$?
  t1=$(date +%s.%N)
  local extra="{\"session\":\"$SESSION\",\"series\":\"$series\",\"bin\":\"$bin\""
  if ((rc == 124 || rc == 137)); then
    extra+=",\"error\":\"timeout after ${limit} s\",\"wall_s\":$(python3 -c "print(round($t1-$t0,3))")"
  elif ((rc != 0)); then
    extra+=",\"exit_code\":$rc"
  fi
  record "$extra}" <"$tmp"
  rm -f "$tmp"
}

# gen FILE ARGS...: a fresh gen_events.py stream with a new prefix.
gen() { local f=$1; shift; python3 "$GEN" "$@" --prefix "$(prefix)" >"$f"; }

LARGE=(--runs 5 --tasks 100 --output-bytes 400000)
stream=$(mktemp /tmp/session-$SESSION-stream.XXXXXX)

# 1. Warm-up (not recorded).
say "1. warm-up"
gen "$stream" --runs 200 --tasks 20
node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 64 >&2
gen "$stream" --runs 200 --tasks 20
"$NEW" replay "$stream" --concurrency 64 >&2

# 2. Large outputs, 400 KB: seed and new alternating, then old once.
say "2. large outputs"
for _ in $(seq $SAMPLES); do
  gen "$stream" "${LARGE[@]}"
  run large-400k-seed seed 600 node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 5
  gen "$stream" "${LARGE[@]}"
  run large-400k-new new 600 "$NEW" replay "$stream" --concurrency 5
done
: >"$stream"
if ((old_ok)); then
  gen "$stream" "${LARGE[@]}"
  run large-400k-old old 300 "$OLD" replay "$stream" --concurrency 5
else
  say "SKIP large-400k-old: old binary identical to new"
fi
: >"$stream"

# 3. Batch byte limit sweep (new only).
say "3. batch byte sweep"
for _ in $(seq $SAMPLES); do
  for x in 2097152 4194304 8388608 12582912; do
    gen "$stream" "${LARGE[@]}"
    run "large-400k-batch-$x" new 600 "$NEW" replay "$stream" --concurrency 5 --max-batch-bytes "$x"
  done
done
: >"$stream"

# 4. Ceiling: raw writes vs through the actors.
say "4. ceiling"
for _ in $(seq $SAMPLES); do
  run large-400k-raw new 600 "$NEW" loadgen --raw "${LARGE[@]}" --concurrency 1 --prefix "$(prefix)"
  run large-400k-loadgen new 600 "$NEW" loadgen "${LARGE[@]}" --concurrency 5 --probe-failures false --prefix "$(prefix)"
done

# 5. Memory during an outage (new only, 1 sample each).
say "5. outage"
outage() {
  local series=$1; shift
  local out err pid t0 rss max_out=0 max_all=0 rc alive
  out=$(mktemp); err=$(mktemp)
  scripts/db stop >&2
  say "$series: db stopped; starting loadgen $*"
  "$NEW" loadgen --runs 40 --tasks 100 --output-bytes 400000 --concurrency 5 --probe-failures false --prefix "$(prefix)" "$@" >"$out" 2>"$err" &
  pid=$!
  t0=$SECONDS
  while ((SECONDS - t0 < 35)); do
    kill -0 "$pid" 2>/dev/null || break
    rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$rss" ]; then
      echo "rss $series t=$((SECONDS - t0))s db=down VmRSS=${rss} kB" >&2
      ((rss > max_out)) && max_out=$rss
    fi
    sleep 1
  done
  alive=1; kill -0 "$pid" 2>/dev/null || alive=0
  if ((!alive)); then
    say "$series: loadgen exited while the database was down; it printed:"
    echo "--- stdout ---" >&2; cat "$out" >&2; echo "--- stderr ---" >&2; cat "$err" >&2; echo "--- end ---" >&2
  fi
  say "$series: starting the db again"
  eval "$(scripts/db start)"
  t0=$SECONDS
  while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 < 600)); do
    rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$rss" ]; then
      echo "rss $series t=+$((SECONDS - t0))s db=up VmRSS=${rss} kB" >&2
      ((rss > max_all)) && max_all=$rss
    fi
    sleep 1
  done
  local extra="{\"session\":\"$SESSION\",\"series\":\"$series\",\"bin\":\"new\""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"; sleep 5; kill -KILL "$pid" 2>/dev/null || true
    extra+=",\"error\":\"timeout after 600 s with the db up\""
  fi
  wait "$pid"; rc=$?
  ((rc != 0)) && extra+=",\"exit_code\":$rc"
  ((max_out > max_all)) && max_all=$max_out
  say "$series: sampled VmRSS max during the outage = $max_out kB ($((max_out / 1024)) MiB); max overall = $max_all kB ($((max_all / 1024)) MiB)"
  echo "--- $series stderr (last 30 lines) ---" >&2; tail -n 30 "$err" >&2
  record "$extra}" <"$out"
  rm -f "$out" "$err"
}
outage outage-400k-default
outage outage-400k-64MiB --max-pending-bytes 67108864

# 6. No regression at 500-byte outputs, new and old alternating.
say "6a. small replay c=128"
for _ in $(seq $SAMPLES); do
  gen "$stream" --runs 1000 --tasks 20
  run small-replay-c128 new 600 "$NEW" replay "$stream" --concurrency 128
  if ((old_ok)); then
    gen "$stream" --runs 1000 --tasks 20
    run small-replay-c128 old 600 "$OLD" replay "$stream" --concurrency 128
  fi
done
rm -f "$stream"

say "6b. paced, fresh database"
scripts/db stop; scripts/db reset; eval "$(scripts/db start)"
"$NEW" loadgen --runs 600 --tasks 20 --concurrency 32 --rate 2000 >/dev/null
for r in 2000 4000; do
  for _ in $(seq $SAMPLES); do
    run "paced-$r" new 600 "$NEW" loadgen --runs 600 --tasks 20 --concurrency 32 --rate "$r" --prefix "$(prefix)"
    if ((old_ok)); then
      run "paced-$r" old 600 "$OLD" loadgen --runs 600 --tasks 20 --concurrency 32 --rate "$r" --prefix "$(prefix)"
    fi
  done
done

# 7. Stop the bench database (also done by the EXIT trap).
say "7. done"
scripts/db stop
trap - EXIT
