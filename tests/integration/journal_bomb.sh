#!/usr/bin/env bash
# Issue 9, defect 2: a crafted journal must not blow up memory or the store. A 128 MiB ext4
# disk (block-mapped, so debugfs can aim block pointers) gets one real 4 MiB file and N
# files whose block pointers all claim its blocks, then an unreplayed journal transaction
# rewriting that region (debugfs jo/jw/jc). Ingest replays the journal on a private copy;
# the region used to be copied into the file index once per file, in the parent: 3.6 GiB
# RSS and 1.2 GiB of index. Now: peak RSS of the snapshot (the process and its children)
# under 256 MiB, the file index smaller than the disk, the snapshot stored byte-exact, and
# the warning names the crafted sharing. A second image has files that each claim their
# own changed block but say they are 4 MiB long: the bytes kept stay within a budget.
source "$(dirname "$0")/../lib.sh"

asan_small_quarantine
N=${JOURNAL_BOMB_FILES:-400}
S=$T/store
must cairn init --store "$S" >/dev/null

# peak_rss CMD...: runs CMD (output in $T/out, $T/err), prints its exit status and the
# largest RSS of it and its descendants, in KiB (getrusage of children); $T/rss: cairn's
# own peak and its largest child's (the walker or e2fsck), from the fault shim.
FAULT_LIB=$BUILD/libcairn-fault.so
[ -f "$FAULT_LIB" ] || fail "no $FAULT_LIB (run make first)"
peak_rss() {
    LD_PRELOAD="$FAULT_LIB" CAIRN_FAULT_RSS="$T/rss" "$PY" - "$T/out" "$T/err" "$@" <<'PYEOF'
import resource, subprocess, sys
out, err = open(sys.argv[1], "wb"), open(sys.argv[2], "wb")
rc = subprocess.call(sys.argv[3:], stdout=out, stderr=err)
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PYEOF
}

# make_base IMG: a 128 MiB block-mapped ext4 with /home/ubuntu/output/big.bin (4 MiB);
# sets d0 (big.bin's first direct block), ind (its indirect block), last (its last block).
make_base() {
    mkdir -p "$T/r/home/ubuntu/output"
    head -c 4194304 /dev/urandom >"$T/r/home/ubuntu/output/big.bin"
    mke2fs -q -F -t ext4 -O ^extent,^64bit -b 4096 -d "$T/r" "$1" 128M >"$T/mke2fs.log" 2>&1 \
        || { cat "$T/mke2fs.log" >&2; fail "mke2fs"; }
    local b
    b=$(debugfs -R "stat /home/ubuntu/output/big.bin" "$1" 2>/dev/null | sed -n '/^BLOCKS:/{n;p}')
    # (0-11):D-D+11, (IND):I, (12-1023):X-Y
    d0=$(sed -E 's/^\(0-11\):([0-9]+)-.*/\1/' <<<"$b")
    ind=$(sed -E 's/.*\(IND\):([0-9]+).*/\1/' <<<"$b")
    last=$(sed -E 's/.*\(12-1023\):[0-9]+-([0-9]+).*/\1/' <<<"$b")
    [ -n "$d0" ] && [ -n "$ind" ] && [ -n "$last" ] || fail "unexpected block map: $b"
}
# journal IMG FIRST LAST KEEP: an unreplayed transaction rewriting blocks FIRST..LAST with
# random bytes, except block KEEP (an indirect block) which keeps its bytes.
journal() {
    "$PY" - "$1" "$2" "$3" "$4" "$T/jdata" <<'PYEOF'
import os, sys
img, first, last, keep, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(img, "rb") as f:
    f.seek(first * 4096)
    d = bytearray(f.read((last - first + 1) * 4096))
for b in range(first, last + 1):
    if b != keep:
        d[(b - first) * 4096:(b - first + 1) * 4096] = os.urandom(4096)
open(out, "wb").write(d)
PYEOF
    printf 'jo\njw -b %s %s\njc\n' "$(seq -s, "$2" "$3")" "$T/jdata" | debugfs -w -f - "$1" >"$T/jw.log" 2>&1
    dumpe2fs -h "$1" 2>/dev/null | grep -q needs_recovery || fail "the crafted journal is not pending: $(tail -3 "$T/jw.log")"
}

# snapshot_crafted IMG SANDBOX WHAT: IMG (from make_base) gets the debugfs commands in
# $T/cmds and the journal over big.bin's blocks, then is snapshotted as SANDBOX: it must
# succeed with a peak RSS under 256 MiB. WHAT says what IMG holds; --json output in $T/out.
snapshot_crafted() {
    local img=$1 sandbox=$2 what=$3 rc rss self kids
    debugfs -w -f "$T/cmds" "$img" >/dev/null 2>&1
    journal "$img" "$d0" "$last" "$ind"
    read -r rc rss < <(peak_rss "$CAIRN_BIN" snapshot --store "$S" --tenant evil --sandbox "$sandbox" --disk "$img" --json)
    read -r self kids <"$T/rss" || fail "no RSS report from the shim"
    log "crafted journal, $what: exit $rc, peak RSS $((rss / 1024)) MiB (cairn $((self / 1024)), its largest child $((kids / 1024)))"
    [ "$rc" = 0 ] || fail "snapshot of the crafted image ($what): exit $rc: $(tail -3 "$T/err")"
    assert_cmp "$rss" -lt $((256 * 1024)) "peak RSS (KiB) of the snapshot of a crafted journal ($what)"
}

# ---- 1: N files claiming the real file's blocks, a journal rewriting them.
make_base "$T/a.img"
for i in $(seq 1 "$N"); do
    echo "write /dev/null /home/ubuntu/output/f$i"
    for k in $(seq 0 11); do echo "sif /home/ubuntu/output/f$i block[$k] $((d0 + k))"; done
    echo "sif /home/ubuntu/output/f$i block[IND] $ind"
    echo "sif /home/ubuntu/output/f$i size 4194304"
done >"$T/cmds"
snapshot_crafted "$T/a.img" bomb "$N files sharing a 4 MiB region"
cp "$T/out" "$T/bomb.json"
assert_grep 'crafted|share' "$T/bomb.json" "the warning names the crafted sharing"
id=$(json 'j["snapshot"]' "$T/bomb.json")
fidx=$(size_of "$S/manifests/$id.files")
log "file index: $fidx bytes"
assert_cmp "$fidx" -lt $((16 << 20)) "file index bytes (the region is kept once, not once per file)"
verify "$S" "$id" disk="$T/a.img"
# The one file that owns the region reads as the journal left it; the sharers hold nothing.
must cairn ls --store "$S" --snapshot "$id" /home/ubuntu/output --json --actor t >"$T/ls.json"
assert_json 'sum(1 for e in j["entries"] if e["size"] == 4194304) == 1' "$T/ls.json" "one file keeps its bytes"
owner=$(json '[e["path"] for e in j["entries"] if e["size"] == 4194304][0]' "$T/ls.json")
must cairn cat --store "$S" --snapshot "$id" --actor t "$owner" >"$T/owner"
debugfs -R "jr" -w "$T/a.img" >/dev/null 2>&1 || true     # replay in place to compare
debugfs -R "cat /home/ubuntu/output/big.bin" "$T/a.img" 2>/dev/null >"$T/replayed"
cmp -s "$T/owner" "$T/replayed" || fail "the owner's bytes are not the replayed ones"

# ---- 2: files that each claim their own changed block but say they are 4 MiB long.
make_base "$T/b.img"
M=$(( N < 1000 ? N : 1000 ))
for i in $(seq 1 "$M"); do
    echo "write /dev/null /home/ubuntu/output/a$i"
    echo "sif /home/ubuntu/output/a$i block[0] $((ind + 1 + i))"
    echo "sif /home/ubuntu/output/a$i size 4194304"
done >"$T/cmds"
snapshot_crafted "$T/b.img" budget "$M sparse 4 MiB files with a changed block each"
id2=$(json 'j["snapshot"]' "$T/out")
assert_grep 'listed without their bytes' "$T/out" "the files past the budget are named in the warning"
fidx=$(size_of "$S/manifests/$id2.files")
log "file index: $fidx bytes"
assert_cmp "$fidx" -lt $((128 << 20)) "file index bytes stay under the disk's size"
verify "$S" "$id2" disk="$T/b.img"
fsck_ok "$S"
log "ok"
