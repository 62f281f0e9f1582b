#!/usr/bin/env bash
# A full disk fails the operation cleanly: exit 1 with a message about space,
# the store stays consistent, earlier snapshots restore, and once space is back
# the store keeps working.  The store lives on a 40 MiB filesystem.
. "$(dirname "$0")/../lib.sh"

M=$T/mnt
mkdir -p "$M"
at_exit 'umount -l "$M" 2>/dev/null'
# ENOSPC_FS=ext4 forces the fallback (a loop-mounted ext4 image).
if [ "${ENOSPC_FS:-tmpfs}" = tmpfs ] && mount -t tmpfs -o size=40m cairn-enospc "$M" 2>"$T/mount.err"; then
    fs=tmpfs
else
    : >>"$T/mount.err"
    truncate -s 40M "$T/fs.img"
    mke2fs -q -t ext4 -F "$T/fs.img" >>"$T/mount.err" 2>&1 \
        && mount -o loop "$T/fs.img" "$M" 2>>"$T/mount.err" \
        || skip "cannot mount a small filesystem: $(tr '\n' ' ' <"$T/mount.err")"
    fs=ext4-loop
fi
log "store on a 40 MiB $fs"

S=$M/store
must cairn init --store "$S" >/dev/null
gen "$T/mem" $((4 << 20)) 1 30
gen "$T/vm" 7000 2
id0=$(snap "$S" acme box memory="$T/mem" vmstate="$T/vm")

# 80 MiB of incompressible pages cannot fit.
gen "$T/big" $((80 << 20)) 3
expect 1 cairn snapshot --store "$S" --tenant acme --sandbox huge --memory "$T/big" >/dev/null
log "ingest on a full disk: $(cat "$T/err")"
assert_grep 'space|ENOSPC|full' "$T/err" "the message says the disk is full"
fsck_ok "$S"
assert_eq "$(count_snapshots "$S" huge)" 0 "snapshots of the failed ingest"
assert_eq "$(count_snapshots "$S" box)" 1 "snapshots of the earlier sandbox"
verify "$S" "$id0" memory="$T/mem" vmstate="$T/vm"

# The failed ingest gave its space back: a small snapshot fits again.
gen "$T/mem2" $((2 << 20)) 4 30
id1=$(snap "$S" acme box2 memory="$T/mem2")
verify "$S" "$id1" memory="$T/mem2"

# Restore onto a full filesystem: fails, and no final file with wrong bytes.
fill=$M/filler
dd if=/dev/zero of="$fill" bs=1M status=none 2>/dev/null || true
rc=0
cairn restore --store "$S" --snapshot "$id0" --out "$M/out" >/dev/null 2>"$T/err" || rc=$?
assert_eq "$rc" 1 "restore onto a full disk: exit status"
log "restore onto a full disk: $(cat "$T/err")"
assert_grep 'space|ENOSPC|full' "$T/err" "restore on a full disk says so"
for f in memory vmstate; do
    src=$T/mem; [ $f = vmstate ] && src=$T/vm
    [ ! -e "$M/out/$f" ] || cmp -s "$src" "$M/out/$f" || fail "a failed restore left a wrong $f"
done
rm -f "$fill"
rm -rf "$M/out"

fsck_ok "$S" --verify-data
verify "$S" "$id0" memory="$T/mem" vmstate="$T/vm"
verify "$S" "$id1" memory="$T/mem2"
log "ok"
