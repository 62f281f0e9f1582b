#!/usr/bin/env bash
# A download (content, archive, a share's content) is spooled whole in the store's file
# system before its status goes out (docs/api.md, "Threads and locking"). On a full disk
# it is a 507 insufficient_storage in JSON, never a 200 cut short, and it leaves no
# space taken; what fits is a 200 with its Content-Length and exact bytes; once there is
# room the same download works. The store lives on a small tmpfs. With the default limits
# (derived from the file system's size), slow share downloads of one tenant hold at most
# its share of the spool cap: another tenant's snapshot and download still work.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

M=$T/mnt
mkdir -p "$M"
at_exit 'umount -l "$M" 2>/dev/null'
mount -t tmpfs -o size=64m cairn-spool "$M" 2>"$T/mount.err" || skip "cannot mount a tmpfs: $(cat "$T/mount.err")"

S=$M/store
IN=$T/in
mkdir -p "$IN/tree/home/ubuntu/output"
head -c 20M /dev/urandom >"$IN/tree/home/ubuntu/output/big.bin"
head -c 5M /dev/urandom >"$IN/tree/home/ubuntu/output/mid.bin"
echo "a small report" >"$IN/tree/home/ubuntu/output/report.txt"
mkimg "$IN/tree" "$IN/disk.img" 32M
must cairn init --store "$S" >/dev/null
ID=$(snap "$S" t1 sb1 disk="$IN/disk.img")
api_serve '{"snapshot_roots": [], "restore_roots": []}' SUP=support:sup ORCH=orchestrator:orch
expect_status 201 POST /v1/sandboxes/sb1/shares "$ORCH" '{}'
SHARE=$(json 'j["token"]' "$T/body")

free_kib() { df -k --output=avail "$M" | tail -n 1 | tr -d ' '; }
# Leave about 6 MiB free: the report fits, the 20 MiB file and the archive do not.
fill=$(( $(free_kib) - 6 * 1024 ))
[ "$fill" -gt 0 ] || fail "the tmpfs is fuller than planned: $(free_kib) KiB free"
head -c "${fill}K" /dev/zero >"$M/filler"
before=$(free_kib)
log "$before KiB free on the store's file system"

for p in "/v1/snapshots/$ID/content?path=/home/ubuntu/output/big.bin" "/v1/snapshots/$ID/archive?path=/home/ubuntu"; do
    expect_status 507 GET "$p" "$SUP"
    assert_json 'j["error"]["code"] == "insufficient_storage" and "spool" in j["error"]["message"]' "$T/body" \
        "the 507's body for $p"
done
expect_status 507 GET "/v1/shared/content?path=/home/ubuntu/output/big.bin" "$SHARE"
assert_json 'j["error"]["code"] == "insufficient_storage" and "'$M'" not in j["error"]["message"] and "'$ID'" not in j["error"]["message"]' \
    "$T/body" "a share's 507 names nothing of the store"
grep -q ' 507 .*rid=.*error: ' "$T/serve.log" || fail "no log line for the 507: $(tail -n 3 "$T/serve.log")"
# (the audit log's records of the reads take a block or two)
[ "$(free_kib)" -ge $((before - 64)) ] || fail "the refused downloads left their spools: $(free_kib) KiB free, was $before"

expect_status 200 GET "/v1/snapshots/$ID/content?path=/home/ubuntu/output/report.txt" "$SUP"
assert_eq "$(cat "$T/body")" "a small report" "a file that fits"
assert_grep '^content-length: 15' "$T/hdr" "its Content-Length"

rm "$M/filler"
curl -sS -f -D "$T/hdr" -o "$T/big" -H "Authorization: Bearer $SUP" \
    "$U/v1/snapshots/$ID/content?path=/home/ubuntu/output/big.bin" || fail "the big download once there is room"
cmp "$T/big" "$IN/tree/home/ubuntu/output/big.bin" || fail "the big download's bytes"
assert_grep "^content-length: $((20 << 20))" "$T/hdr" "the big download's Content-Length"
curl -sS -f -o "$T/a.tar" -H "Authorization: Bearer $SUP" "$U/v1/snapshots/$ID/archive?path=/home/ubuntu" ||
    fail "the archive once there is room"
mkdir -p "$T/x" && tar -xf "$T/a.tar" -C "$T/x" || fail "the archive does not unpack"
cmp "$T/x/home/ubuntu/output/big.bin" "$IN/tree/home/ubuntu/output/big.bin" 2>/dev/null ||
    cmp "$T/x/output/big.bin" "$IN/tree/home/ubuntu/output/big.bin" || fail "the archive's bytes: $(cd "$T/x" && find . | head)"
serve_stop

log "limits.max_spool_bytes: 24 MiB"
"$PY" -c 'import json, sys; p = sys.argv[1]; j = json.load(open(p)); j["limits"] = {"max_spool_bytes": 24 << 20, "max_spool_bytes_per_tenant": 24 << 20}
json.dump(j, open(p, "w"))' "$S/serve.json"    # the tokens stay
serve_start "$S"
expect_status 507 GET "/v1/snapshots/$ID/archive?path=/home/ubuntu" "$SUP"
assert_json 'j["error"]["code"] == "insufficient_storage" and "max_spool_bytes" in j["error"]["message"]' "$T/body" \
    "the 507 of a download over the cap"
assert_grep '^retry-after: ' "$T/hdr" "the 507 over the cap says when to retry"
expect_status 200 GET "/v1/snapshots/$ID/content?path=/home/ubuntu/output/mid.bin" "$SUP"
cmp "$T/body" "$IN/tree/home/ubuntu/output/mid.bin" || fail "a download under the cap"
# A slow client holds its 20 MiB spool while it reads (more than the sockets buffer); 5 MiB
# more would pass the cap.
curl -sS --limit-rate 100k -D "$T/slow.hdr" -o "$T/slow.body" -H "Authorization: Bearer $SUP" \
    "$U/v1/snapshots/$ID/content?path=/home/ubuntu/output/big.bin" 2>/dev/null &
slow=$!
at_exit "kill $slow 2>/dev/null"
for _ in $(seq 200); do [ -s "$T/slow.hdr" ] && break; sleep 0.05; done
assert_grep '^HTTP/1.1 200' "$T/slow.hdr" "the slow download started"
expect_status 507 GET "/v1/snapshots/$ID/content?path=/home/ubuntu/output/mid.bin" "$SUP"
assert_json '"max_spool_bytes" in j["error"]["message"]' "$T/body" "a download beside the slow one"
kill "$slow"
wait "$slow" 2>/dev/null || true
ok=0
for _ in $(seq 100); do
    [ "$(req GET "/v1/snapshots/$ID/content?path=/home/ubuntu/output/mid.bin" "$SUP")" = 200 ] && { ok=1; break; }
    sleep 0.1
done
[ "$ok" = 1 ] || fail "the cap was not given back when the slow download ended: $(head -c 300 "$T/body")"
cmp "$T/body" "$IN/tree/home/ubuntu/output/mid.bin" || fail "the download after the slow one"
serve_stop

log "the default limits: one tenant's slow share downloads against another tenant's snapshot"
M2=$T/mnt2
mkdir -p "$M2"
at_exit 'umount -l "$M2" 2>/dev/null'
mount -t tmpfs -o size=128m cairn-spool2 "$M2" || fail "a second tmpfs"
S=$M2/store
must cairn init --store "$S" >/dev/null
ID=$(snap "$S" t1 sb1 disk="$IN/disk.img")
ID2=$(snap "$S" t2 sb2 disk="$IN/disk.img")      # the same files: deduplicated, no space
head -c 30M /dev/urandom >"$IN/mem30"
# (128 MiB: the spools may take 64 MiB, one tenant's 32, and leave 4 MiB free)
api_serve '{"snapshot_roots": [], "restore_roots": []}' ORCH=orchestrator:orch:t1 SUP2=support:sup2:t2
expect_status 201 POST /v1/sandboxes/sb1/shares "$ORCH" '{}'
SHARE=$(json 'j["token"]' "$T/body")
log "$(free_kib) KiB free before the share's downloads"
# One at a time (so their spools do not pass the share together and all fail): the first
# is a 200 that holds its 20 MiB while it reads at 100 KiB/s; the next ones would pass
# t1's 32 MiB and are refused. Without a cap, each would hold 20 MiB more.
held=0 refused=0 slows=
for i in 1 2 3 4 5; do
    curl -sS --limit-rate 100k -D "$T/h$i" -o "$T/b$i" -H "Authorization: Bearer $SHARE" \
        "$U/v1/shared/content?path=/home/ubuntu/output/big.bin" 2>/dev/null &
    slows="$slows $!"
    at_exit "kill $! 2>/dev/null"
    for _ in $(seq 600); do [ -s "$T/h$i" ] && break; sleep 0.05; done
    if grep -q '^HTTP/1.1 200' "$T/h$i"; then
        held=$((held + 1))
    elif grep -q '^HTTP/1.1 507' "$T/h$i"; then
        wait $! 2>/dev/null || true
        assert_json 'j["error"]["code"] == "insufficient_storage" and "max_spool_bytes_per_tenant" in j["error"]["message"]' \
            "$T/b$i" "the 507 of a download past the tenant's share"
        assert_grep '^retry-after: ' "$T/h$i" "the 507 past the tenant's share says when to retry"
        refused=$((refused + 1))
    else
        fail "share download $i: $(head -n 1 "$T/h$i" 2>/dev/null) $(head -c 300 "$T/b$i" 2>/dev/null)"
    fi
done
assert_eq "$held $refused" "1 4" "share downloads held and refused (each 20 MiB, t1's share 32 MiB)"
log "$(free_kib) KiB free with t1's download held"
snap "$S" t2 sb2 memory="$IN/mem30" >/dev/null    # fails (exit 1, ENOSPC) if the spools took the room
expect_status 200 GET "/v1/snapshots/$ID2/content?path=/home/ubuntu/output/mid.bin" "$SUP2"
cmp "$T/body" "$IN/tree/home/ubuntu/output/mid.bin" || fail "t2's download beside t1's"
first=${slows# }; first=${first%% *}
kill -0 "$first" 2>/dev/null || fail "t1's slow download ended early: $(head -c 300 "$T/b1")"
for p in $slows; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
serve_stop
log "ok"
