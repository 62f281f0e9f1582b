#!/usr/bin/env bash
# Page servers the API's uffd wake starts are bounded (hostile review 11): one nobody
# connects to exits after limits.page_server_wait_s, its socket removed and its lease
# released; at most limits.max_page_servers run at once (429 beyond, a slot frees when one
# exits); SIGTERM removes the socket, so the next wake on that path is not a 409.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" != 1 ]; then
    skip "userfaultfd needs root here"
fi
S=$T/store
SOCKS=$T/socks
mkdir -p "$SOCKS"
must cairn init --store "$S" >/dev/null
gen "$T/mem" 1048576 3
id=$(snap "$S" acme box1 memory="$T/mem")
api_serve - ORCH=orchestrator:orch <<JSON
{"restore_roots": ["$SOCKS"], "limits": {"max_page_servers": 2, "page_server_wait_s": 2}}
JSON

# gone PID SOCK SECONDS: the process and its socket are gone within SECONDS.
gone() {
    local i
    for i in $(seq $(( $3 * 20 ))); do
        ! kill -0 "$1" 2>/dev/null && [ ! -e "$2" ] && return 0
        sleep 0.05
    done
    fail "page server $1 or its socket $2 still there after $3 s"
}

expect_status 200 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$SOCKS'/a.sock"}'
pa=$(json 'j["pid"]' "$T/body")
at_exit "kill $pa 2>/dev/null"
expect_status 200 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$SOCKS'/b.sock"}'
pb=$(json 'j["pid"]' "$T/body")
at_exit "kill $pb 2>/dev/null"
expect_status 429 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$SOCKS'/c.sock"}'
assert_grep 'max_page_servers' "$T/body" "the 429 names the limit"
[ ! -e "$SOCKS/c.sock" ] || fail "a refused wake made a socket"
flock -n -x "$S/leases/$id" true && fail "a waiting page server holds no lease"

log "nobody connects: both exit after page_server_wait_s"
gone "$pa" "$SOCKS/a.sock" 15
gone "$pb" "$SOCKS/b.sock" 15
[ ! -e "$S/leases/$id" ] || flock -n -x "$S/leases/$id" true || fail "a lease outlived its page server"

log "a slot is free again; SIGTERM removes the socket"
expect_status 200 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$SOCKS'/a.sock"}'
pc=$(json 'j["pid"]' "$T/body")
at_exit "kill $pc 2>/dev/null"
kill -TERM "$pc"
gone "$pc" "$SOCKS/a.sock" 5
expect_status 200 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$SOCKS'/a.sock"}'
pd=$(json 'j["pid"]' "$T/body")
at_exit "kill $pd 2>/dev/null"
gone "$pd" "$SOCKS/a.sock" 15
serve_stop
