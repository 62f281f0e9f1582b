#!/usr/bin/env bash
# A first snapshot bigger than a pack, through the ingest's compression pipeline
# (snapshotter/stage.c: groups compressed by worker threads while later pages are hashed,
# appended in order, a pack sealed and indexed mid-ingest):
#   - it restores byte-exact;
#   - a page repeated after its first copy's pack was sealed is stored once: the ingest's
#     set of staged ids stays exact across the seal (groups in flight at the seal are not
#     in the index yet), also with CAIRN_VERIFY_DEDUP=1 (second hashes kept with them);
#   - a pack write that fails mid-ingest (fault shim, EIO), with groups in flight, fails
#     the snapshot with a message, commits nothing (before the first seal: packs and
#     manifests as they were), leaves fsck clean, and the same snapshot then succeeds.
. "$(dirname "$0")/../lib.sh"

FAULT_LIB=$BUILD/libcairn-fault.so
[ -f "$FAULT_LIB" ] || fail "no $FAULT_LIB (run make first)"

# 192 distinct pages that compress well (3 small groups: the seal falls in no round number
# of groups), 20000 distinct random ones (incompressible: the first 64 MiB pack is sealed
# after ~16400), then copies of random pages 15000..18999, whose first copies straddle the
# seal.
M=$T/memory
"$PY" - "$M" <<'EOF'
import random, sys
r = random.Random(11)
pages = [r.randbytes(4096) for _ in range(20000)]
with open(sys.argv[1], "wb") as f:
    for i in range(192):
        f.write(b"%08d" % i * 512)
    for p in pages:
        f.write(p)
    for p in pages[15000:19000]:
        f.write(p)
EOF
distinct=20192

S=$T/store
must cairn init --store "$S" >/dev/null
id=$(snap "$S" acme big memory="$M")
assert_eq "$(json 'j["new_chunks"]' "$T/snap.json")" "$distinct" "new chunks of a first snapshot with repeats across a pack seal"
npacks=$(ls "$S"/packs/*.pack | wc -l)
assert_cmp "$npacks" -ge 2 "packs written (the input must span a seal)"
verify "$S" "$id" memory="$M"
fsck_ok "$S"

V=$T/verified
must cairn init --store "$V" >/dev/null
idv=$(CAIRN_VERIFY_DEDUP=1 snap "$V" acme big memory="$M")
assert_eq "$(json 'j["new_chunks"]' "$T/snap.json")" "$distinct" "new chunks with CAIRN_VERIFY_DEDUP=1"
verify "$V" "$idv" memory="$M"

# A write that fails mid-ingest. Call 100 is a group's pwrite before the first seal (~256
# groups in the first pack; RocksDB's index/ is not counted), call 280 one after it.
F=$T/faulted
must cairn init --store "$F" >/dev/null
head -c $((4096 * 300)) "$M" >"$T/small"
keep=$(snap "$F" acme keep memory="$T/small")
for at in 100 280; do
    before=$(store_fp "$F")
    rc=0
    env LD_PRELOAD="$FAULT_LIB" CAIRN_FAULT_SKIP=/index CAIRN_FAULT_MODE=eio CAIRN_FAULT_AT=$at \
        CAIRN_FAULT_LOG="$T/fault.log" "$CAIRN_BIN" snapshot --store "$F" --tenant acme --sandbox big \
        --memory "$M" --json >"$T/f.out" 2>"$T/f.err" || rc=$?
    assert_eq "$rc" 1 "exit status of a snapshot whose write $at failed"
    assert_grep "pack" "$T/f.err" "the failed snapshot's message"
    assert_grep "pwrite|write" "$T/fault.log" "the injected fault (call $at)"
    assert_eq "$(count_snapshots "$F" big)" 0 "snapshots of big after a failed ingest (call $at)"
    [ "$at" != 100 ] || assert_eq "$(store_fp "$F")" "$before" "packs and manifests after a failure before the first seal"
    fsck_ok "$F"
    rm -f "$T/fault.log"
done
verify "$F" "$keep" memory="$T/small"
idf=$(snap "$F" acme big memory="$M")
verify "$F" "$idf" memory="$M"
fsck_ok "$F"
log "ok"
