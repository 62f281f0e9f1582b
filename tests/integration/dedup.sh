#!/usr/bin/env bash
# Pages shared between sandboxes of one template, and between snapshots of one
# sandbox, are stored once: what a user pays for is what changed.
. "$(dirname "$0")/../lib.sh"

C=$(std_corpus)
S=$T/store
must cairn init --store "$S" >/dev/null

stat_of() { must cairn stats --store "$S" --json | json "j['$1']"; }

read -ra a1 <<<"$(set_of "$C" sb01 1)"
read -ra b1 <<<"$(set_of "$C" sb02 1)"
read -ra a2 <<<"$(set_of "$C" sb01 2)"
read -ra b2 <<<"$(set_of "$C" sb02 2)"

ida1=$(snap "$S" acme sb01 "${a1[@]}"); new_a1=$(json 'j["new_bytes"]' "$T/snap.json")
idb1=$(snap "$S" acme sb02 "${b1[@]}"); new_b1=$(json 'j["new_bytes"]' "$T/snap.json")
log "first sandbox new_bytes $new_a1, second sandbox of the same template $new_b1"
assert_cmp "$new_a1" -gt 0 "new_bytes of the first snapshot"
# The second sandbox shares the template's disk and kernel pages with the first.
assert_cmp $(( new_b1 * 4 )) -lt $(( new_a1 * 3 )) \
    "second sandbox new_bytes ($new_b1) should be clearly below the first's ($new_a1)"

ida2=$(snap "$S" acme sb01 "${a2[@]}"); new_a2=$(json 'j["new_bytes"]' "$T/snap.json")
idb2=$(snap "$S" acme sb02 "${b2[@]}"); new_b2=$(json 'j["new_bytes"]' "$T/snap.json")
log "second snapshots of the same sandboxes: new_bytes $new_a2, $new_b2"
assert_cmp $(( new_a2 * 4 )) -lt "$new_a1" "a later snapshot of the same VM stores only its changes"
assert_cmp $(( new_b2 * 4 )) -lt "$new_a1" "a later snapshot of the same VM stores only its changes"

# The same files once more: logical size grows by a full snapshot, the packs
# by (almost) nothing.
log0=$(stat_of logical_bytes); st0=$(stat_of stored_bytes); ch0=$(stat_of chunks)
idr=$(snap "$S" acme sb01 "${a2[@]}"); new_r=$(json 'j["new_bytes"]' "$T/snap.json")
size=$(json 'j["logical_bytes"]' "$T/snap.json")
log1=$(stat_of logical_bytes); st1=$(stat_of stored_bytes); ch1=$(stat_of chunks)
assert_cmp "$new_r" -le 65536 "identical re-snapshot new_bytes"
assert_eq $(( log1 - log0 )) "$size" "stats logical_bytes grows by the snapshot's size"
assert_cmp $(( st1 - st0 )) -le 65536 "stats stored_bytes growth on an identical snapshot"
assert_eq "$ch1" "$ch0" "stats chunks after an identical snapshot"

logical=$(stat_of logical_bytes); stored=$(stat_of stored_bytes)
log "5 snapshots: logical $logical, stored $stored"
assert_cmp $(( stored * 5 )) -lt "$logical" "logical/stored over 5 snapshots should exceed 5"

# Dedup must not cost correctness: every snapshot still restores exactly.
verify "$S" "$ida1" "${a1[@]}"
verify "$S" "$idb1" "${b1[@]}"
verify "$S" "$ida2" "${a2[@]}"
verify "$S" "$idb2" "${b2[@]}"
verify "$S" "$idr" "${a2[@]}"
fsck_ok "$S"
log "ok"
