# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Sourced, never run.
#
# Conventions: human-readable messages go to stderr (so callers can
# `eval "$(scripts/db start)"`), machine-readable output goes to stdout.

# Messages always on stderr: stdout is reserved for output meant to be eval'd.
log() { printf '%s\n' "db: $*" >&2; }
die() { printf '%s\n' "db: error: $*" >&2; exit 1; }

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed${2:+ ($2)}"
}

# Escape a string for use inside a JSON string literal. Cypher commands may
# contain quotes, backslashes and newlines; control characters are escaped
# so the server never sees a malformed body.
json_escape() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  printf '%s' "$s"
}

# http_cypher PORT DB PASSWORD COMMAND
# Runs one openCypher command through ArcadeDB's HTTP API as root and prints
# the response body on stdout. Returns non-zero unless the server answered 2xx.
# curl is preferred; python3's urllib is the fallback because curl is not on
# every machine while python3 is needed anyway to install the server.
http_cypher() {
  local port=$1 db=$2 password=$3 command=$4
  local url="http://127.0.0.1:${port}/api/v1/command/${db}"
  local body
  body=$(printf '{"language":"opencypher","command":"%s"}' "$(json_escape "$command")")
  if command -v curl >/dev/null 2>&1; then
    # The credentials are fed through a config on stdin rather than -u so
    # they do not show up in `ps` output. --fail makes 4xx/5xx an error
    # status; --fail-with-body keeps the server's explanation.
    local user_line
    user_line=$(json_escape "root:${password}")
    curl --silent --show-error --fail-with-body --max-time 10 \
      --config - \
      -H 'Content-Type: application/json' \
      --data-binary "$body" \
      "$url" <<<"user = \"${user_line}\""
  else
    python3 - "$url" "$password" "$body" <<'PY'
import base64, sys, urllib.error, urllib.request
url, password, body = sys.argv[1], sys.argv[2], sys.argv[3]
auth = base64.b64encode(f"root:{password}".encode()).decode()
req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
    "Content-Type": "application/json", "Authorization": f"Basic {auth}"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        sys.stdout.write(r.read().decode(errors="replace"))
except urllib.error.HTTPError as e:
    sys.stdout.write(e.read().decode(errors="replace"))
    sys.stderr.write(f"HTTP {e.code} from {url}\n")
    sys.exit(22)  # curl's exit code for an HTTP error, for symmetry
except Exception as e:  # connection refused, timeout, ...
    sys.stderr.write(f"{url}: {e}\n")
    sys.exit(7)
PY
  fi
}

# tcp_open HOST PORT: true if something accepts TCP connections there.
# Uses bash's /dev/tcp so it needs no extra tool; `timeout` bounds a
# connect that hangs (e.g. a filtered port).
tcp_open() {
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# bolt_probe HOST PORT [tls]
# Performs a Bolt handshake (magic + four proposed versions) and prints the
# version the server picked. This proves a Bolt server, not just any TCP
# listener, is on the port. Proposes 4.0-4.4 and 3.0 only: neo4rs speaks
# Bolt 4.x, and ArcadeDB agrees to a 5.x proposal although it serves v4.
bolt_probe() {
  python3 - "$1" "$2" "${3:-}" <<'PY'
import socket, ssl, sys
host, port, tls = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    s = socket.create_connection((host, port), timeout=5)
    if tls:
        ctx = ssl.create_default_context()
        if tls == "insecure":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=host)
    s.settimeout(5)
    s.sendall(bytes.fromhex("6060b017" "00040404" "00000003" "00000000" "00000000"))
    reply = b""
    while len(reply) < 4:
        chunk = s.recv(4 - len(reply))
        if not chunk:
            break
        reply += chunk
    s.close()
except Exception as e:
    sys.stderr.write(f"bolt://{host}:{port}: {e}\n")
    sys.exit(1)
# A real answer is 00 00 MINOR MAJOR; anything else (an HTTP server says
# "HTTP") or 00000000 (no common version) is not a usable Bolt server.
if len(reply) != 4 or reply[:2] != b"\0\0" or not 3 <= reply[3] <= 9:
    sys.stderr.write(f"bolt://{host}:{port}: no Bolt version agreed (reply {reply.hex()})\n")
    sys.exit(1)
print(f"{reply[3]}.{reply[2]}")
PY
}

# pid_alive PID: true if a process with that PID exists (signal 0 sends nothing).
pid_alive() {
  [[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null
}

# pid_cmdline_has PID STRING: true if the process's command line contains
# STRING. Used to make sure a recorded PID still belongs to our server and
# was not recycled by an unrelated process before we signal it.
pid_cmdline_has() {
  local cmdline
  [[ -r /proc/$1/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$2"* ]]
}

# random_password LEN: alphanumeric, from the kernel CSPRNG.
random_password() {
  local len=${1:-20} out=""
  # Read more bytes than needed since most are filtered out, and loop in
  # the unlikely case one read is not enough.
  while ((${#out} < len)); do
    out+=$(head -c 256 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
  done
  printf '%s' "${out:0:len}"
}

# bolt_query HOST PORT USER DATABASE QUERY
# Logs in over Bolt 4.4 (password in $BOLT_PASSWORD, so it stays off the process list), runs
# QUERY in DATABASE (empty: the server's default) and prints the first value of each record,
# one a line. Exit status: 0 on success, 3 if the server refused the login, 1 otherwise (the
# server's code and message on stderr). Plain python3, no driver: it only needs a handful of
# PackStream types. Used for Neo4j, which has no HTTP API when embedded.
bolt_query() {
  python3 - "$@" <<'PY'
import os, socket, struct, sys
host, port, user, db, query = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
password = os.environ.get("BOLT_PASSWORD", "")

def pack(v):
    if v is None: return b"\xc0"
    if v is True: return b"\xc3"
    if v is False: return b"\xc2"
    if isinstance(v, int):
        if -16 <= v < 128: return struct.pack(">b", v)
        return b"\xcb" + struct.pack(">q", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 16: return bytes([0x80 | n]) + b
        if n < 256: return b"\xd0" + bytes([n]) + b
        if n < 65536: return b"\xd1" + struct.pack(">H", n) + b
        return b"\xd2" + struct.pack(">I", n) + b
    if isinstance(v, dict):
        assert len(v) < 16
        return bytes([0xA0 | len(v)]) + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(type(v))

class Reader:
    def __init__(self, data): self.d, self.i = data, 0
    def take(self, n):
        out = self.d[self.i:self.i + n]; self.i += n; return out
    def size(self, m, base, sizes):
        # Tiny forms keep the size in the marker's low nibble; the others in 1, 2 or 4 bytes.
        if base <= m <= base + 15: return m - base
        return int.from_bytes(self.take(sizes[m]), "big")
    def value(self):
        m = self.take(1)[0]
        if m < 0x80: return m
        if m >= 0xF0: return m - 0x100
        if m == 0xC0: return None
        if m in (0xC2, 0xC3): return m == 0xC3
        if m == 0xC1: return struct.unpack(">d", self.take(8))[0]
        if 0xC8 <= m <= 0xCB: return int.from_bytes(self.take(1 << (m - 0xC8)), "big", signed=True)
        if 0xCC <= m <= 0xCE: return self.take(int.from_bytes(self.take(1 << (m - 0xCC)), "big"))
        if 0x80 <= m <= 0x8F or 0xD0 <= m <= 0xD2:
            return self.take(self.size(m, 0x80, {0xD0: 1, 0xD1: 2, 0xD2: 4})).decode(errors="replace")
        if 0x90 <= m <= 0x9F or 0xD4 <= m <= 0xD6:
            return [self.value() for _ in range(self.size(m, 0x90, {0xD4: 1, 0xD5: 2, 0xD6: 4}))]
        if 0xA0 <= m <= 0xAF or 0xD8 <= m <= 0xDA:
            return {self.value(): self.value() for _ in range(self.size(m, 0xA0, {0xD8: 1, 0xD9: 2, 0xDA: 4}))}
        if 0xB0 <= m <= 0xBF:
            sig = self.take(1)[0]
            return (sig, [self.value() for _ in range(m - 0xB0)])
        raise ValueError(f"unknown PackStream marker {m:#x}")

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk: raise ConnectionError("connection closed by the server")
        out += chunk
    return out

def send(s, sig, *fields):
    body = bytes([0xB0 | len(fields), sig]) + b"".join(pack(f) for f in fields)
    s.sendall(struct.pack(">H", len(body)) + body + b"\0\0")

def receive(s):
    data = b""
    while True:
        n = struct.unpack(">H", recv_exact(s, 2))[0]
        if n == 0: break
        data += recv_exact(s, n)
    return Reader(data).value()

SUCCESS, RECORD, IGNORED, FAILURE = 0x70, 0x71, 0x7E, 0x7F
def fail(meta, status=1):
    sys.stderr.write(f"bolt://{host}:{port}: {meta.get('code')}: {meta.get('message')}\n")
    sys.exit(status)

try:
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(30)
    s.sendall(bytes.fromhex("6060b017" "00000404" "00000000" "00000000" "00000000"))
    if recv_exact(s, 4) != b"\0\0\x04\x04":
        sys.stderr.write(f"bolt://{host}:{port}: the server does not speak Bolt 4.4\n"); sys.exit(1)
    send(s, 0x01, {"user_agent": "runtally-scripts/1", "scheme": "basic",
                   "principal": user, "credentials": password})
    sig, fields = receive(s)
    if sig == FAILURE:
        fail(fields[0], 3 if "Security" in str(fields[0].get("code")) else 1)
    send(s, 0x10, query, {}, {"db": db} if db else {})
    send(s, 0x3F, {"n": -1})
    rows = []
    for _ in range(2):  # the answer to RUN, then the records and the answer to PULL
        while True:
            sig, fields = receive(s)
            if sig == RECORD: rows.append(fields[0][0] if fields[0] else None); continue
            if sig == FAILURE: fail(fields[0])
            if sig == IGNORED: sys.stderr.write("request ignored\n"); sys.exit(1)
            break
    send(s, 0x02)
    s.close()
except (OSError, ConnectionError, ValueError) as e:
    sys.stderr.write(f"bolt://{host}:{port}: {e}\n")
    sys.exit(1)
for r in rows:
    print(r)
PY
}
