#!/usr/bin/env bash
# The disk's file index is built beside the ingest (snap_index_start), and a slow one holds
# the store's lock no longer than about the ingest itself: past that the ingest lets the
# store go, the walk finishes, and the snapshot is taken again, with its index. Here the
# walk takes 4 s more (the failio shim slows ext2fs_open2): another snapshot of the same
# store is acknowledged while the slow one still runs, and both restore byte-exact, the
# slow one with every file of its disk in its index. The same through the API.
. "$(dirname "$0")/../lib.sh"
. "$REPO/tests/api_lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
sandbox_tree "$T/tree" 5
ext4_image "$T/tree" "$T/disk.img" 16M
gen "$T/mem" $((256 * 4096)) 3
gen "$T/mem2" $((64 * 4096)) 4

LD_PRELOAD=$BUILD/libcairn-failio.so FAILIO_SLOW_EXT2FS_MS=6000 "$CAIRN_BIN" snapshot --store "$S" \
    --tenant t --sandbox slow --memory "$T/mem" --disk "$T/disk.img" --json >"$T/slow.json" 2>"$T/slow.err" &
pid=$!
sleep 1
id2=$(snap "$S" t quick "memory=$T/mem2")
kill -0 "$pid" 2>/dev/null || fail "the slow snapshot ended before the other one was acknowledged"
wait "$pid" || fail "the snapshot with a slow file index failed: $(cat "$T/slow.err")"
assert_json '"warning" not in j and j["files"] >= 12' "$T/slow.json" "the slow snapshot's file index"
id1=$(json 'j["snapshot"]' "$T/slow.json")
verify "$S" "$id1" "memory=$T/mem" "disk=$T/disk.img"
verify "$S" "$id2" "memory=$T/mem2"
cairn cat --store "$S" --snapshot "$id1" /home/ubuntu/output/report.md --actor test >"$T/report.md" ||
    fail "cat of a file of the slow snapshot's disk"
cmp -s "$T/report.md" "$T/tree/home/ubuntu/output/report.md" || fail "the slow snapshot's file differs"
fsck_ok "$S"

# The API: one ingest lets the store's writer go while its walk finishes, the other runs.
S=$T/api IN=$T/in OUT=$T/dst
mkdir -p "$IN" "$OUT"
must cairn init --store "$S" >/dev/null
cp "$T/mem" "$T/disk.img" "$T/mem2" "$IN/"
api_config '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$OUT'"], "limits": {"max_long_jobs": 2}}'
api_tokens ORCH=orchestrator:orch
LD_PRELOAD=$BUILD/libcairn-failio.so FAILIO_SLOW_EXT2FS_MS=6000 serve_start "$S"
curl -sS -o "$T/slow.body" -w '%{http_code}' --max-time 120 -H "Authorization: Bearer $ORCH" \
    -H "Content-Type: application/json" -X POST "$U/v1/snapshots" \
    --data-binary '{"tenant":"t","sandbox":"slow","memory":"'$IN/mem'","disk":"'$IN/disk.img'"}' >"$T/slow.code" &
pid=$!
sleep 1
expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t","sandbox":"quick","memory":"'$IN/mem2'"}'
kill -0 "$pid" 2>/dev/null || fail "API: the slow snapshot ended before the other one was acknowledged"
wait "$pid" || fail "API: curl of the slow snapshot failed"
assert_eq "$(cat "$T/slow.code")" 201 "API: the slow snapshot's status ($(head -c 300 "$T/slow.body"))"
assert_json '"warning" not in j and j["files"] >= 12' "$T/slow.body" "API: the slow snapshot's file index"
serve_stop
verify "$S" "$(json 'j["snapshot"]' "$T/slow.body")" "memory=$T/mem" "disk=$T/disk.img"
fsck_ok "$S"
log "ok"
