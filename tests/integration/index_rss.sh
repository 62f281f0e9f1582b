#!/usr/bin/env bash
# Issue 9, defect 2: "peak RSS of a disk snapshot stays under 256 MiB whatever the image
# says, and the file index is bounded by the disk's size". Hostile ext4 images, each filled
# through the kernel (a loop mount: mke2fs -d and debugfs link names one by one, too slowly
# for hundreds of thousands):
#   links   300 000 names of 5 inodes (ext4 allows 65 000 links each) at the bottom of a
#           3 800-byte path: every name and its hard-link target would cost the index 7.6 KB
#           while the image pays 16 bytes (2.3 GB of index from a 128 MiB disk)
#   tiny    200 000 one-byte files kept inline in their inodes (-O inline_data)
#   deep    a 2 000-level tree of one-letter folders (paths up to 4 000 bytes), a file in each
#   long    60 000 names of 255 bytes
# (the crafted journal is journal_bomb.sh's, with the same 256 MiB assertion.)
# Each snapshot: exit 0, the disk byte-exact, the peak RSS of cairn and of its largest
# child (the confined walker) under 256 MiB (getrusage, via the shim's CAIRN_FAULT_RSS),
# the stored file index smaller than half the disk, and a truncated index says so.
# INDEX_RSS_SCALE=N divides the counts (a quick run by hand).
source "$(dirname "$0")/../lib.sh"
asan_small_quarantine

SCALE=${INDEX_RSS_SCALE:-1}
S=$T/store
M=$T/mnt
mkdir -p "$M"
must cairn init --store "$S" >/dev/null
FAULT_LIB=$BUILD/libcairn-fault.so
[ -f "$FAULT_LIB" ] || fail "no $FAULT_LIB (run make first)"

# filled NAME SIZE MKE2FS_OPTS... : an ext4 image $T/NAME.img, mounted on $M (fill it, then
# call unmounted). Where nothing can be mounted (a container without loop devices), $M is a
# plain folder that unmounted gives to mke2fs -d, and the counts are 10 times smaller
# (mke2fs -d links names one by one): the links image still overflows the budget.
LOOP=${INDEX_RSS_LOOP:-1}               # 0: the fallback, as a test of it
[ "$LOOP" = 1 ] || SCALE=$((SCALE * 10))
filled() {
    local size=$2
    IMG=$T/$1.img; shift 2
    MKFS=(mke2fs -q -F -t ext4 -b 4096 "$@")
    truncate -s "$size" "$IMG"
    if [ "$LOOP" = 1 ]; then
        "${MKFS[@]}" "$IMG" >"$T/mke2fs.log" 2>&1 || { cat "$T/mke2fs.log" >&2; fail "mke2fs $IMG"; }
        if mount -o loop "$IMG" "$M" 2>"$T/mount.err"; then
            at_exit "umount -l '$M' 2>/dev/null"
            return
        fi
        log "cannot loop-mount an image ($(head -c 200 "$T/mount.err")): images made by mke2fs -d, counts / 10"
        LOOP=0 SCALE=$((SCALE * 10))
    fi
    rm -rf "$M"; mkdir -p "$M"
}
unmounted() {
    if [ "$LOOP" = 1 ]; then sync; umount "$M" || fail "umount $M"; return; fi
    "${MKFS[@]}" -d "$M" "$IMG" >"$T/mke2fs.log" 2>&1 || { cat "$T/mke2fs.log" >&2; fail "mke2fs -d $IMG"; }
}

# measure NAME: snapshot of $T/NAME.img; asserts and logs the peak RSS and the index size.
measure() {
    local img=$T/$1.img
    rm -f "$T/rss"
    expect 0 env LD_PRELOAD="$FAULT_LIB" CAIRN_FAULT_RSS="$T/rss" "$CAIRN_BIN" snapshot --store "$S" \
        --tenant evil --sandbox "$1" --disk "$img" --json >"$T/$1.json"
    read -r self kids <"$T/rss" || fail "$1: no RSS report"
    local id; id=$(json 'j["snapshot"]' "$T/$1.json")
    local idx=0
    [ -f "$S/manifests/$id.files" ] && idx=$(size_of "$S/manifests/$id.files")
    local warn; warn=$(json 'j.get("warning") or ""' "$T/$1.json")
    log "$1: cairn $((self / 1024)) MiB, walker $((kids / 1024)) MiB peak RSS; index $((idx / 1024)) KiB for a $(( $(size_of "$img") >> 20 )) MiB disk; ${warn:-no warning}"
    echo "$1 self_kib=$self child_kib=$kids index_bytes=$idx" >>"$T/rss.all"
    assert_cmp "$self" -lt $((256 * 1024)) "$1: peak RSS (KiB) of cairn"
    assert_cmp "$kids" -lt $((256 * 1024)) "$1: peak RSS (KiB) of the walker"
    assert_cmp "$idx" -lt $(( $(size_of "$img") / 2 )) "$1: file index bytes against the disk's size"
    verify "$S" "$id" disk="$img"
    ID=$id
}

# links: 5 inodes, 60 000 names each, 15 folders of 250 bytes deep.
filled links 128M -N 4096
deep=$M
for i in $(seq 1 15); do deep=$deep/$(printf 'd%.0s' $(seq 1 250)); done
"$PY" - "$M" $((60000 / SCALE)) <<'PYEOF'
import os, sys
root, per = sys.argv[1], int(sys.argv[2])
os.chdir(root)
for i in range(15):
    os.mkdir("d" * 250); os.chdir("d" * 250)
for f in range(5):
    with open("f%d" % f, "wb") as o: o.write(os.urandom(100))
    for k in range(per): os.link("f%d" % f, "%d.%d" % (f, k))
PYEOF
unmounted
measure links
assert_grep 'truncated' "$T/links.json" "the truncated index says so"

# tiny: one-byte files kept in their inodes.
filled tiny 128M -N 262144 -I 256 -O inline_data
"$PY" - "$M" $((200000 / SCALE)) <<'PYEOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range(n // 1000 + 1):
    os.mkdir("%s/%d" % (root, d))
    for k in range(min(1000, n - d * 1000)):
        with open("%s/%d/%d" % (root, d, k), "wb") as o: o.write(b"x")
PYEOF
unmounted
measure tiny

# deep: 2 000 nested one-letter folders, a file in each.
filled deep 64M
"$PY" - "$M" $((2000 / SCALE)) <<'PYEOF'
import os, sys
os.chdir(sys.argv[1])
for i in range(int(sys.argv[2])):
    with open("f", "wb") as o: o.write(b"level %d\n" % i)
    os.mkdir("a"); os.chdir("a")
PYEOF
unmounted
measure deep

# long: 255-byte names.
filled long 64M -N 65536
"$PY" - "$M" $((60000 / SCALE)) <<'PYEOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.mkdir(root + "/n")
for k in range(n):
    name = ("%d-" % k) + "n" * 250
    with open("%s/n/%s" % (root, name[:255]), "wb"): pass
PYEOF
unmounted
measure long

fsck_ok "$S"
cp "$T/rss.all" "${RELIABILITY_OUT:-/dev/null}" 2>/dev/null || true
log "ok"
