#!/usr/bin/env bash
# Two nodes snapshot into one bucket at the same time (one over libcurl V4, one over libs3
# V2), each several snapshots; a third node, from an empty folder, rebuilds its index from
# the bucket and restores every acknowledged snapshot byte-exact; each writer still sees
# its own and, with no manual step, the other's (incremental refresh at open, and
# `cairn refresh`); fsck is clean everywhere.
. "$(dirname "$0")/../lib.sh"
need_s3

C=$(std_corpus)
B=$(s3_bucket)
s3_init "$T/a" "$B" v4
s3_init "$T/b" "$B" v2
[ "$(grep '^node=' "$T/a/cairn.conf")" != "$(grep '^node=' "$T/b/cairn.conf")" ] || fail "two nodes got one tag"

writer() {     # writer NODE SANDBOX: two snapshots of the corpus sandbox, ids into NODE.ids
    local node=$1 sb=$2 k out
    for k in 1 2; do
        out=$(timeout 300 "$CAIRN_BIN" snapshot --store "$T/$node" --tenant acme --sandbox "$sb" \
            $(spec_args $(set_of "$C" "$sb" $k) | tr '\n' ' ')) || return 1
        echo "$(tail -n 1 <<<"$out") $sb $k" >>"$T/$node.ids"
    done
}
writer a sb01 & pa=$!
writer b sb02 & pb=$!
wait $pa || fail "node a's snapshots failed"
wait $pb || fail "node b's snapshots failed"
[ "$(wc -l <"$T/a.ids")" = 2 ] && [ "$(wc -l <"$T/b.ids")" = 2 ] || fail "not every snapshot was acknowledged"

s3_init "$T/c" "$B" v4
fsck_ok "$T/c" --rebuild-index
while read -r id sb k; do
    # shellcheck disable=SC2046
    verify "$T/c" "$id" $(set_of "$C" "$sb" "$k")
done < <(cat "$T/a.ids" "$T/b.ids")
assert_eq "$(count_snapshots "$T/c" sb01)" 2 "node c's snapshots of sb01"
assert_eq "$(count_snapshots "$T/c" sb02)" 2 "node c's snapshots of sb02"
# Each node restores the other's snapshots with no manual step: every open refreshes
# incrementally (only manifests and packs newer than the last seen are read).
read -r id sb k <"$T/b.ids"
# shellcheck disable=SC2046
verify "$T/b" "$id" $(set_of "$C" "$sb" "$k")
# shellcheck disable=SC2046
verify "$T/a" "$id" $(set_of "$C" "$sb" "$k")
assert_eq "$(count_snapshots "$T/a" sb02)" 2 "node a's list of node b's sandbox"
# A new snapshot on b: a's explicit refresh reads it (and only it), a second finds nothing.
head -c 3000000 /dev/urandom >"$T/new.mem"
id=$(snap "$T/b" acme sb04 memory="$T/new.mem")
must cairn refresh --store "$T/a" --json >"$T/r1.json"
assert_json 'j["remote"] and j["snapshots"] == 1 and j["packs"] >= 1' "$T/r1.json" "a's refresh after b's snapshot"
must cairn refresh --store "$T/a" --json >"$T/r2.json"
# Two passes (at open, then the command's), each: the bucket's clock (a PUT and a LIST),
# manifests/, nodes/, one per other node.
assert_json 'j["snapshots"] == 0 and j["packs"] == 0 and j["requests"] <= 2 * (2 + 2 + 2)' "$T/r2.json" \
    "a refresh with nothing new"
verify "$T/a" "$id" memory="$T/new.mem"
# A snapshot on b, restored at once on c (no refresh command): the restore's open reads it.
head -c 2000000 /dev/urandom >"$T/new2.mem"
id=$(snap "$T/b" acme sb05 memory="$T/new2.mem")
verify "$T/c" "$id" memory="$T/new2.mem"
fsck_ok "$T/a"
fsck_ok "$T/b"
fsck_ok "$T/c"
log "ok"
