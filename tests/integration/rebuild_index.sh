#!/usr/bin/env bash
# The index is a cache of packs and manifests: after losing it entirely,
# `fsck --rebuild-index` gives back the same store (listings, stats, restores).
. "$(dirname "$0")/../lib.sh"

C=$(std_corpus)
S=$T/store
must cairn init --store "$S" >/dev/null
declare -A spec
snap_std "$S" "$C"
gen "$T/extra" $((3 << 20)) 9 10
id=$(snap "$S" other sb03 memory="$T/extra"); spec[$id]="memory=$T/extra"

state() {      # what must survive a rebuild, as one comparable text
    for sb in sb01 sb02 sb03; do
        must cairn snapshots --store "$S" --sandbox $sb --json >"$T/l.json"
        json '[(s["snapshot"], s["time"]) for s in j["snapshots"]]' "$T/l.json"
    done
    must cairn stats --store "$S" --json >"$T/s.json"
    json '(j["chunks"], j["logical_bytes"], j["stored_bytes"])' "$T/s.json"
}
before=$(state)

# Rebuilding an intact index changes nothing.
fsck_ok "$S" --rebuild-index
assert_eq "$(state)" "$before" "listings and stats after rebuilding an intact index"

rm -rf "$S/index"
fsck_ok "$S" --rebuild-index
[ -d "$S/index" ] || fail "--rebuild-index did not recreate $S/index"
assert_eq "$(state)" "$before" "listings and stats after rebuilding a deleted index"
for id in "${!spec[@]}"; do
    # shellcheck disable=SC2086
    verify "$S" "$id" ${spec[$id]}
done
fsck_ok "$S" --verify-data

# The rebuilt index serves new ingests: an identical snapshot stores nothing new.
snap "$S" acme sb01 $(set_of "$C" sb01 2) >/dev/null
assert_cmp "$(json 'j["new_bytes"]' "$T/snap.json")" -le 65536 "new_bytes against a rebuilt index"
log "ok"
