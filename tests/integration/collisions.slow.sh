#!/usr/bin/env bash
# Issue 9, collisions: a build whose chunk ids keep 16 bits (make DEFS=-DCAIRN_TEST_SHORT_HASH,
# in build-short/) makes collisions common: among a thousand stored pages, a new page
# collides with one of them 1.5% of the time. Sixteen tenants snapshot their own pages (and
# some shared ones, which must still deduplicate), then change a few and snapshot again;
# one file collides with itself. Every snapshot must either succeed or fail loudly (exit 1,
# "collision"), and every acknowledged one, before and after a gc, restores to exactly its
# own tenant's bytes: never another tenant's. fsck --verify-data stays clean.
. "$(dirname "$0")/../lib.sh"

# A relative BUILD, as `make` is usually run: the dependency files name targets that way.
SB=$REPO/build-short
make -s -C "$REPO" -j2 BUILD=build-short DEFS=-DCAIRN_TEST_SHORT_HASH build-short/cairn >"$T/make.log" 2>&1 ||
    { tail -20 "$T/make.log" >&2; fail "building the short-hash cairn"; }
CAIRN_BIN=$SB/cairn
S=$T/store
must cairn init --store "$S" >/dev/null
gen "$T/shared" $((16 * 4096)) 99

acked=() detected=0 restores=0
# try TENANT ROUND MEMORY: snapshot; keeps a copy of what an acknowledged one must restore.
try() {
    local t=$1 r=$2 mem=$3 rc=0
    cairn snapshot --store "$S" --tenant "$t" --sandbox "sb-$t" --memory "$mem" --vmstate "$T/shared" \
        --json >"$T/out" 2>"$T/err" || rc=$?
    case $rc in
        0)  local id; id=$(json 'j["snapshot"]' "$T/out")
            cp "$mem" "$T/acked-$id"
            acked+=("$id") ;;
        1)  grep -q 'collision' "$T/err" || fail "snapshot of $t (round $r) failed, not for a collision: $(cat "$T/err")"
            detected=$((detected + 1)) ;;
        *)  fail "snapshot of $t (round $r) exited $rc: $(cat "$T/err")" ;;
    esac
}

for i in $(seq 0 15); do
    gen "$T/m$i" $((48 * 4096)) $((100 + i))
    cat "$T/shared" >>"$T/m$i"
    try "t$i" 1 "$T/m$i"
done
for i in $(seq 0 15); do
    mutate "$T/m$i" 8 $((200 + i))
    try "t$i" 2 "$T/m$i"
done
# 2000 pages of one file: some of them collide with each other (a repeat inside one ingest).
gen "$T/big" $((2000 * 4096)) 7
try big 1 "$T/big"

check_all() {
    local id
    for id in "${acked[@]}"; do
        must cairn restore --store "$S" --snapshot "$id" --out "$T/r" >/dev/null
        cmp -s "$T/r/memory" "$T/acked-$id" || fail "snapshot $id restores other bytes than its tenant's ($1)"
        cmp -s "$T/r/vmstate" "$T/shared" || fail "snapshot $id: vmstate differs ($1)"
        rm -rf "$T/r"
        restores=$((restores + 1))
    done
}
check_all "before gc"
[ "$detected" -gt 0 ] || fail "no collision was detected: the short-hash build does not collide?"
[ "${#acked[@]}" -ge 10 ] || fail "only ${#acked[@]} snapshots succeeded"
fsck_ok "$S" --verify-data

# A page whose id the parent holds at another offset is still compared byte by byte: the
# parent's ids spare lookups only when dedup hits are not verified (snapshotter/ingest.c).
# Two pages with one id in a store of its own: the first collision inside one file names
# the later page's offset; halving the earlier pages finds the other (a copy of the empty
# store per probe, so a probe stores nothing the next one sees).
E=$T/empty
must cairn init --store "$E" >/dev/null
gen "$T/many" $((1000 * 4096)) 11
page() { dd if="$T/many" bs=4096 skip="$1" count=1 status=none; }
probe() {                        # probe FILE: 0 if a snapshot of FILE is refused for a collision
    rm -rf "$T/probe"
    cp -a "$E" "$T/probe"
    ! cairn snapshot --store "$T/probe" --tenant p --sandbox p --memory "$1" >/dev/null 2>"$T/perr" &&
        grep -q collision "$T/perr"
}
probe "$T/many" || fail "1000 random pages had no collision in a 16-bit build"
b=$(grep -o 'the page at offset [0-9]*' "$T/perr" | grep -o '[0-9]*$')
b=$((b / 4096)) lo=0 hi=$b
while [ $((hi - lo)) -gt 1 ]; do        # the page colliding with page b is in [lo, hi)
    mid=$(((lo + hi) / 2))
    for k in $(seq "$lo" $((mid - 1))); do page "$k"; done >"$T/half"
    page "$b" >>"$T/half"
    if probe "$T/half"; then hi=$mid; else lo=$mid; fi
done
page "$lo" >"$T/pa"
{ head -c 4096 /dev/zero; page "$b"; } >"$T/pb"      # page b one page further on
probe "$T/pb" && fail "page $b alone collided"
cp -a "$E" "$T/pair"
must cairn snapshot --store "$T/pair" --tenant p --sandbox p --memory "$T/pa" >/dev/null
expect 1 cairn snapshot --store "$T/pair" --tenant p --sandbox p --memory "$T/pb" >/dev/null
assert_grep collision "$T/err" "a page colliding with the parent's page at another offset"
log "pages $lo and $b of one file share an id: the second snapshot, with page $b where the parent has none, was refused"

# gc drops the superseded round-1 snapshots, sweeps and rewrites packs; the rest still restore.
must cairn gc --store "$S" --json >/dev/null
live=()
for id in "${acked[@]}"; do
    [ -f "$S/manifests/$id.cmf" ] && live+=("$id")
done
acked=("${live[@]}")
check_all "after gc"
fsck_ok "$S" --verify-data
log "$detected snapshots refused for a collision, ${#acked[@]} left after gc; $restores restores byte-exact, none with another tenant's bytes"
echo "collisions restores=$restores detected=$detected" >"${RELIABILITY_OUT:-/dev/null}"
