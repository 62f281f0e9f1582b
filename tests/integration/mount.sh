#!/usr/bin/env bash
# `cairn mount`: the FUSE view gives each snapshot's files byte-exact (as a restore does),
# through sandboxes/S/latest too; a MAP_PRIVATE mapping reads the snapshot and keeps its
# writes private; gc keeps a snapshot while a file of it is open; a corrupt pack reads as
# EIO, never as wrong bytes; fusermount3 -u ends the server cleanly.
. "$(dirname "$0")/../lib.sh"

[ -e /dev/fuse ] || skip "no /dev/fuse"
command -v fusermount3 >/dev/null || skip "no fusermount3 (apt-get install fuse3)"

C=$(std_corpus)
S=$T/store
M=$T/mnt
mkdir -p "$M"
must cairn init --store "$S" >/dev/null
id1=$(snap "$S" acme box1 $(set_of "$C" sb01 1))
must cairn restore --store "$S" --snapshot "$id1" --out "$T/r1" >/dev/null

# mount_fg: the server in the foreground (so the test knows its pid), until mounted.
mount_fg() {
    timeout -k 5 300 "$CAIRN_BIN" mount --store "$S" --foreground "$M" 2>"$T/mount.err" &
    mpid=$!
    at_exit "fusermount3 -u '$M' 2>/dev/null; kill $mpid 2>/dev/null"
    for _ in $(seq 100); do
        grep -q " $M fuse" /proc/mounts && return 0
        sleep 0.05
    done
    cat "$T/mount.err" >&2
    fail "cairn mount did not mount $M"
}
unmount() {
    fusermount3 -u "$M" || fail "fusermount3 -u failed"
    local rc=0
    wait "$mpid" || rc=$?
    [ "$rc" = 0 ] || { cat "$T/mount.err" >&2; fail "cairn mount exited $rc after fusermount3 -u"; }
    ! grep -q " $M fuse" /proc/mounts || fail "still mounted"
}

mount_fg
[ -d "$M/snapshots/$id1" ] || fail "no snapshots/$id1 in the view"
ls "$M/snapshots" | grep -qx "$id1" || fail "snapshots/ does not list $id1"
ls "$M/sandboxes" | grep -qx box1 || fail "sandboxes/ does not list box1"
assert_eq "$(ls "$M/snapshots/$id1" | tr '\n' ' ')" "disk memory vmstate " "a snapshot's files"
for f in memory vmstate disk; do
    cmp "$M/snapshots/$id1/$f" "$T/r1/$f" || fail "$f through the mount differs from a restore"
    cmp "$M/sandboxes/box1/latest/$f" "$T/r1/$f" || fail "latest/$f differs from a restore"
done
assert_eq "$(readlink "$M/sandboxes/box1/latest")" "../../snapshots/$id1" "latest points at the newest"
[ ! -e "$M/snapshots/00000000000000000000" ] || fail "a snapshot that does not exist"
if (echo x >"$M/snapshots/$id1/memory") 2>/dev/null; then fail "the view took a write"; fi

# MAP_PRIVATE (what Firecracker's File backend does): reads are the snapshot's bytes,
# writes stay in the process.
"$PY" - "$M/snapshots/$id1/memory" "$T/r1/memory" <<'EOF' || fail "MAP_PRIVATE mapping"
import mmap, random, sys
f = open(sys.argv[1], "rb")
ref = open(sys.argv[2], "rb").read()
m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
pages = list(range(len(ref) // 4096))
random.Random(3).shuffle(pages)
for p in pages[:4000]:
    o = p * 4096
    assert m[o:o + 4096] == ref[o:o + 4096], "page %d differs" % p
m[0:4096] = b"\xab" * 4096
assert m[0:4096] == b"\xab" * 4096
m.close()
assert open(sys.argv[1], "rb").read(4096) == ref[:4096], "a private write reached the file"
EOF

# A lease: while a file of id1 is open, gc keeps id1 though a newer snapshot supersedes it.
id2=$(snap "$S" acme box1 $(set_of "$C" sb01 2))
exec 7<"$M/snapshots/$id1/memory"
must cairn gc --store "$S" --json >"$T/gc.json"
assert_json 'j["kept_leased"] == 1 and j["dropped_snapshots"] == 0' "$T/gc.json" "gc keeps an open snapshot"
cmp <(cat <&7) "$T/r1/memory" || fail "reading id1 after gc"
exec 7<&-
# The view's index is reopened once older than 1 s and the kernel caches entries for 1 s:
# a new snapshot shows within ~2 s (read at once on a fast machine, it was still id1).
for _ in $(seq 50); do [ "$(readlink "$M/sandboxes/box1/latest")" = "../../snapshots/$id2" ] && break; sleep 0.1; done
assert_eq "$(readlink "$M/sandboxes/box1/latest")" "../../snapshots/$id2" "latest moves to the new snapshot"
# The kernel sends the release asynchronously: give it a moment.
for _ in $(seq 50); do
    must cairn gc --store "$S" --json >"$T/gc.json"
    [ "$(json 'j["dropped_snapshots"]' "$T/gc.json")" = 1 ] && break
    sleep 0.1
done
assert_json 'j["dropped_snapshots"] == 1' "$T/gc.json" "gc drops id1 once no file of it is open"
# Names may stay in the kernel's cache for its 1 s entry timeout.
for _ in $(seq 30); do [ -e "$M/snapshots/$id1" ] || break; sleep 0.1; done
[ ! -e "$M/snapshots/$id1" ] || fail "a dropped snapshot is still in the view"
unmount
fsck_ok "$S"

# A corrupt pack: reads of the damaged pages fail with EIO (a restore fails as well).
for p in "$S"/packs/*.pack; do damage "$p" 16384 0x55; done
mount_fg
if cat "$M/snapshots/$id2/memory" >/dev/null 2>"$T/cat.err"; then fail "a corrupt snapshot read without error"; fi
assert_grep "Input/output error" "$T/cat.err" "EIO for a page that fails verification"
assert_grep "corrupt|checksum|damaged|zstd" "$T/mount.err" "the server says why"
unmount
