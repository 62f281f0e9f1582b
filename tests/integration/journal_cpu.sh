#!/usr/bin/env bash
# The journal diff's CPU is bounded by the disk, not by files x pages. A 128 MiB ext4 whose
# N regular inodes each point to one shared extent leaf of 340 extents, each mapping the
# whole disk (32768 blocks) at successive file offsets: 11 million pages per file. An
# unreplayed journal transaction rewrites one free block, so every file touches a changed
# page. The diff used to test each file's every page: 2.2e10 bit tests for 2 000 files
# (CPU seconds linear in N up to the walker's 60 s limit, a core burnt per attempt); now it
# looks each extent up among the changed pages. Asserted: the snapshot succeeds, lists the
# files without their bytes (they cannot be kept), stores the disk byte-exact, and the CPU
# of cairn and its children (getrusage, not wall time: load does not inflate it) stays under
# a generous bound, scaled for sanitizers.
source "$(dirname "$0")/../lib.sh"

N=${JOURNAL_CPU_FILES:-2000}
CPU_MAX=${JOURNAL_CPU_MAX_S:-$((3 * ${CAIRN_TIME_SCALE:-1}))}
S=$T/store
must cairn init --store "$S" >/dev/null

# N empty regular files, no metadata_csum (so the inodes can be patched in place below).
"$PY" - "$T/r" "$N" <<'PYEOF'
import os, sys
d = os.path.join(sys.argv[1], "home/ubuntu/output")
os.makedirs(d)
for i in range(int(sys.argv[2])):
    open(os.path.join(d, "f%d" % i), "wb").close()
PYEOF
IMG=$T/a.img
truncate -s 128M "$IMG"
mke2fs -q -F -t ext4 -O ^metadata_csum -b 4096 -N $((N + 4096)) -d "$T/r" "$IMG" >"$T/mke2fs.log" 2>&1 \
    || { cat "$T/mke2fs.log" >&2; fail "mke2fs"; }
# Two free blocks: the shared extent leaf and the block the journal changes.
read -r LEAF CHG < <(debugfs -R "ffb 2 1000" "$IMG" 2>/dev/null | sed -E 's/.*: *//')
[ -n "$LEAF" ] && [ -n "$CHG" ] || fail "no free blocks found"
# Every regular inode now says: 340 x 32768 blocks long, all in the leaf at LEAF.
"$PY" - "$IMG" "$LEAF" <<'PYEOF' >"$T/patched" || fail "patching the inodes"
import struct, sys
f = open(sys.argv[1], "r+b")
f.seek(1024); sb = f.read(1024)
inodes_count, blocks_lo = struct.unpack_from("<II", sb, 0)
log_bs, = struct.unpack_from("<I", sb, 24)
ipg, = struct.unpack_from("<I", sb, 40)
first_ino, isz = struct.unpack_from("<IH", sb, 84)
incompat, = struct.unpack_from("<I", sb, 96)
bs = 1024 << log_bs
dsz = struct.unpack_from("<H", sb, 254)[0] if incompat & 0x80 else 32
ngroups = (inodes_count + ipg - 1) // ipg
f.seek(bs); gdt = f.read(ngroups * dsz)
leaf = int(sys.argv[2])
ext = struct.pack("<HHHHI", 0xF30A, 1, 4, 1, 0) + struct.pack("<IIHH", 0, leaf, 0, 0)
ext += bytes(60 - len(ext))
lb = struct.pack("<HHHHI", 0xF30A, 340, 340, 0, 0)
for k in range(340):
    lb += struct.pack("<IHHI", k * 32768, 32768, 0, 0)
f.seek(leaf * bs); f.write(lb + bytes(bs - len(lb)))
size = 340 * 32768 * bs
n = 0
for g in range(ngroups):
    tbl, = struct.unpack_from("<I", gdt, g * dsz + 8)
    if dsz >= 64: tbl |= struct.unpack_from("<I", gdt, g * dsz + 0x28)[0] << 32
    f.seek(tbl * bs); t = bytearray(f.read(ipg * isz))
    for i in range(ipg):
        o = i * isz
        mode, = struct.unpack_from("<H", t, o)
        if mode & 0xF000 != 0x8000 or g * ipg + i + 1 < first_ino: continue   # not the journal
        struct.pack_into("<I", t, o + 4, size & 0xFFFFFFFF)
        struct.pack_into("<I", t, o + 0x6C, size >> 32)
        struct.pack_into("<I", t, o + 0x20, struct.unpack_from("<I", t, o + 0x20)[0] | 0x80000)
        t[o + 0x28:o + 0x28 + 60] = ext
        n += 1
    f.seek(tbl * bs); f.write(t)
print(n)
PYEOF
read -r patched <"$T/patched"
assert_cmp "$patched" -ge "$N" "inodes patched to claim the whole disk"
# An unreplayed transaction rewriting a free block: a changed page every file touches.
head -c 4096 /dev/urandom >"$T/jdata"
printf 'jo\njw -b %s %s\njc\n' "$CHG" "$T/jdata" | debugfs -w -f - "$IMG" >"$T/jw.log" 2>&1
dumpe2fs -h "$IMG" 2>/dev/null | grep -q needs_recovery || fail "the crafted journal is not pending: $(tail -3 "$T/jw.log")"

# cpu CMD...: runs CMD (output in $T/out, $T/err), prints its exit status and the user+sys
# CPU seconds of it and its descendants (the confined walker among them).
"$PY" - "$T/out" "$T/err" "$CAIRN_BIN" snapshot --store "$S" --tenant evil --sandbox cpu --disk "$IMG" --json \
    >"$T/cpu" <<'PYEOF'
import resource, subprocess, sys
out, err = open(sys.argv[1], "wb"), open(sys.argv[2], "wb")
rc = subprocess.call(sys.argv[3:], stdout=out, stderr=err)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(rc, "%.2f" % (r.ru_utime + r.ru_stime))
PYEOF
read -r rc cpu <"$T/cpu"
log "$N inodes each claiming 340 times the whole 128 MiB disk, a changed block: exit $rc, CPU ${cpu} s (load $(cut -d' ' -f1 /proc/loadavg))"
[ "$rc" = 0 ] || fail "snapshot of the crafted image: exit $rc: $(tail -3 "$T/err")"
"$PY" -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$cpu" "$CPU_MAX" \
    || fail "CPU of the snapshot: ${cpu} s, bound ${CPU_MAX} s (files x pages again?)"
assert_grep 'listed without their bytes' "$T/out" "the files that cannot be kept are named in the warning"
id=$(json 'j["snapshot"]' "$T/out")
verify "$S" "$id" disk="$IMG"
log "ok"
