#!/usr/bin/env bash
# The seed's own orchestrator loop (shared/baseline/replay-seed.mjs: the seed's four calls per
# run and task, every error caught and counted) run twice on the same kind of stream: as it is,
# against the database; and with its one import switched to the TypeScript drop-in
# (clients/typescript), through `runtally serve`. Alternating, on a fresh database; the drop-in's
# time includes `POST /v1/flush` after the last call, so both count until everything is written.
# Appends JSON lines to bench/results-$SESSION.jsonl.
#
# Usage: bench/seed-dropin.sh   (SERVERS="arcadedb neo4j", SAMPLES=3, CONCURRENCY=32)
set -uo pipefail

BIN=${BIN:-/work/main/target/release/runtally}
GEN=/work/shared/baseline/gen_events.py
SAMPLES=${SAMPLES:-3}
SESSION=${SESSION:-20261204}
SERVERS=${SERVERS:-arcadedb neo4j}
CONCURRENCY=${CONCURRENCY:-32}
cd /work/main
OUT=/work/main/bench/results-$SESSION.jsonl
SCRATCH=$(mktemp -d /tmp/seed-dropin.XXXXXX)
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap 'stop_serve; [ -n "${SERVER:-}" ] && scripts/db stop >&2; rm -rf "$SCRATCH"' EXIT

say "setting up the seed and the drop-in"
BASELINE_DIR=$SCRATCH/seed /work/shared/baseline/setup.sh >&2
(cd clients/typescript && npm ci --no-audit --no-fund --silent && npm run build --silent) >&2
sed "s#import \* as seed from './persistence.mjs';#import * as seed from '$PWD/clients/typescript/dist/index.js';#" \
  "$SCRATCH/seed/replay-seed.mjs" >"$SCRATCH/seed/replay-dropin.mjs"
grep -q "clients/typescript/dist/index.js" "$SCRATCH/seed/replay-dropin.mjs" || {
  echo "the import was not switched" >&2
  exit 1
}

# $SCRATCH/dropin STREAM: the switched loop, then a flush; one JSON line timing both (a script,
# so that `run` can time it out).
cat >"$SCRATCH/dropin" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
t0=$(date +%s.%N)
line=$(node "$SCRATCH/seed/replay-dropin.mjs" "$1" --concurrency "$CONCURRENCY")
curl -s -X POST "$RUNTALLY_URL/v1/flush" >/dev/null
t1=$(date +%s.%N)
python3 -c '
import json, sys
d = json.loads(sys.argv[1]); total = float(sys.argv[3]) - float(sys.argv[2])
d.update(impl="seed-ts+drop-in", calls_seconds=d["seconds"], seconds=round(total, 3),
         tasks_per_s=round(d["tasks"] / total))
print(json.dumps(d))' "$line" "$t0" "$t1"
SH
chmod +x "$SCRATCH/dropin"
export SCRATCH CONCURRENCY

stream=$SCRATCH/stream.jsonl
for server in $SERVERS; do
  bench_db "$server"
  start_serve
  export RUNTALLY_URL=$SERVE_URL
  gen "$stream" --runs 50 --tasks 20
  node "$SCRATCH/seed/replay-seed.mjs" "$stream" --concurrency 8 >/dev/null # warm-up
  gen "$stream" --runs 50 --tasks 20
  "$SCRATCH/dropin" "$stream" >/dev/null
  for i in $(seq "$SAMPLES"); do
    for mode in seed dropin runtally; do
      gen "$stream" --runs 1000 --tasks 20
      case $mode in
        seed) run seed-ts 900 node "$SCRATCH/seed/replay-seed.mjs" "$stream" --concurrency "$CONCURRENCY" ;;
        dropin) run seed-dropin 900 "$SCRATCH/dropin" "$stream" ;;
        runtally) run runtally-replay 900 "$BIN" replay "$stream" --concurrency "$CONCURRENCY" ;;
      esac
    done
  done
  stop_serve
done
say "done: $OUT"
