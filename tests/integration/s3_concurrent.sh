#!/usr/bin/env bash
# Two nodes snapshot into one bucket at the same time (one over libcurl V4, one over libs3
# V2), each several snapshots; a third node, from an empty folder, rebuilds its index from
# the bucket and restores every acknowledged snapshot byte-exact; each writer still sees
# its own; fsck is clean everywhere.
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
# Each writer restores its own without a refresh; after one, the other's too.
read -r id sb k <"$T/b.ids"
# shellcheck disable=SC2046
verify "$T/b" "$id" $(set_of "$C" "$sb" "$k")
fsck_ok "$T/a" --rebuild-index
# shellcheck disable=SC2046
verify "$T/a" "$id" $(set_of "$C" "$sb" "$k")
fsck_ok "$T/b"
log "ok"
