#!/usr/bin/env bash
# The metadata routes read through the server's kept writer handle while it keeps it (a
# W-view) and through a lock-free view once it lets go (api/storeref.c). What a user relies
# on, across those hand-overs:
#   - a GET right after a 201 shows that snapshot (its record, SANDBOX@latest, the sandbox's
#     list, the count of GET /v1/sandboxes) while the server keeps its writer;
#   - a CLI snapshot is in the next GET, whether the server idled (its writer let go after
#     CAIRN_SERVE_KEEP_MS) or kept its writer and let go for the CLI;
#   - a CLI snapshot waiting for the lock gets in while 24 clients call the metadata routes
#     without pause and the API ingests: the W-view's readers never keep the lock from it;
#   - the same, the writer let go and taken again every few ms under that load (no call
#     fails, the server lives, every GET right after a 201 or a CLI snapshot shows it);
#   - the server reports no broken invariant of its store handle (api/storeref.c's check).
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"
command -v flock >/dev/null || skip "flock is not installed (util-linux)"

S=$T/store
IN=$T/in
mkdir -p "$IN"
for i in 1 2 3; do head -c 256K /dev/urandom >"$IN/mem$i"; done
must cairn init --store "$S" >/dev/null
api_config '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$T'"]}'
api_tokens ORCH=orchestrator:orch
held() { ! flock -n -x "$S/lock" true; }   # someone holds the store's lock
TOTAL=0
snap_api() {
    expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"'$1'","memory":"'$IN/$2'"}'
    ID=$(json 'j["snapshot"]' "$T/body")
    TOTAL=$((TOTAL + 1))
}
snap_cli() {
    timeout 20 "$CAIRN_BIN" snapshot --store "$S" --tenant t1 --sandbox "$1" --memory "$IN/$2" --json >"$T/cli.json" \
        || fail "$3: the CLI snapshot did not get in within 20 s"
    ID=$(json 'j["snapshot"]' "$T/cli.json")
    TOTAL=$((TOTAL + 1))
}
# seen ID SANDBOX WHEN: every metadata route shows ID as SANDBOX's newest snapshot now.
seen() {
    expect_status 200 GET "/v1/snapshots/$1" "$ORCH"
    assert_json 'j["snapshot"] == "'$1'"' "$T/body" "GET /v1/snapshots/$1 $3"
    expect_status 200 GET "/v1/snapshots/$2@latest" "$ORCH"
    assert_json 'j["snapshot"] == "'$1'"' "$T/body" "GET /v1/snapshots/$2@latest $3"
    expect_status 200 GET "/v1/sandboxes/$2" "$ORCH"
    assert_json 'any(x["snapshot"] == "'$1'" for x in j["snapshot_list"])' "$T/body" "$2's snapshot list $3"
    expect_status 200 GET "/v1/sandboxes?tenant=t1" "$ORCH"
    assert_json 'sum(s["snapshots"] for s in j["sandboxes"]) == '$TOTAL "$T/body" "the snapshots counted $3"
}
no_broken() {
    if grep -q "invariant broken" "$T/serve.log"; then fail "$(grep "invariant broken" "$T/serve.log")"; fi
}

log "GETs right after each 201, the writer kept"
CAIRN_SERVE_KEEP_MS=60000 serve_start "$S"
for i in 1 2 3 4 5 6; do
    req GET /v1/sandboxes/sb1 "$ORCH" >/dev/null   # a view and its caches filled before the ingest
    snap_api sb1 "mem$((i % 3 + 1))"
    held || fail "the server let the lock go right after ingest $i"
    seen "$ID" sb1 "right after ingest $i"
done

log "a CLI snapshot beside the kept writer, then the API again"
snap_cli cli1 mem1 "beside the kept writer"
seen "$ID" cli1 "after a CLI snapshot beside the kept writer"
snap_api sb1 mem2
seen "$ID" sb1 "after the server took the store back from the CLI"
no_broken
serve_stop

log "a CLI snapshot while the server idles (its writer let go)"
CAIRN_SERVE_KEEP_MS=300 serve_start "$S"
snap_api sb2 mem1
seen "$ID" sb2 "right after the ingest, before the writer is let go"
for _ in $(seq 100); do held || break; sleep 0.1; done
held && fail "the server still holds the lock 10 s after its last ingest (keep 300 ms)"
seen "$ID" sb2 "once the writer was let go"
snap_cli sb2 mem2 "beside an idle server"
seen "$ID" sb2 "after a CLI snapshot beside an idle server"
snap_api sb2 mem3
seen "$ID" sb2 "after the server opened its writer again"
no_broken
serve_stop

# load_start PAUSE: 24 clients on the metadata routes and one ingesting into sb4 (pausing up
# to PAUSE seconds between ingests; after each 201, sb4@latest must be it or newer), until
# $T/stop; then load_end checks them.
load_start() {
    rm -f "$T/stop"
    "$PY" - "${U##*:}" "$ORCH" "$IN" "$T/stop" "$1" >"$T/load.out" 2>&1 <<'PYEOF' &
import http.client, json, os, random, sys, threading
port, tok, inp, stop, pause = sys.argv[1:6]
hdr = {"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
counts, errors = [0, 0], []
def call(c, method, path, body=None):
    c.request(method, path, body=body, headers=hdr)
    r = c.getresponse()
    return r.status, r.read()
def reader(k):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    # /metrics holds its view longest (it walks the store's folders).
    paths = ["/metrics", "/v1/sandboxes/sb3", "/v1/snapshots/sb3@latest", "/v1/sandboxes?tenant=t1"]
    while not os.path.exists(stop):
        st, _ = call(c, "GET", paths[(counts[0] + k) % 4])
        if st != 200: errors.append("GET %d" % st)
        counts[0] += 1
def ingester():
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
    while not os.path.exists(stop):
        body = json.dumps({"tenant": "t1", "sandbox": "sb4", "memory": "%s/mem%d" % (inp, counts[1] % 3 + 1)})
        st, b = call(c, "POST", "/v1/snapshots", body)
        if st != 201:
            errors.append("POST %d" % st)
            continue
        counts[1] += 1
        sid = json.loads(b)["snapshot"]
        st, b = call(c, "GET", "/v1/snapshots/sb4@latest")
        if st != 200 or json.loads(b)["snapshot"] < sid: errors.append("sb4@latest right after %s: %d %s" % (sid, st, b[:60]))
        threading.Event().wait(random.random() * float(pause))
def guard(f, *a):
    try: f(*a)
    except Exception as e: errors.append(repr(e))   # the server went away
ts = [threading.Thread(target=guard, args=(reader, k)) for k in range(24)] + [threading.Thread(target=guard, args=(ingester,))]
for t in ts: t.start()
for t in ts: t.join()
print(counts[0], counts[1], len(errors), " ".join(errors[:5]))
PYEOF
    LOAD=$!
}
load_end() {
    touch "$T/stop"
    wait "$LOAD" || fail "the load failed: $(cat "$T/load.out")"
    read -r calls ingests nerr rest <"$T/load.out"
    log "$1: $calls metadata calls, $ingests API ingests, $nerr errors $rest"
    assert_eq "$nerr" 0 "failed calls $1: $rest"
    assert_cmp "$ingests" -ge 2 "API ingests $1"
    TOTAL=$((TOTAL + ingests))
    no_broken
}

log "a CLI snapshot waits for the lock while 24 clients call metadata routes and the API ingests"
CAIRN_SERVE_KEEP_MS=60000 serve_start "$S"
snap_api sb3 mem1
load_start 0
sleep 1
for i in 1 2 3; do
    t0=$(date +%s%N)
    snap_cli cli2 "mem$i" "under load ($i)"
    log "CLI snapshot $i under load: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    expect_status 200 GET "/v1/snapshots/cli2@latest" "$ORCH"
    assert_json 'j["snapshot"] == "'$ID'"' "$T/body" "GET cli2@latest right after CLI snapshot $i under load"
done
load_end "under load"
serve_stop

log "the writer let go and taken again every few ms (a 30 ms keep), under the same load"
# Every hand-over at once, with calls in flight: idle let-gos (the view opened before the
# close), let-gos for the CLI (after it), reopens by calls after the CLI's commits.
CAIRN_SERVE_KEEP_MS=30 serve_start "$S"
load_start 0.08
t_end=$(( $(date +%s) + 5 ))
while [ "$(date +%s)" -lt "$t_end" ]; do
    snap_cli cli3 mem1 "beside a server that lets go every few ms"
    expect_status 200 GET "/v1/snapshots/cli3@latest" "$ORCH"
    assert_json 'j["snapshot"] >= "'$ID'"' "$T/body" "GET cli3@latest right after a CLI snapshot"
    sleep 0.$((RANDOM % 3))
done
load_end "with the writer let go every few ms"
serve_stop
must cairn fsck --store "$S" >/dev/null
echo "api_view_handoff: ok"
