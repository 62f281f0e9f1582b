#!/usr/bin/env bash
# HOSTILE.md item 6: slow downloads (content, archive, a share's content) stall nothing.
# A stream used to hold the store's read handle and a long-job slot for as long as its
# client took to read it: an ingest waited for the write lock behind it, new readers
# behind the waiting ingest, and four slow downloads filled the long-job slots (every
# ingest 429). Here five clients read at 160 KiB/s while metadata calls, an API
# snapshot, a CLI snapshot and a restore must all succeed quickly; then the clients read
# the rest at full speed and every download must end with the right bytes.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

S=$T/store
IN=$T/in
mkdir -p "$IN/tree/home/ubuntu/output" "$T/wake"
# Far more than a pipe, an evbuffer and both sockets' buffers hold, so a stream that is
# fed at its client's pace is still being fed while the calls below run.
head -c 24M /dev/urandom >"$IN/tree/home/ubuntu/output/big.bin"
mkimg "$IN/tree" "$IN/disk.img" 40M
head -c 2M /dev/urandom >"$IN/mem"
head -c 2M /dev/urandom >"$IN/mem2"
must cairn init --store "$S" >/dev/null
# Two long-job slots: what four slow downloads used to fill.
api_serve '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$T/wake'"], "limits": {"max_long_jobs": 2}}' \
    ORCH=orchestrator:orch SUP=support:sup
expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb1","memory":"'$IN'/mem","disk":"'$IN'/disk.img"}'
ID=$(json 'j["snapshot"]' "$T/body")
expect_status 201 POST /v1/sandboxes/sb1/shares "$ORCH" '{}'
SHARE=$(json 'j["token"]' "$T/body")
PORT=${U##*:}

# slow N TOKEN PATH: reads 16 KiB every 100 ms until $T/go exists, then the rest at full
# speed, into $T/slow.N ("STATUS" in $T/slow.N.code once the whole reply is read).
slow() {
    "$PY" - "$PORT" "$3" "$2" "$T/slow.$1" "$T/go" <<'PYEOF' 2>"$T/slow.$1.err" &
import http.client, os, sys, time
port, path, tok, out, go = sys.argv[1:6]
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=300)
for _ in range(200):          # 429 while the other downloads' jobs hold both slots
    c.request("GET", path, headers={"Authorization": "Bearer " + tok})
    r = c.getresponse()
    if r.status != 429:
        break
    r.read()
    time.sleep(0.1)
with open(out, "wb") as f:
    while not os.path.exists(go):
        b = r.read(16384)
        if not b:
            break
        f.write(b)
        time.sleep(0.1)
    f.write(r.read())
open(out + ".code", "w").write(str(r.status))
PYEOF
    pids+=($!)
}
pids=()
big=/home/ubuntu/output/big.bin
slow 1 "$SUP" "/v1/snapshots/$ID/content?path=$big"
slow 2 "$SUP" "/v1/snapshots/$ID/content?path=$big"
slow 3 "$SUP" "/v1/snapshots/$ID/content?path=$big"
slow 4 "$SUP" "/v1/snapshots/$ID/archive?path=/home"
slow 5 "$SHARE" "/v1/shared/content?path=$big"
for i in 1 2 3 4 5; do        # every download has begun
    for _ in $(seq 100); do [ -s "$T/slow.$i" ] && break; sleep 0.1; done
    [ -s "$T/slow.$i" ] || fail "slow download $i got no byte: $(cat "$T/slow.$i.err")"
done

# Each call must answer well inside the time the slow clients go on reading.
quick() {  # quick LIMIT_MS WHAT COMMAND...: runs COMMAND, which must succeed within LIMIT_MS
    local limit=$(($1 * ${CAIRN_TIME_SCALE:-1})) what=$2 t0 ms
    shift 2
    t0=$(date +%s%N)
    "$@" || fail "$what failed beside slow downloads"
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    log "$what: $ms ms"
    assert_cmp "$ms" -lt "$limit" "$what beside 5 slow downloads took $ms ms"
}
quick 3000 "GET /v1/sandboxes" expect_status 200 GET /v1/sandboxes "$ORCH"
quick 3000 "GET /v1/snapshots/{id}" expect_status 200 GET "/v1/snapshots/$ID" "$SUP"
quick 3000 "GET /v1/snapshots/{id}/files" expect_status 200 GET "/v1/snapshots/$ID/files?path=/home" "$SUP"
# A long job (an ingest, a restore) may meet 429 while the downloads' own jobs still
# spool at disk speed (a second or so); a client retries. Before, the slow clients held
# both slots for as long as they read, and this stayed 429.
long_job() {   # long_job WANT METHOD PATH TOKEN BODY: retried on 429
    local want=$1 got t
    shift
    for t in $(seq 80); do
        got=$(req "$@") || fail "curl failed: $*"
        [ "$got" = 429 ] || break
        sleep 0.1
    done
    [ "$got" = "$want" ] || fail "$1 $2: status $got, expected $want: $(head -c 400 "$T/body")"
}
quick 9000 "POST /v1/snapshots" long_job 201 POST /v1/snapshots "$ORCH" \
    '{"tenant":"t1","sandbox":"sb2","memory":"'$IN'/mem2"}'
cli_snapshot() { timeout 30 "$CAIRN_BIN" snapshot --store "$S" --tenant t1 --sandbox cli1 --memory "$IN/mem" >/dev/null; }
quick 8000 "cairn snapshot (the CLI takes the write lock)" cli_snapshot
quick 9000 "POST /v1/snapshots/{id}/restore" long_job 200 POST "/v1/snapshots/$ID/restore" "$ORCH" \
    '{"out_dir":"'$T/wake/r1'"}'
cmp -s "$T/wake/r1/memory" "$IN/mem" || fail "the restore beside slow downloads: wrong bytes"
quick 3000 "GET /v1/sandboxes/{id}" expect_status 200 GET /v1/sandboxes/cli1 "$ORCH"

# The slow clients were still reading all along, and each gets the whole reply.
for i in 1 2 3 4 5; do
    kill -0 "${pids[$((i - 1))]}" 2>/dev/null || fail "slow download $i ended before the other calls did"
done
touch "$T/go"
for i in 1 2 3 4 5; do
    wait "${pids[$((i - 1))]}" || fail "slow download $i failed: $(cat "$T/slow.$i.err")"
    assert_eq "$(cat "$T/slow.$i.code")" 200 "slow download $i status"
done
for i in 1 2 3 5; do
    cmp -s "$T/slow.$i" "$IN/tree/home/ubuntu/output/big.bin" || fail "slow download $i: wrong bytes"
done
mkdir -p "$T/x"
tar -xf "$T/slow.4" -C "$T/x" || fail "the slow archive is not a whole tar"
cmp -s "$T/x/home/ubuntu/output/big.bin" "$IN/tree/home/ubuntu/output/big.bin" || fail "slow archive: wrong bytes"

# The metadata calls read a lock-free view kept open across ingests: a CLI commit must
# still be in their answers as soon as the CLI returns, every time, also when other calls
# keep opening views in the middle of its commits (4 clients asking without pause).
"$PY" - "$PORT" "$ORCH" "$T/hammer.stop" <<'PYEOF' 2>"$T/hammer.err" &
import http.client, os, sys, threading
port, tok, stop = sys.argv[1:4]
def ask():
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    while not os.path.exists(stop):
        for p in ("/v1/sandboxes/cli1", "/v1/snapshots/cli1@latest", "/v1/sandboxes"):
            c.request("GET", p, headers={"Authorization": "Bearer " + tok})
            c.getresponse().read()
ts = [threading.Thread(target=ask) for _ in range(4)]
for t in ts: t.start()
for t in ts: t.join()
PYEOF
hammer=$!
for i in 1 2 3 4 5 6; do
    id=$("$CAIRN_BIN" snapshot --store "$S" --tenant t1 --sandbox cli1 --memory "$IN/mem" | tail -n 1)
    expect_status 200 GET "/v1/snapshots/cli1@latest" "$ORCH"
    assert_eq "$(json 'j["snapshot"]' "$T/body")" "$id" "cli1@latest right after CLI snapshot $i"
    expect_status 200 GET /v1/sandboxes/cli1 "$ORCH"
    assert_eq "$(json 'len(j["snapshot_list"])' "$T/body")" "$((i + 1))" "cli1's snapshots right after CLI snapshot $i"
done
touch "$T/hammer.stop"
wait "$hammer" || fail "the clients asking beside the CLI failed: $(cat "$T/hammer.err")"
serve_stop
log "ok"
