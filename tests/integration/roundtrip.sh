#!/usr/bin/env bash
# A snapshot restores byte-exact, sparse, whatever the file sizes; the JSON
# answers of snapshot, snapshots, stats and fsck carry what callers read.
. "$(dirname "$0")/../lib.sh"

C=$(std_corpus)
S=$T/store
must cairn init --store "$S" >/dev/null
[ -f "$S/cairn.conf" ] || fail "init made no $S/cairn.conf"
fsck_ok "$S"

one=(memory="$C/sb01/1/memory" vmstate="$C/sb01/1/vmstate" disk="$C/sb01/1/disk")
two=(memory="$C/sb01/2/memory" vmstate="$C/sb01/2/vmstate" disk="$C/sb01/2/disk")
logical=$(( $(size_of "$C/sb01/1/memory") + $(size_of "$C/sb01/1/vmstate") + $(size_of "$C/sb01/1/disk") ))

id1=$(snap "$S" acme box1 "${one[@]}")
cp "$T/snap.json" "$T/snap1.json"
assert_eq "$(json 'j["logical_bytes"]' "$T/snap1.json")" "$logical" "snapshot logical_bytes = sum of file sizes"
new1=$(json 'j["new_bytes"]' "$T/snap1.json")
assert_cmp "$new1" -gt 0 "first snapshot new_bytes"
assert_json 'isinstance(j["seconds"], (int, float)) and j["seconds"] >= 0' "$T/snap1.json" \
    "snapshot seconds is a number"

# The same files again: nothing new to store.
id1b=$(snap "$S" acme box1 "${one[@]}")
[ "$id1b" != "$id1" ] || fail "a second snapshot got the same id as the first"
new1b=$(json 'j["new_bytes"]' "$T/snap.json")
assert_cmp "$new1b" -le $(( 65536 > new1 / 100 ? 65536 : new1 / 100 )) \
    "identical re-snapshot new_bytes (first was $new1)"

id2=$(snap "$S" acme box1 "${two[@]}")

verify "$S" "$id1" "${one[@]}"
verify "$S" "$id1b" "${one[@]}"
verify "$S" "$id2" "${two[@]}"

# Restored memory keeps its holes: allocated bytes close to the non-zero pages.
must cairn restore --store "$S" --snapshot "$id2" --out "$T/r2" >/dev/null
mem=$T/r2/memory
nz=$(nonzero_bytes "$mem")
assert_cmp "$nz" -lt $(( $(size_of "$mem") * 3 / 4 )) "corpus memory should be mostly zero pages"
assert_cmp "$(alloc_of "$mem")" -le $(( nz + (1 << 20) )) \
    "restored memory must be sparse: allocated bytes vs non-zero pages + 1 MiB (size $(size_of "$mem"))"
rm -rf "$T/r2"

# snapshots: newest first, each with its id and time.
must cairn snapshots --store "$S" --sandbox box1 --json >"$T/list.json"
is_json_object "$T/list.json" || fail "snapshots --json is not one JSON object"
assert_eq "$(json '[s["snapshot"] for s in j["snapshots"]]' "$T/list.json")" \
    "[\"$id2\", \"$id1b\", \"$id1\"]" "snapshots --sandbox box1, newest first"
assert_json 'all("time" in s for s in j["snapshots"])' "$T/list.json" "every snapshots entry has a time"
assert_eq "$(must cairn snapshots --store "$S" --sandbox nosuchbox --json | json 'len(j["snapshots"])')" 0 \
    "snapshots of an unknown sandbox"

# stats: what the operator reads.
must cairn stats --store "$S" --json >"$T/stats.json"
is_json_object "$T/stats.json" || fail "stats --json is not one JSON object"
for k in chunks stored_bytes index_bytes logical_bytes; do
    assert_cmp "$(json "j['$k']" "$T/stats.json")" -gt 0 "stats $k"
done
assert_eq "$(json 'j["stored_bytes"]' "$T/stats.json")" "$(pack_bytes "$S")" \
    "stats stored_bytes = bytes of packs/*.pack"
logical_all=$(( 2 * logical + $(size_of "$C/sb01/2/memory") + $(size_of "$C/sb01/2/vmstate") + $(size_of "$C/sb01/2/disk") ))
assert_eq "$(json 'j["logical_bytes"]' "$T/stats.json")" "$logical_all" "stats logical_bytes = all snapshots"
assert_cmp "$(json 'j["stored_bytes"]' "$T/stats.json")" -lt "$logical" "stored bytes of 3 snapshots < one snapshot's size"

fsck_ok "$S"
fsck_ok "$S" --verify-data
assert_json 'isinstance(j["garbage"], list)' "$T/fsck.json" "fsck garbage is a list"

# Odd sizes, each in its own snapshot slot.
F=$T/odd; mkdir -p "$F"
: >"$F/empty"
printf 'x' >"$F/one"
gen "$F/4097" 4097 1
gen "$F/odd" $(( 5 * 4096 + 123 )) 2 20
truncate -s 3G "$F/big"
for off in 0 12345 400000 786431; do      # a few data pages, the rest holes
    gen "$F/page" 4096 $off
    dd if="$F/page" of="$F/big" bs=4096 seek=$off conv=notrunc status=none
done
for set in "memory=$F/empty vmstate=$F/one disk=$F/4097" \
           "memory=$F/odd" "vmstate=$F/empty" "disk=$F/one" "memory=$F/4097 vmstate=$F/odd"; do
    read -ra spec <<<"$set"
    id=$(snap "$S" acme odd "${spec[@]}")
    verify "$S" "$id" "${spec[@]}"
done

t0=$EPOCHREALTIME
id=$(snap "$S" acme big memory="$F/big" vmstate="$F/one")
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", b - a }')
assert_cmp "$secs" -lt 30 "snapshot of a 3 GiB sparse file with 4 data pages (seconds)"
assert_cmp "$(json 'j["logical_bytes"]' "$T/snap.json")" -eq $(( (3 << 30) + 1 )) "logical_bytes of the 3 GiB snapshot"
t0=$EPOCHREALTIME
must cairn restore --store "$S" --snapshot "$id" --out "$T/rbig" >/dev/null
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", b - a }')
assert_cmp "$secs" -lt 30 "restore of the 3 GiB sparse file (seconds)"
assert_eq "$(size_of "$T/rbig/memory")" $((3 << 30)) "restored 3 GiB size"
assert_cmp "$(alloc_of "$T/rbig/memory")" -le $((1 << 20)) "restored 3 GiB file allocation"
cmp -s "$F/big" "$T/rbig/memory" || fail "3 GiB sparse file differs after restore"
cmp -s "$F/one" "$T/rbig/vmstate" || fail "vmstate of the 3 GiB snapshot differs"
rm -rf "$T/rbig"

fsck_ok "$S" --verify-data
log "ok"
