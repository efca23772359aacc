#!/usr/bin/env bash
# Benchmark session 20261202: (A) the two-transaction write (task rows, then run states) against
# the previous commit on ArcadeDB, alternating; (B) the seed against runtally on Neo4j 5.26
# (throughput at three concurrencies, write errors, paced failure visibility, 400 KB outputs);
# (C) lock order on Neo4j: runs sharing one plan node, 1 and 2 write lanes, 1 and 2 processes;
# (D) 400 KB outputs on both servers: the seed, runtally's defaults, 4 MiB batches, 2 lanes, raw;
# (E) paced failure visibility against 6a7e183 (before the ordering change) on ArcadeDB.
# Appends raw JSON lines to bench/results-20261202.jsonl with {"session","series","bin"} added;
# progress and every command's stderr go to this script's stderr.
#
# Usage: bench/session-20261202.sh [A] [B] [C] [D] [E]   (default: all; release binaries
#        NEW=/tmp/runtally-new of this change, OLD=/tmp/runtally-old of the previous commit
#        2755625, BEFORE=/tmp/runtally-6a7e183 of 6a7e183)
set -uo pipefail

NEW=${NEW:-/tmp/runtally-new}
OLD=${OLD:-/tmp/runtally-old}
SEED_DIR=/tmp/runtally-seed-baseline
GEN=/work/shared/baseline/gen_events.py
SAMPLES=${SAMPLES:-3}
SESSION=20261202
PARTS=${*:-A B C D E}
cd /work/main
OUT=/work/main/bench/results-$SESSION.jsonl
BASELINE_DIR=$SEED_DIR /work/shared/baseline/setup.sh >&2

say() { echo "=== $(date -u +%H:%M:%S) $*" >&2; }
prefix() { echo "b$(date +%s%N)"; }
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
# run SERIES BIN TIMEOUT_S CMD...: records CMD's last JSON line; its stderr is kept and the
# number of deadlocks it logged is added (RUST_LOG=runtally=warn logs every retried write).
run() {
  local series=$1 bin=$2 limit=$3; shift 3
  local tmp err rc dl
  tmp=$(mktemp); err=$(mktemp)
  say "$series [$bin] $*"
  RUST_LOG=runtally=warn timeout -k 10 "$limit" "$@" >"$tmp" 2>"$err"; rc=$?
  dl=$(grep -c "DeadlockDetected" "$err")
  tail -n 3 "$err" >&2
  local extra="{\"session\":\"$SESSION\",\"series\":\"$series\",\"bin\":\"$bin\",\"server\":\"$SERVER\",\"deadlocks_logged\":$dl"
  ((rc == 124 || rc == 137)) && extra+=",\"error\":\"timeout after ${limit} s\""
  ((rc != 0)) && extra+=",\"exit_code\":$rc"
  record "$extra}" <"$tmp"
  rm -f "$tmp" "$err"
}
gen() { local f=$1; shift; python3 "$GEN" "$@" --prefix "$(prefix)" >"$f"; }
stream=$(mktemp /tmp/session-$SESSION-stream.XXXXXX)
LARGE=(--runs 5 --tasks 100 --output-bytes 400000)

# The benchmark databases of their own, fresh: ArcadeDB as scripts/bench has it; Neo4j on its
# own port with a 1 GiB page cache and a 2 GiB heap.
bench_db() {
  [ -n "${SERVER:-}" ] && scripts/db stop >&2
  unset NEO4J_URI NEO4J_USER NEO4J_PASSWORD NEO4J_DATABASE
  if [ "$1" = neo4j ]; then
    export RUNTALLY_SERVER=neo4j RUNTALLY_STATE=$HOME/.cache/runtally/bench-state-neo4j RUNTALLY_BOLT_PORT=7797 RUNTALLY_DB_HEAP=2g
    export RUNTALLY_NEO4J_SETTINGS="server.memory.pagecache.size=1g"
  else
    export RUNTALLY_SERVER=arcadedb RUNTALLY_STATE=$HOME/.cache/runtally/bench-state RUNTALLY_BOLT_PORT=7787 RUNTALLY_HTTP_PORT=2580 RUNTALLY_DB_HEAP=4g
    unset RUNTALLY_NEO4J_SETTINGS
  fi
  SERVER=$1
  scripts/db stop >&2 || true
  scripts/db reset >&2 || true
  eval "$(scripts/db start)"
}
trap 'scripts/db stop >&2' EXIT

PACED=(loadgen --runs 600 --tasks 20 --concurrency 32)

if [[ " $PARTS " == *" A "* ]]; then
  say "A. ArcadeDB: new (two transactions) against old, alternating"
  bench_db arcadedb
  for _ in 1 2 3 4 5; do "$NEW" "${PACED[@]}" --rate 2000 --prefix "$(prefix)" >/dev/null 2>&1; done
  for _ in $(seq "$SAMPLES"); do
    for bin in new old; do
      b=$NEW; [ $bin = old ] && b=$OLD
      gen "$stream" --runs 1000 --tasks 20
      run small-replay-c128 $bin 600 "$b" replay "$stream" --concurrency 128
      run paced-2000 $bin 600 "$b" "${PACED[@]}" --rate 2000 --prefix "$(prefix)"
      run paced-4000 $bin 600 "$b" "${PACED[@]}" --rate 4000 --prefix "$(prefix)"
    done
  done
fi

if [[ " $PARTS " == *" B "* ]]; then
  say "B. Neo4j: the seed against runtally"
  bench_db neo4j
  gen "$stream" --runs 200 --tasks 20; node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 64 >/dev/null 2>&1
  gen "$stream" --runs 200 --tasks 20; "$NEW" replay "$stream" --concurrency 64 >/dev/null 2>&1
  for _ in 1 2 3; do "$NEW" "${PACED[@]}" --rate 2000 --prefix "$(prefix)" >/dev/null 2>&1; done
  for _ in $(seq "$SAMPLES"); do
    for c in 32 64 128; do
      gen "$stream" --runs 1000 --tasks 20
      run "replay-c$c-seed" seed 900 node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency "$c"
      gen "$stream" --runs 1000 --tasks 20
      run "replay-c$c" new 600 "$NEW" replay "$stream" --concurrency "$c"
    done
    run paced-2000 new 600 "$NEW" "${PACED[@]}" --rate 2000 --prefix "$(prefix)"
    run paced-4000 new 600 "$NEW" "${PACED[@]}" --rate 4000 --prefix "$(prefix)"
    gen "$stream" "${LARGE[@]}"
    run large-400k-seed seed 900 node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 5
    gen "$stream" "${LARGE[@]}"
    run large-400k new 900 "$NEW" replay "$stream" --concurrency 5
  done
fi

if [[ " $PARTS " == *" C "* ]]; then
  say "C. Neo4j: lock order on a shared plan node"
  [ "${SERVER:-}" = neo4j ] || bench_db neo4j
  plan="lockplan-$(date +%s)"
  # shellcheck source=../scripts/lib.sh
  source scripts/lib.sh
  BOLT_PASSWORD=$NEO4J_PASSWORD bolt_query 127.0.0.1 "$RUNTALLY_BOLT_PORT" "$NEO4J_USER" "$NEO4J_DATABASE" \
    "CREATE (:Node {id: '$plan', type: 'orchestration_plan', name: 'shared'})" >&2
  LG=(loadgen --runs 400 --tasks 20 --concurrency 32 --probe-failures false)
  two() {
    # Two processes at once, each its own runs, the same plan node; records both.
    local a b ea eb
    a=$(mktemp); b=$(mktemp); ea=$(mktemp); eb=$(mktemp)
    say "$1: two processes --plan $plan ${*:2}"
    RUST_LOG=runtally=warn "$NEW" "${LG[@]}" --prefix "$(prefix)" --plan "$plan" "${@:2}" >"$a" 2>"$ea" &
    local pa=$!
    RUST_LOG=runtally=warn "$NEW" "${LG[@]}" --prefix "$(prefix)x" --plan "$plan" "${@:2}" >"$b" 2>"$eb"
    wait $pa
    for f in "$a:$ea" "$b:$eb"; do
      record "{\"session\":\"$SESSION\",\"series\":\"$1\",\"bin\":\"new\",\"server\":\"$SERVER\",\"deadlocks_logged\":$(grep -c DeadlockDetected "${f#*:}")}" <"${f%%:*}"
    done
    rm -f "$a" "$b" "$ea" "$eb"
  }
  "$NEW" "${LG[@]}" --prefix "$(prefix)" >/dev/null 2>&1
  for _ in $(seq "$SAMPLES"); do
    run lock-own-plans-1lane new 600 "$NEW" "${LG[@]}" --prefix "$(prefix)"
    run lock-shared-plan-1lane new 600 "$NEW" "${LG[@]}" --prefix "$(prefix)" --plan "$plan"
    run lock-own-plans-2lanes new 600 "$NEW" "${LG[@]}" --prefix "$(prefix)" --write-lanes 2
    run lock-shared-plan-2lanes new 600 "$NEW" "${LG[@]}" --prefix "$(prefix)" --plan "$plan" --write-lanes 2
    two lock-shared-plan-2procs-1lane
    two lock-shared-plan-2procs-2lanes --write-lanes 2
  done
fi
if [[ " $PARTS " == *" D "* ]]; then
  # D. Large outputs (400 KB) on both servers: the seed against runtally with the defaults,
  #    4 MiB batches, 2 write lanes, and both; alternating within each sample.
  for server in arcadedb neo4j; do
    say "D. large outputs on $server"
    bench_db $server
    gen "$stream" --runs 200 --tasks 20; node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 64 >/dev/null 2>&1
    gen "$stream" "${LARGE[@]}"; "$NEW" replay "$stream" --concurrency 5 >/dev/null 2>&1
    for _ in $(seq "$SAMPLES"); do
      gen "$stream" "${LARGE[@]}"
      run large-400k-seed seed 900 node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 5
      for variant in default 4MiB 2lanes 2lanes-4MiB; do
        opts=()
        [[ $variant == *4MiB ]] && opts+=(--max-batch-bytes 4194304)
        [[ $variant == 2lanes* ]] && opts+=(--write-lanes 2)
        gen "$stream" "${LARGE[@]}"
        run "large-400k-$variant" new 900 "$NEW" replay "$stream" --concurrency 5 "${opts[@]}"
      done
      run large-400k-raw new 900 "$NEW" loadgen --raw "${LARGE[@]}" --concurrency 1 --prefix "$(prefix)"
      run large-400k-raw-c2 new 900 "$NEW" loadgen --raw "${LARGE[@]}" --concurrency 2 --prefix "$(prefix)"
    done
  done
fi

if [[ " $PARTS " == *" E "* ]]; then
  # E. Failure visibility before the ordering change (BEFORE, commit 6a7e183) and now, on a
  #    fresh ArcadeDB warmed as in A, alternating.
  BEFORE=${BEFORE:-/tmp/runtally-6a7e183}
  say "E. ArcadeDB: new against 6a7e183 (before the ordering change), alternating"
  bench_db arcadedb
  for _ in 1 2 3 4 5; do "$NEW" "${PACED[@]}" --rate 2000 --prefix "$(prefix)" >/dev/null 2>&1; done
  for _ in $(seq "$SAMPLES"); do
    for bin in new before; do
      b=$NEW; [ $bin = before ] && b=$BEFORE
      run paced-2000 $bin 600 "$b" "${PACED[@]}" --rate 2000 --prefix "$(prefix)"
      run paced-4000 $bin 600 "$b" "${PACED[@]}" --rate 4000 --prefix "$(prefix)"
    done
  done
fi
rm -f "$stream"
say "done"
