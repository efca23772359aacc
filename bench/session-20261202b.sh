#!/usr/bin/env bash
# Benchmark session 20261202b: after the workspace split, the one-way layers and the new lane
# default (2 lanes, overlapping only for chunks of >= 1 MiB), against the previous session's
# last commit 50fc469 (1 lane), alternating, on fresh benchmark databases:
# (H) criterion hot path, this tree against a checkout of 50fc469 (OLD_TREE);
# (A) ArcadeDB: replay 1000x20 at 128 runs at once, paced failure visibility at 2,000 and
#     4,000 results/s;
# (L) 400 KB outputs (5 runs x 100 tasks, 5 at once) on ArcadeDB and Neo4j: the seed, new and old
#     defaults, raw loadgen;
# (N) Neo4j: replay 1000x20 at 128 runs, paced failure visibility, new against old.
# Appends JSON lines to bench/results-20261202b.jsonl; progress to stderr.
#
# Usage: bench/session-20261202b.sh [H] [A] [L] [N]   (default: all; NEW=/tmp/runtally-new,
#        OLD=/tmp/runtally-old release binaries, OLD_TREE=/tmp/wt-old a worktree of 50fc469)
set -uo pipefail

NEW=${NEW:-/tmp/runtally-new}
OLD=${OLD:-/tmp/runtally-old}
OLD_TREE=${OLD_TREE:-/tmp/wt-old}
SEED_DIR=/tmp/runtally-seed-baseline
GEN=/work/shared/baseline/gen_events.py
SAMPLES=${SAMPLES:-3}
SESSION=${SESSION:-20261202b}
PARTS=${*:-H A L N}
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
run() {
  local series=$1 bin=$2 limit=$3; shift 3
  local tmp err rc dl
  tmp=$(mktemp); err=$(mktemp)
  say "$series [$bin] $*"
  RUST_LOG=runtally=warn timeout -k 10 "$limit" "$@" >"$tmp" 2>"$err"; rc=$?
  dl=$(grep -c "DeadlockDetected\|retrying" "$err")
  tail -n 2 "$err" >&2
  local extra="{\"session\":\"$SESSION\",\"series\":\"$series\",\"bin\":\"$bin\",\"server\":\"${SERVER:-none}\",\"retries_logged\":$dl"
  ((rc == 124 || rc == 137)) && extra+=",\"error\":\"timeout after ${limit} s\""
  ((rc != 0)) && extra+=",\"exit_code\":$rc"
  record "$extra}" <"$tmp"
  rm -f "$tmp" "$err"
}
gen() { local f=$1; shift; python3 "$GEN" "$@" --prefix "$(prefix)" >"$f"; }
stream=$(mktemp /tmp/session-$SESSION-stream.XXXXXX)
LARGE=(--runs 5 --tasks 100 --output-bytes 400000)
PACED=(loadgen --runs 600 --tasks 20 --concurrency 32)

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
trap '[ -n "${SERVER:-}" ] && scripts/db stop >&2' EXIT

if [[ " $PARTS " == *" H "* ]]; then
  say "H. criterion hot path: new (this tree) against old ($OLD_TREE), alternating"
  for _ in 1 2; do
    for bin in new old; do
      dir=/work/main; [ $bin = old ] && dir=$OLD_TREE
      say "hot_path [$bin]"
      (cd "$dir" && CARGO_TARGET_DIR=/work/main/target cargo bench --quiet --bench hot_path 2>&1) |
        python3 -c '
import json, re, sys
name = None
for line in sys.stdin:
    m = re.match(r"^(\S+/\S+)\s*$", line.strip()) or re.match(r"^(\S+/\S+)\s+time:", line.strip())
    if m: name = m.group(1)
    t = re.search(r"thrpt:\s*\[\S+ \S+ (\S+) (\S+)", line)
    if t and name:
        v, unit = float(t.group(1)), t.group(2)
        mult = {"elem/s": 1, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}[unit]
        print(json.dumps({"bench": name, "elements_per_s": v * mult}))
        name = None
' | while read -r line; do record "{\"session\":\"$SESSION\",\"series\":\"hot-path\",\"bin\":\"$bin\"}" <<<"$line"; done
    done
  done
fi

if [[ " $PARTS " == *" A "* ]]; then
  say "A. ArcadeDB: new against old, alternating"
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

if [[ " $PARTS " == *" L "* ]]; then
  for server in arcadedb neo4j; do
    say "L. 400 KB outputs on $server"
    bench_db $server
    gen "$stream" --runs 200 --tasks 20; node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 64 >/dev/null 2>&1
    gen "$stream" "${LARGE[@]}"; "$NEW" replay "$stream" --concurrency 5 >/dev/null 2>&1
    for _ in $(seq "$SAMPLES"); do
      gen "$stream" "${LARGE[@]}"
      run large-400k-seed seed 900 node "$SEED_DIR/replay-seed.mjs" "$stream" --concurrency 5
      for bin in new old; do
        b=$NEW; [ $bin = old ] && b=$OLD
        gen "$stream" "${LARGE[@]}"
        run large-400k $bin 900 "$b" replay "$stream" --concurrency 5
      done
      run large-400k-raw new 900 "$NEW" loadgen --raw "${LARGE[@]}" --concurrency 1 --prefix "$(prefix)"
    done
  done
fi

if [[ " $PARTS " == *" N "* ]]; then
  say "N. Neo4j: new against old, alternating"
  [ "${SERVER:-}" = neo4j ] || bench_db neo4j
  for _ in 1 2 3; do "$NEW" "${PACED[@]}" --rate 2000 --prefix "$(prefix)" >/dev/null 2>&1; done
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
rm -f "$stream"
say "done"
