#!/usr/bin/env bash
# Session 20261203: the disk buffer's cost end to end. `runtally replay` of fresh streams with and
# without --buffer-dir, in the order off on on off off on on off (ABBA twice, so a database that
# warms up favours neither), after three warm-up replays, on a reset benchmark database.
# Prints mode, tasks/s, seconds per run and appends JSON lines to bench/results-$SESSION.jsonl
# (SESSION defaults to 20261203).
#
# Usage: bench/wal-abba.sh SERVER GEN_EVENTS_ARGS...   (CONC: runs at once, default 5;
#        EXTRA: more replay flags for the buffered runs; TMPBASE: where the buffer dir lives)
set -uo pipefail
cd /work/main
BIN=${BIN:-/work/main/target/release/runtally}
SESSION=${SESSION:-20261203}
server=$1; shift
gen_args=("$@")
unset NEO4J_URI NEO4J_USER NEO4J_PASSWORD NEO4J_DATABASE
if [ "$server" = neo4j ]; then
  export RUNTALLY_SERVER=neo4j RUNTALLY_STATE=$HOME/.cache/runtally/bench-state-neo4j RUNTALLY_BOLT_PORT=7797 RUNTALLY_DB_HEAP=2g RUNTALLY_NEO4J_SETTINGS="server.memory.pagecache.size=1g"
else
  export RUNTALLY_SERVER=arcadedb RUNTALLY_STATE=$HOME/.cache/runtally/bench-state RUNTALLY_BOLT_PORT=7787 RUNTALLY_HTTP_PORT=2580 RUNTALLY_DB_HEAP=4g
fi
scripts/db stop >/dev/null 2>&1; scripts/db reset >/dev/null 2>&1; eval "$(scripts/db start 2>/dev/null)"
S=$(mktemp -d ${TMPBASE:-/tmp}/walab.XXXXXX)
for w in 1 2 3; do python3 /work/shared/baseline/gen_events.py "${gen_args[@]}" --prefix "w$w$(date +%s%N)" > $S/s; $BIN replay $S/s --concurrency ${CONC:-5} >/dev/null 2>&1; done
for mode in off on on off off on on off; do
  python3 /work/shared/baseline/gen_events.py "${gen_args[@]}" --prefix "m$(date +%s%N)" > $S/s
  rm -rf $S/b; args=()
  # shellcheck disable=SC2206 # EXTRA is a list of flags
  [ $mode = on ] && args=(--buffer-dir $S/b ${EXTRA:-})
  $BIN replay $S/s --concurrency ${CONC:-5} "${args[@]}" 2>/dev/null | python3 -c "
import json, sys
d = json.loads(sys.stdin.read())
print('$mode', d['tasks_per_s'], d['seconds'])
d.update(session='$SESSION', series='wal-abba-$mode', server='$server', gen='${gen_args[*]}',
         extra='${EXTRA:-}', buffer_base='${TMPBASE:-/tmp}')
open('bench/results-$SESSION.jsonl', 'a').write(json.dumps(d, sort_keys=True) + chr(10))"
done
scripts/db stop >/dev/null 2>&1; rm -rf $S
