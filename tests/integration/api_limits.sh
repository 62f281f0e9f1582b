#!/usr/bin/env bash
# A body over max_body_bytes (by its Content-Length or its chunks) and a header block over
# max_header_bytes are answered in the API's own shape (JSON error, X-Request-Id, the
# client's when it sent one), not with libevent's HTML page, on a fresh connection and on a
# kept-alive one after a request with a body; so is every request libevent cannot read (a
# bad request line, header line, Content-Length, chunk size, Expect, an unknown method);
# what it can read still works (bare-LF heads, chunked bodies, trailers, HEAD on a kept-alive
# connection); a body right at the limit is read.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
api_serve '{"snapshot_roots": [], "restore_roots": [], "limits": {"max_body_bytes": 4096, "max_header_bytes": 8192}}' \
    GC=gc:gcbot
head -c 100000 /dev/zero | tr '\0' ' ' >"$T/huge"

got=$(curl -sS -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $GC" -H "X-Request-Id: big-1" \
    -H "Content-Type: application/json" --data-binary @"$T/huge" "$U/v1/gc") || fail "curl: a huge body"
assert_eq "$got" 413 "a body over max_body_bytes"
assert_grep '^content-type: application/json' "$T/hdr" "the 413's type"
assert_grep '^x-request-id: big-1' "$T/hdr" "the 413 echoes the request id"
assert_json 'j["error"]["code"] == "too_large" and "max_body_bytes" in j["error"]["message"]' "$T/body" "the 413's body"
grep -q "413 rid=big-1" "$T/serve.log" || fail "no log line for the refused body"

got=$(curl -sS -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' a)" \
    "$U/healthz") || fail "curl: a huge header"
assert_eq "$got" 431 "a header block over max_header_bytes"
assert_grep '^x-request-id: ' "$T/hdr" "the 431 carries a request id"
assert_json 'j["error"]["code"] == "too_large"' "$T/body" "the 431's body"

# Kept alive: a request with a body, then one too large, on one connection.
rawpy "${U##*:}" "$GC" >"$T/pipe" <<'PY' || fail "the kept-alive exchange failed"
import sys
from rawhttp import connect, read_reply, read_to_eof
port, tok = int(sys.argv[1]), sys.argv[2]
s = connect(port, None)
small = b'{"dry_run":true}'
s.sendall(b"POST /v1/gc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok.encode() +
          b"\r\nContent-Length: %d\r\n\r\n" % len(small) + small)
head, _ = read_reply(s)
s.sendall(b"POST /v1/gc HTTP/1.1\r\nHost: x\r\nX-Request-Id: big-2\r\nAuthorization: Bearer " + tok.encode() +
          b"\r\nContent-Length: 999999\r\n\r\n" + b" " * 1000)
s.settimeout(10)
rest = read_to_eof(s)
print(head.split("\r\n")[0])
print(rest.split(b"\r\n")[0].decode())
print("rid" if b"X-Request-Id: big-2" in rest else "no rid")
PY
assert_eq "$(sed -n 1p "$T/pipe")" "HTTP/1.1 200 OK" "the first request on the connection"
assert_eq "$(sed -n 2p "$T/pipe")" "HTTP/1.1 413 Payload Too Large" "the second, too large"
assert_eq "$(sed -n 3p "$T/pipe")" "rid" "the second's request id"

# Chunked: refused at the chunk that passes the limit, in JSON.
got=$(curl -sS -o "$T/body" -D "$T/hdr" -w '%{http_code}' -H "Authorization: Bearer $GC" -H "X-Request-Id: chunk-1" \
    -H "Transfer-Encoding: chunked" -H "Content-Type: application/json" --data-binary @"$T/huge" "$U/v1/gc") ||
    fail "curl: a huge chunked body"
assert_eq "$got" 413 "a chunked body over max_body_bytes"
assert_grep '^content-type: application/json' "$T/hdr" "the chunked 413's type"
assert_grep '^x-request-id: chunk-1' "$T/hdr" "the chunked 413 echoes the request id"
assert_json 'j["error"]["code"] == "too_large" and "max_body_bytes" in j["error"]["message"]' "$T/body" \
    "the chunked 413's body"
# Small chunks that add up to more than the limit.
rawpy "${U##*:}" "$GC" >"$T/chunks" <<'PY' || fail "the many-chunks exchange failed"
import sys
from rawhttp import connect, read_to_eof
s = connect(sys.argv[1], None)
s.sendall(b"POST /v1/gc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + sys.argv[2].encode() +
          b"\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b" " * 1024 + b"\r\n")
s.settimeout(10)
try:
    for i in range(8):
        s.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
except OSError:
    pass
got = read_to_eof(s)
print(got.split(b"\r\n")[0].decode())
print("json" if b'"too_large"' in got and b"X-Request-Id: " in got else "not json")
PY
assert_eq "$(sed -n 1p "$T/chunks")" "HTTP/1.1 413 Payload Too Large" "chunks adding up past the limit"
assert_eq "$(sed -n 2p "$T/chunks")" "json" "their 413 is the JSON error with a request id"
# A chunked body within the limit is read and answered.
got=$(curl -sS -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $GC" -H "Transfer-Encoding: chunked" \
    -H "Content-Type: application/json" --data-binary '{"dry_run":true}' "$U/v1/gc") || fail "curl: a small chunked body"
assert_eq "$got" 200 "a chunked body under the limit"

# Whatever libevent cannot read is the API's JSON error too (raw requests: curl sends
# none of these). Each line: the status expected, then the request (Python escapes).
cat >"$T/cases" <<'EOF'
400 GARBAGE\r\n\r\n
400 \r\nGET /healthz HTTP/1.1\r\n\r\n
400 GET /healthz HTTP/9.9\r\n\r\n
400 GET http://[::1 HTTP/1.1\r\n\r\n
400 GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n
400 GET /healthz HTTP/1.1\r\n folded first\r\n\r\n
400 GET /healthz HTTP/1.1\r\nX-A: a\rb\r\n\r\n
400 POST /v1/gc HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n
400 POST /v1/gc HTTP/1.1\r\nContent-Length: -1\r\n\r\n
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nbad trailer\r\n\r\n
413 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n
400 HEAD /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n
400 POST /v1/gc HTTP/1.1\r\nX-A: a\rContent-Length: 2\r\n\r\n{}
400 POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX: a\rb\r\n\r\n
417 POST /v1/gc HTTP/1.1\r\nContent-Length: 2\r\nExpect: something-else\r\n\r\n{}
501 BREW /healthz HTTP/1.1\r\n\r\n
501 TRACE /healthz HTTP/1.1\r\n\r\n
501 CONNECT example.com:443 HTTP/1.1\r\n\r\n
EOF
rawpy "${U##*:}" "$T/cases" <<'PY' || fail "the malformed requests were not each answered in JSON"
import json, sys
from rawhttp import connect, read_to_eof
bad = 0
for line in open(sys.argv[2]):
    want, raw = line.rstrip("\n").split(" ", 1)
    data = raw.encode().decode("unicode_escape").encode("latin-1")
    s = connect(sys.argv[1])
    s.sendall(data)
    got = read_to_eof(s)
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdr = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    try:
        j = json.loads(body)
        ok = isinstance(j["error"]["code"], str) and isinstance(j["error"]["message"], str)
    except Exception:
        ok = False
    if lines[0].split(" ")[1:2] != [want] or not ok or hdr.get("content-type") != "application/json" \
            or not hdr.get("x-request-id"):
        print("%r: got %r" % (raw, got[:300]), file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY

# What libevent reads is still read: a bare-LF head, a chunked body sent in odd pieces with
# a trailer, a HEAD (its reply has no body) then a GET, all on one kept-alive connection.
rawpy "${U##*:}" "$GC" >"$T/keep" <<'PY' || fail "the kept-alive exchange of good requests failed"
import sys
from rawhttp import connect, read_reply
s = connect(sys.argv[1])
tok = sys.argv[2].encode()
def reply(head_req=False):
    head, body = read_reply(s, head_req)
    print(head.split("\r\n")[0], body.decode().strip())
s.sendall(b"GET /healthz HTTP/1.1\nHost: x\n\n")
reply()
s.sendall(b"POST /v1/gc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok +
          b"\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"dry_ru\r\n")
s.sendall(b"8\r\nn\": true\r\n1\r\n}\r\n0\r\nX-Trailer: 1\r\n\r\n")
reply()
s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
reply(True)
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
reply()
PY
assert_eq "$(sed -n 1p "$T/keep")" 'HTTP/1.1 200 OK {"ok":true}' "a bare-LF request"
assert_eq "$(sed -n 2p "$T/keep" | cut -c1-16)" 'HTTP/1.1 200 OK ' "a chunked body in odd pieces, with a trailer"
assert_eq "$(sed -n 3p "$T/keep")" 'HTTP/1.1 200 OK ' "a HEAD: headers, no body"
assert_eq "$(sed -n 4p "$T/keep")" 'HTTP/1.1 200 OK {"ok":true}' "the GET after the HEAD on the same connection"

# Pipelined: a refused request behind a good one is answered after it, in order.
rawpy "${U##*:}" >"$T/pipe2" <<'PY' || fail "the pipelined exchange failed"
import sys
from rawhttp import connect, read_to_eof
s = connect(sys.argv[1])
s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/gc HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}\r\n")
got = read_to_eof(s)
print(" ".join(l.split(" ")[1] for l in got.decode("latin-1").split("\n") if l.startswith("HTTP/1.1 ")))
PY
assert_eq "$(cat "$T/pipe2")" "200 401 400" "answers to a good request, a good one and a stray line after its body, in order"

# Mutated requests, some pipelined (a fixed seed): never libevent's HTML, and every answer
# carries a request id.
rawpy "${U##*:}" <<'PY' || fail "a mutated request got an answer that is not the API's"
import random, re, socket, sys
from rawhttp import connect, read_to_eof
port = int(sys.argv[1])
rnd = random.Random(20261130)
base = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/gc HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{\"dry_run\":true}",
        b"POST /v1/gc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"dry_run\":true}\r\n0\r\n\r\n",
        b"HEAD /healthz HTTP/1.0\r\n\r\n",
        b"PUT /v1/tenants/t/tier HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"]
toks = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"\0", b"0", b"ffff", b"-1", b"Content-Length: 99999\r\n",
        b"Transfer-Encoding: chunked\r\n", b"Expect: x\r\n", b"HTTP/1.1", b"HTTP/2.0", b"%zz", b"x" * 300, b"\x80\xff"]
bad = 0
for i in range(400):
    req = bytearray(rnd.choice(base) * rnd.choice([1, 1, 2]))
    for _ in range(rnd.randint(1, 4)):
        op, pos = rnd.random(), rnd.randint(0, len(req))
        if op < 0.4:
            req[pos:pos] = rnd.choice(toks)
        elif op < 0.7 and len(req) > 1:
            del req[pos:pos + rnd.randint(1, 5)]
        else:
            req[pos:pos + 1] = bytes([rnd.randint(0, 255)])
    s = connect(port)
    try:
        s.sendall(bytes(req))
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    got = read_to_eof(s, partial_ok=True)
    s.close()
    heads = [h for h in re.split(rb"(?:^|\n)(?=HTTP/1\.[01] \d{3} )", got)    # not a 100 Continue
             if h.startswith(b"HTTP/1.") and not h.startswith(b"HTTP/1.1 100 ")]
    if b"<HTML" in got.upper() or any(b"\r\nX-Request-Id: " not in h.split(b"\r\n\r\n")[0] for h in heads):
        print("%r -> %r" % (bytes(req)[:200], got[:300]), file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
PY

# Right at the limit: read and answered as usual.
printf '{"dry_run":true}' >"$T/fit"
head -c $((4096 - 16)) /dev/zero | tr '\0' ' ' >>"$T/fit"
got=$(curl -sS -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $GC" -H "Content-Type: application/json" \
    --data-binary @"$T/fit" "$U/v1/gc") || fail "curl: a body at the limit"
assert_eq "$got" 200 "a body of exactly max_body_bytes"
expect_status 200 GET /healthz ""
serve_stop
log "ok"
