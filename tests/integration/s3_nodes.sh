#!/usr/bin/env bash
# The store on S3 (a real Ceph RGW), with each transport (libs3 V2, libcurl V4):
#  - node A snapshots sandboxes (memory, vmstate, disk with its file index) and restores them;
#  - node B, a fresh folder on the same bucket, rebuilds its index from the bucket and then
#    lists, restores byte-exact (cold cache: ranged GETs) and reads files of every snapshot
#    A wrote, with the tier A set; a second restore there reads the frames it kept (no GET
#    of a pack), and a damaged kept frame is read from the bucket again;
#  - the folder of a node holds no key and no secret; the bucket holds the store.
. "$(dirname "$0")/../lib.sh"
need_s3

# pack_gets BUCKET: GETs of packs RGW has logged for the bucket so far (once its log is
# flushed: two reads a moment apart agree).
pack_gets() {
    local a b=-1
    while :; do
        a=$(grep -c "\"GET /$1/packs/" "$CAIRN_TEST_S3_DIR/log/rgw.log" || true)
        [ "$a" = "$b" ] && break
        b=$a
        sleep 0.5
    done
    echo "$a"
}

C=$(std_corpus)
for sig in v4 v2; do
    log "transport $sig"
    B=$(s3_bucket)
    A=$T/a-$sig N=$T/b-$sig
    s3_init "$A" "$B" $sig
    declare -A spec=()
    snap_std "$A" "$C"
    must cairn tier --store "$A" --tenant acme pro >/dev/null
    for id in "${!spec[@]}"; do
        # shellcheck disable=SC2086
        verify "$A" "$id" ${spec[$id]}
    done
    fsck_ok "$A"

    # Nothing secret in a node's folder: not the keys, not the chunk-id secret.
    ! grep -rqsF "$CAIRN_S3_SECRET_KEY" "$A" || fail "the S3 secret key is in $A"
    ! grep -rqsF "$CAIRN_S3_ACCESS_KEY" "$A" || fail "the S3 access key is in $A"
    ! grep -qs '^secret=' "$A/cairn.conf" || fail "the chunk-id secret is in $A/cairn.conf"
    [ "$(s3_curl GET "$B/cairn.conf")" = 200 ] || fail "no cairn.conf in bucket $B"
    grep -q '^secret=' "$T/s3_curl.out" || fail "the bucket's cairn.conf has no secret"

    # Node B: an empty folder on the same bucket.
    s3_init "$N" "$B" $sig
    fsck_ok "$N" --rebuild-index
    for sb in sb01 sb02; do
        a=$(must cairn snapshots --store "$A" --sandbox $sb --json | json '[s["snapshot"] for s in j["snapshots"]]')
        b=$(must cairn snapshots --store "$N" --sandbox $sb --json | json '[s["snapshot"] for s in j["snapshots"]]')
        assert_eq "$b" "$a" "node B's list of $sb"
    done
    [ -z "$(ls -A "$N/packs")" ] || fail "node B's pack cache is not cold"
    for id in "${!spec[@]}"; do
        # shellcheck disable=SC2086
        verify "$N" "$id" ${spec[$id]}
    done
    # The cold reads were kept (cache/frames): a second restore on B sends no GET of a pack.
    [ -n "$(ls -A "$N/cache/frames")" ] || fail "node B kept no copy of the frames it read"
    g0=$(pack_gets "$B")
    # shellcheck disable=SC2086
    verify "$N" "$id" ${spec[$id]}
    assert_eq "$(pack_gets "$B")" "$g0" "GETs of packs by a second restore on node B"
    # A damaged copy is read from the bucket again, never a failed restore.
    for f in "$N"/cache/frames/*; do printf 'torn' | dd of="$f" bs=1 seek=40 conv=notrunc status=none; done
    # shellcheck disable=SC2086
    verify "$N" "$id" ${spec[$id]}
    must cairn sandboxes --store "$N" --tenant acme --json >"$T/sb.json"
    assert_json 'len(j["sandboxes"]) == 2 and all(s["tier"] == "pro" for s in j["sandboxes"])' "$T/sb.json" \
        "node B sees A's tier"
    # Files of a disk through the file index, read from the bucket.
    last=$(must cairn snapshots --store "$N" --sandbox sb01 --json | json 'j["snapshots"][0]["snapshot"]')
    must cairn ls --store "$N" --snapshot "$last" / --actor test --json >"$T/ls.json"
    assert_json 'len(j["entries"]) > 0' "$T/ls.json" "ls on node B"
    must cairn stats --store "$N" --json >"$T/st.json"
    assert_json 'j["packs"] > 0 and j["stored_bytes"] > 0 and j["snapshots"] == 4' "$T/st.json" \
        "stats of node B count the bucket's packs"
    fsck_ok "$N" --verify-data

    # Dedup across nodes: B's snapshot of what A stored adds (almost) nothing.
    id=$(snap "$N" acme sb03 $(set_of "$C" sb01 2))
    assert_cmp "$(json 'j["new_bytes"]' "$T/snap.json")" -lt 1000000 "B's copy of A's snapshot stored new bytes"
    unset spec
done
log "ok"
