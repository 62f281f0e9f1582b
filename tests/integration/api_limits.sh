#!/usr/bin/env bash
# A body over max_body_bytes and a header block over max_header_bytes are answered in the
# API's own shape (JSON error, X-Request-Id, the client's when it sent one), not with
# libevent's HTML page, on a fresh connection and on a kept-alive one after a request
# with a body; a chunked body over the limit is still refused (libevent's cap, the
# backstop); a body right at the limit is read.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
echo '{"snapshot_roots": [], "restore_roots": [], "limits": {"max_body_bytes": 4096, "max_header_bytes": 8192}}' >"$S/serve.json"
GC=$(token gc gcbot)
serve_start "$S"
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
"$PY" - "${U##*:}" "$GC" >"$T/pipe" <<'PY' || fail "the kept-alive exchange failed"
import socket, sys
port, tok = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
small = b'{"dry_run":true}'
s.sendall(b"POST /v1/gc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok.encode() +
          b"\r\nContent-Length: %d\r\n\r\n" % len(small) + small)
got = b""
while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < int(got.split(b"Content-Length: ")[1].split(b"\r\n")[0]):
    got += s.recv(65536)
s.sendall(b"POST /v1/gc HTTP/1.1\r\nHost: x\r\nX-Request-Id: big-2\r\nAuthorization: Bearer " + tok.encode() +
          b"\r\nContent-Length: 999999\r\n\r\n" + b" " * 1000)
s.settimeout(10)
rest = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    rest += b
print(got.split(b"\r\n")[0].decode())
print(rest.split(b"\r\n")[0].decode())
print("rid" if b"X-Request-Id: big-2" in rest else "no rid")
PY
assert_eq "$(sed -n 1p "$T/pipe")" "HTTP/1.1 200 OK" "the first request on the connection"
assert_eq "$(sed -n 2p "$T/pipe")" "HTTP/1.1 413 Payload Too Large" "the second, too large"
assert_eq "$(sed -n 3p "$T/pipe")" "rid" "the second's request id"

# Chunked: the length is not known ahead; libevent's cap refuses it.
got=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $GC" -H "Transfer-Encoding: chunked" \
    -H "Content-Type: application/json" --data-binary @"$T/huge" "$U/v1/gc") || true
assert_eq "$got" 413 "a chunked body over max_body_bytes"

# Right at the limit: read and answered as usual.
printf '{"dry_run":true}' >"$T/fit"
head -c $((4096 - 16)) /dev/zero | tr '\0' ' ' >>"$T/fit"
got=$(curl -sS -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $GC" -H "Content-Type: application/json" \
    --data-binary @"$T/fit" "$U/v1/gc") || fail "curl: a body at the limit"
assert_eq "$got" 200 "a body of exactly max_body_bytes"
expect_status 200 GET /healthz ""
serve_stop
log "ok"
