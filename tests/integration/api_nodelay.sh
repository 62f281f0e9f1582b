#!/usr/bin/env bash
# An answer longer than 16 KiB comes without the 40 ms stall of Nagle's algorithm: the
# server writes answers in 16 KiB pieces (bufferevent), and with Nagle on the last short
# piece waited for the client's delayed ACK of the first (api/limits.c sets TCP_NODELAY).
# A long-lived sandbox's snapshot list (GET /v1/sandboxes/{id}) is such an answer: it made
# the API bench's second round bimodal (p50 2.5 ms, p90 47 ms) and, alone, p50 44 ms.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

S=$T/store
IN=$T/in
mkdir -p "$IN"
must cairn init --store "$S" >/dev/null
head -c 64K /dev/urandom >"$IN/mem"
# Long names make long records: 70 snapshots give a list of ~25 KiB.
tn=tenant-$(printf 'n%.0s' $(seq 50))
sb=sandbox-$(printf 's%.0s' $(seq 50))
for i in $(seq 70); do
    must cairn snapshot --store "$S" --tenant "$tn" --sandbox "$sb" --memory "$IN/mem" >/dev/null
done
api_serve '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$T'"]}' ORCH=orchestrator:orch

# 40 GETs one after the other on one keep-alive connection, each timed to its last byte.
"$PY" - "$U" "$ORCH" "/v1/sandboxes/$sb" >"$T/times" <<'EOF' || fail "the timed GETs failed: $(cat "$T/times")"
import http.client, statistics, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
ms, size = [], 0
for _ in range(40):
    t0 = time.perf_counter()
    c.request("GET", sys.argv[3], headers={"Authorization": "Bearer " + sys.argv[2]})
    r = c.getresponse()
    body = r.read()
    ms.append((time.perf_counter() - t0) * 1000)
    if r.status != 200:
        sys.exit("status %d: %s" % (r.status, body[:300]))
    size = len(body)
print(size, round(statistics.median(ms), 1), round(max(ms), 1), int(statistics.median(ms) * 1000))
EOF
read -r size median max median_us <"$T/times"
log "GET /v1/sandboxes/{id}: $size bytes, median $median ms, max $max ms over 40 calls"
assert_cmp "$size" -gt 20000 "the snapshot list's length in bytes (must need more than one 16 KiB write)"
# Nagle's stall is a delayed ACK: 40 ms at least on Linux. The call itself is ~1 ms.
assert_cmp "$median_us" -lt 35000 "median time of GET /v1/sandboxes/{id} in us (Nagle's stall, a delayed ACK, is >= 40 ms; 35 ms leaves room for a loaded machine)"
serve_stop
log "ok"
