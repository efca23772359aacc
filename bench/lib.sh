# Shared by the benchmark session scripts: progress lines, tagged JSON records, fresh id
# prefixes, generated streams, and a fresh benchmark database per server (scripts/db on its own
# ports and state, so a developer's database is never touched). Expects BIN, GEN, SESSION, OUT.

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
# run SERIES LIMIT CMD...: one measured command; its last JSON line, tagged, into $OUT.
run() {
  local series=$1 limit=$2; shift 2
  local tmp err rc
  tmp=$(mktemp); err=$(mktemp)
  say "$series: $*"
  RUST_LOG=runtally=warn timeout -k 10 "$limit" "$@" >"$tmp" 2>"$err"; rc=$?
  tail -n 2 "$err" >&2
  local extra="{\"session\":\"$SESSION\",\"series\":\"$series\",\"server\":\"${SERVER:-none}\""
  ((rc == 124 || rc == 137)) && extra+=",\"error\":\"timeout after ${limit} s\""
  ((rc != 0)) && extra+=",\"exit_code\":$rc"
  record "$extra}" <"$tmp"
  rm -f "$tmp" "$err"
}
gen() { local f=$1; shift; python3 "$GEN" "$@" --prefix "$(prefix)" >"$f"; }

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

SERVE_PID=
# start_serve ARGS...: a `runtally serve` on a free port (its output in $SCRATCH); sets
# SERVE_URL.
start_serve() {
  RUST_LOG=runtally=warn "$BIN" serve --listen 127.0.0.1:0 "$@" >"$SCRATCH/serve.out" \
    2>"$SCRATCH/serve.err" &
  SERVE_PID=$!
  for _ in $(seq 200); do
    SERVE_URL=$(sed -n 's/.*listening on //p' "$SCRATCH/serve.err")
    [ -n "$SERVE_URL" ] && return 0
    sleep 0.05
  done
  echo "serve did not start" >&2
  cat "$SCRATCH/serve.err" >&2
  return 1
}
# stop_serve: SIGTERM to the serve this script started, and wait for it.
stop_serve() {
  [ -n "$SERVE_PID" ] || return 0
  kill -TERM "$SERVE_PID" 2>/dev/null
  wait "$SERVE_PID" 2>/dev/null
  SERVE_PID=
}
