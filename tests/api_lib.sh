# Helpers for the API tests (tests/integration/api*.sh), sourced after lib.sh: a real
# `cairn serve` on a free loopback port, driven with curl.

command -v curl >/dev/null || skip "curl is not installed (tools/deps.sh installs it)"

# serve_start STORE [ARGS...]: starts the server, waits until it listens; sets $U, $SERVE_PID.
serve_start() {
    local store=$1; shift
    : >"$T/serve.log"
    "$CAIRN_BIN" serve --store "$store" --listen 127.0.0.1:0 "$@" 2>>"$T/serve.log" &
    SERVE_PID=$!
    at_exit "kill -9 $SERVE_PID 2>/dev/null"
    local i port=
    for i in $(seq 100); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/serve.log" | tail -n 1)
        [ -n "$port" ] && break
        kill -0 "$SERVE_PID" 2>/dev/null || { cat "$T/serve.log" >&2; fail "cairn serve exited at start"; }
        sleep 0.05
    done
    [ -n "$port" ] || { cat "$T/serve.log" >&2; fail "cairn serve did not listen"; }
    U=http://127.0.0.1:$port
}

# api_store: the usual layout of an API test: a new store $S, and the folders $IN (for
# its snapshot_roots) and $OUT (for its restore_roots), made empty.
api_store() {
    S=$T/store IN=$T/in OUT=$T/dst
    mkdir -p "$IN" "$OUT"
    must cairn init --store "$S" >/dev/null
}

# api_config CONFIG: writes CONFIG (JSON text; "-": read from stdin) as $S/serve.json.
api_config() {
    if [ "$1" = - ]; then cat >"$S/serve.json"; else printf '%s\n' "$1" >"$S/serve.json"; fi
    "$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$S/serve.json" ||
        fail "the test's serve.json is not JSON: $(cat "$S/serve.json")"
}

# api_tokens VAR=ROLE:NAME[:TENANT]...: a new token from the CLI for each, held in VAR.
api_tokens() {
    local spec var role name tenant tok
    for spec in "$@"; do
        var=${spec%%=*}
        IFS=: read -r role name tenant <<<"${spec#*=}"
        [ "$var" != "$spec" ] && [ -n "$role" ] && [ -n "$name" ] || fail "api_tokens: '$spec' is not VAR=ROLE:NAME[:TENANT]"
        if [ -n "$tenant" ]; then tok=$(token "$role" "$name" "$tenant"); else tok=$(token "$role" "$name"); fi
        [ -n "$tok" ] || fail "cairn token add printed no token for $spec"
        printf -v "$var" '%s' "$tok"
    done
}

# api_serve CONFIG VAR=ROLE:NAME[:TENANT]...: the usual start of an API test on the store
# $S (made already): its serve.json, its tokens, the server (serve_start: $U, $SERVE_PID).
api_serve() {
    api_config "$1"
    shift
    api_tokens "$@"
    serve_start "$S"
}

# serve_stop: SIGTERM, and the server must exit 0 within 30 s.
serve_stop() {
    kill -TERM "$SERVE_PID"
    local rc=0
    timeout 30 tail --pid="$SERVE_PID" -f /dev/null || fail "the server did not stop within 30 s of SIGTERM"
    wait "$SERVE_PID" || rc=$?
    assert_eq "$rc" 0 "exit status of cairn serve after SIGTERM"
}

# req METHOD PATH TOKEN [BODY]: prints the status; body in $T/body, headers in $T/hdr.
req() {
    local m=$1 p=$2 tok=$3 args=()
    [ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
    [ $# -ge 4 ] && args+=(-H "Content-Type: application/json" --data-binary "$4")
    curl -sS -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$m" --max-time 120 "${args[@]}" "$U$p"
}

# expect_status WANT METHOD PATH TOKEN [BODY]: the status must be WANT; an error must be
# {"error": {"code", "message"}}, and every reply carries X-Request-Id.
expect_status() {
    local want=$1; shift
    local got
    got=$(req "$@") || fail "curl failed: $*"
    [ "$got" = "$want" ] || fail "$1 $2: status $got, expected $want: $(head -c 400 "$T/body")"
    grep -qi '^x-request-id: ' "$T/hdr" || fail "$1 $2: no X-Request-Id"
    if [ "$want" -ge 400 ]; then
        assert_json 'isinstance(j["error"]["code"], str) and isinstance(j["error"]["message"], str)' "$T/body" \
            "$1 $2: error body"
    fi
}

# rawpy ARGS... <<'PY': runs the Python script on stdin with ARGS, tests/rawhttp.py
# importable (raw HTTP over a socket: what curl will not send).
rawpy() { PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$REPO/tests${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$@"; }

# token ROLE NAME [TENANT]: a new token from the CLI.
token() {
    local args=(--role "$1" --name "$2")
    [ $# -ge 3 ] && args+=(--tenant "$3")
    must cairn token add --store "$S" "${args[@]}"
}

# mkimg DIR IMG SIZE: a reproducible ext4 image of DIR.
mkimg() {
    local u=0b8f3a4e-0000-4000-8000-0000000000f1
    E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 -U "$u" -E hash_seed="$u" \
        -d "$1" "$2" "$3" >"$T/mke2fs.log" 2>&1 || { cat "$T/mke2fs.log" >&2; fail "mke2fs -d $1"; }
}
