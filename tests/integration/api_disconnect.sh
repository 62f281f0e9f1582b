#!/usr/bin/env bash
# Clients that leave in the middle of a streamed download (content, archive, HEAD): the
# server frees each request, its worker stops instead of blocking on a pipe nobody reads,
# every worker is free again for the next clients, and SIGTERM stops at once. Under
# `make asan` a request left behind shows up as a leak (found so: a HEAD on an archive
# whose client closed first leaked its evhttp request).
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

S=$T/store
IN=$T/in
mkdir -p "$IN/tree/home/ubuntu/output"
# Larger than the 1 MiB stream pipe: a worker whose pipe is not read blocks on it.
head -c 6M /dev/urandom >"$IN/tree/home/ubuntu/output/big.bin"
mkimg "$IN/tree" "$IN/disk.img" 16M
head -c 1M /dev/urandom >"$IN/mem"
must cairn init --store "$S" >/dev/null
# Two long-job workers: two stuck downloads would starve every later one.
api_serve '{"snapshot_roots": ["'$IN'"], "limits": {"max_long_jobs": 2, "shutdown_timeout_s": 60}}' \
    ORCH=orchestrator:orch SUP=support:sup
expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb1","memory":"'$IN'/mem","disk":"'$IN'/disk.img"}'
ID=$(json 'j["snapshot"]' "$T/body")
PORT=${U##*:}

# leave PATH METHOD: sends the request and closes at once, before any reply byte.
leave() {
    "$PY" - "$PORT" "$1" "$2" "$SUP" <<'EOF'
import socket, sys
port, path, method, tok = sys.argv[1:5]
s = socket.create_connection(("127.0.0.1", int(port)))
s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n".encode())
s.close()
EOF
}
for i in 1 2 3; do
    leave "/v1/snapshots/$ID/content?path=/home/ubuntu/output/big.bin" GET
    leave "/v1/snapshots/$ID/archive?path=/home" GET
    leave "/v1/snapshots/$ID/archive?path=/home" HEAD
done
# Clients that read the headers and a little of the body, then go.
for i in 1 2 3; do
    curl -sS -I -o /dev/null -H "Authorization: Bearer $SUP" "$U/v1/snapshots/$ID/archive?path=/home" ||
        fail "HEAD archive"
    curl -sS -o /dev/null -H "Authorization: Bearer $SUP" --limit-rate 64k --max-time 1 \
        "$U/v1/snapshots/$ID/content?path=/home/ubuntu/output/big.bin" 2>/dev/null || true
done

# Every worker is free again: whole downloads, more than there are workers, all complete.
# A worker notices its client left at its next write, which on a loaded machine can come a
# little after the next request: a 429 then is the server being honest, so it is retried
# for a while; a worker that never came back would make every try a 429.
for i in 1 2 3; do
    code=
    for try in $(seq 1 $((20 * ${CAIRN_TIME_SCALE:-1}))); do
        code=$(curl -sS -o "$T/got.$i" -w '%{http_code}' --max-time "$((60 * ${CAIRN_TIME_SCALE:-1}))" \
            -H "Authorization: Bearer $SUP" "$U/v1/snapshots/$ID/content?path=/home/ubuntu/output/big.bin") ||
            fail "download $i after the clients that left"
        [ "$code" = 429 ] || break
        sleep 1
    done
    [ "$code" = 200 ] || fail "download $i after the clients that left: HTTP $code ($(head -c 300 "$T/got.$i"))"
    cmp -s "$T/got.$i" "$IN/tree/home/ubuntu/output/big.bin" || fail "download $i: wrong bytes"
done

# Nothing is left in flight: the server stops without waiting for its shutdown deadline.
kill -TERM "$SERVE_PID"
timeout "$((20 * ${CAIRN_TIME_SCALE:-1}))" tail --pid="$SERVE_PID" -f /dev/null ||
    fail "the server did not stop promptly after SIGTERM: $(grep 'in flight' "$T/serve.log")"
rc=0
wait "$SERVE_PID" || rc=$?
assert_eq "$rc" 0 "exit status of cairn serve after SIGTERM"
grep -q "0 requests in flight" "$T/serve.log" || fail "requests left in flight: $(grep 'in flight' "$T/serve.log")"
log "ok"
