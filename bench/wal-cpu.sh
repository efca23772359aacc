#!/usr/bin/env bash
# Session 20261203b: the replay's own CPU (user, system, peak RSS from /usr/bin/time) with and
# without the disk buffer, 400 KB outputs on the Neo4j benchmark database, alternating.
# Usage: bench/wal-cpu.sh
cd /work/main
BIN=/work/main/target/release/runtally
unset NEO4J_URI NEO4J_USER NEO4J_PASSWORD NEO4J_DATABASE
export RUNTALLY_SERVER=neo4j RUNTALLY_STATE=$HOME/.cache/runtally/bench-state-neo4j RUNTALLY_BOLT_PORT=7797 RUNTALLY_DB_HEAP=2g RUNTALLY_NEO4J_SETTINGS="server.memory.pagecache.size=1g"
scripts/db stop >/dev/null 2>&1; scripts/db reset >/dev/null 2>&1; eval "$(scripts/db start 2>/dev/null)"
S=$(mktemp -d /tmp/walcpu.XXXXXX)
for w in 1 2; do python3 /work/shared/baseline/gen_events.py --runs 10 --tasks 100 --output-bytes 400000 --prefix "w$w$(date +%s%N)" > $S/s; $BIN replay $S/s --concurrency 5 >/dev/null 2>&1; done
for mode in off on on off off on; do
  python3 /work/shared/baseline/gen_events.py --runs 10 --tasks 100 --output-bytes 400000 --prefix "c$(date +%s%N)" > $S/s
  rm -rf $S/b; args=(); [ $mode = on ] && args=(--buffer-dir $S/b)
  /usr/bin/time -f "$mode user %U sys %S wall %e maxrss %M" $BIN replay $S/s --concurrency 5 "${args[@]}" 2>&1 >/dev/null | grep -E "^(on|off) user"
done
scripts/db stop >/dev/null 2>&1; rm -rf $S
