#!/usr/bin/env bash
# Issue 9, defect 5: the store is private to its owner whatever the umask. Packs, manifests,
# file indexes (small files inline, .env included), the index, the audit and events logs and
# the template cache are 0600 in 0700 folders even when cairn runs with umask 000, and
# `cairn fsck` reports (exit 1, JSON problems naming the path) a store whose modes were
# loosened afterwards, until they are tightened again.
source "$(dirname "$0")/../lib.sh"

umask 000
S=$T/store
mkdir "$S"                        # an empty folder given to init (made 0777 by this umask)
must cairn init --store "$S" >/dev/null
sandbox_tree "$T/root" 1
ext4_image "$T/root" "$T/disk.img"
gen "$T/mem" $((1 << 20)) 1 30
base_template "$S"
id=$(snap "$S" acme box memory="$T/mem" disk="$T/disk.img")
must cairn cat --store "$S" --actor eve --snapshot "$id" /home/ubuntu/output/report.md >/dev/null
must cairn touch --store "$S" --sandbox box >/dev/null
must cairn rebuild --store "$S" --sandbox box --template base --out "$T/rebuilt.img" >/dev/null
must cairn restore --store "$S" --snapshot "$id" --out "$T/wake" >/dev/null
must cairn gc --store "$S" >/dev/null

for f in audit.log events.log cairn.conf lock gc.lock; do
    [ -e "$S/$f" ] || fail "no $f in the store (the test expects every kind of file)"
done
ls "$S"/packs/*.pack "$S"/manifests/*.cmf "$S"/manifests/*.files "$S"/index/CURRENT >/dev/null \
    || fail "the store lacks packs, manifests, file indexes or an index"
[ -d "$S/cache" ] || fail "no template cache"
open=$(find "$S" ! -type l -perm /077 -printf '%m %p\n')
[ -z "$open" ] || fail "store entries open to others under umask 000: $open"
assert_eq "$(stat -c %a "$S")" 700 "the store's own folder"
# What cairn hands out of the store is private too (the caller may chmod it).
for f in "$T/wake/memory" "$T/wake/disk" "$T/rebuilt.img"; do
    assert_eq "$(( 0$(stat -c %a "$f") & 077 ))" 0 "mode of $f"
done
fsck_ok "$S"

# Loosened afterwards: a pack, the manifests folder, a file index, the index's files.
pack=$(ls "$S"/packs/*.pack | head -1)
findex=$(ls "$S"/manifests/*.files | head -1)
chmod 644 "$pack" "$findex"
chmod 755 "$S/manifests"
chmod o+r "$S"/index/CURRENT
expect 1 cairn fsck --store "$S" --json >/dev/null
assert_json 'not j["ok"]' "$T/out" "fsck of a loosened store says not ok"
json '"\n".join(j["problems"])' "$T/out" >"$T/problems"
for p in "$pack" "$findex" "$S/manifests" "$S/index/CURRENT"; do
    grep -qF "$p:" "$T/problems" || fail "fsck does not name $p: $(cat "$T/out")"
done
expect 1 cairn fsck --store "$S" >/dev/null
assert_grep 'PROBLEM: .*packs/.*mode 0644' "$T/out" "the text output names the pack and its mode"
# The operator's policy file is not tenant data: its mode is the operator's choice.
echo '**/notes/** artifact' >"$S/policy"
chmod 644 "$S/policy"
chmod 600 "$pack" "$findex" "$S/index/CURRENT"
chmod 700 "$S/manifests"
fsck_ok "$S"

# Many loosened files: the first 20 named, then a count.
chmod -R go+rX "$S"
expect 1 cairn fsck --store "$S" --json >/dev/null
assert_grep 'open to others in all' "$T/out" "a count after the first findings"
n=$(json 'len(j["problems"])' "$T/out")
assert_cmp "$n" -le 21 "findings named one by one"
chmod -R go-rwx "$S"
fsck_ok "$S"
log "ok"
