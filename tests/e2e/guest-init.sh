#!/bin/busybox sh
# /init of the e2e test's guests (busybox only).  cairn.mode= on the kernel
# command line picks what the guest does:
#   run   the sandbox: writes artifacts, syncs, lists its files, writes one
#         more artifact it only fsyncs (CAIRN-LATE), then a counter that
#         lives only in this shell's memory ticks on the console forever.  A
#         guest woken from a snapshot keeps counting; a rebooted one would
#         print CAIRN-BOOT and start again at 1.
#   list  the rebuilt VM: lists the files and powers off.
# The console lines the test reads: CAIRN-BOOT, FILE, BASE, CAIRN-READY,
# CAIRN-LATE, TICK, CAIRN-DONE, CAIRN-FAIL.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

die() { echo "CAIRN-FAIL $*"; sync; reboot -f; }

# crc32c-intel may refuse the CPU; crc32c_generic then serves ext4.
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" 2>/dev/null; done

mode=
for a in $(cat /proc/cmdline); do
    case $a in cairn.mode=*) mode=${a#cairn.mode=} ;; esac
done

i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1)); [ $i -lt 100 ] || die "no /dev/vda"; sleep 0.1
done
# The sandbox mounts with nodelalloc: with ext4's default delayed allocation a
# file younger than the 30 s writeback has no blocks on the disk at all (size 0
# there, its bytes only in the page cache), which no disk snapshot can hold.
# Without it, data=ordered puts a file's data on the disk by the 5 s commit that
# writes its metadata to the journal.
opts=
[ "$mode" = run ] && opts=nodelalloc
mount -t ext4 ${opts:+-o $opts} /dev/vda /mnt || die "cannot mount /dev/vda"

# FILE mode uid:gid size mtime sha256 path, for every file under /home/ubuntu
# (path last: it may hold spaces).
file_line() {
    set -- "$1" $(sha256sum "$1")
    echo "FILE $(stat -c '%a %u:%g %s %Y' "$1") $2 ${1#./}"
}
list() {
    cd /mnt/home/ubuntu || die "no /home/ubuntu"
    find . -type f | sort | while read -r f; do file_line "$f"; done
    cd /
    set -- $(sha256sum /mnt/etc/cairn-template 2>/dev/null || echo none)
    echo "BASE $1"
}

case $mode in
run)
    nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "CAIRN-BOOT $nonce"
    # What the agent produces inside the VM, beside the files it started with.
    out=/mnt/home/ubuntu/output
    echo "report of run $nonce" >"$out/report.txt" || die "cannot write $out/report.txt"
    dd if=/dev/urandom of="$out/model.bin" bs=4096 count=48 2>/dev/null || die "dd"
    chown 1000:1000 "$out/report.txt" "$out/model.bin"
    mkdir -p /mnt/home/ubuntu/project/node_modules/.cache
    echo "build cache $nonce" >/mnt/home/ubuntu/project/node_modules/.cache/run.json
    # sync writes the metadata to its home blocks, as a guest agent would before
    # a hibernation (late.txt below gets no sync of the filesystem).
    sync
    list
    echo CAIRN-READY
    # An artifact written seconds before the hibernation, with no sync of the
    # filesystem: its data is in its blocks and its metadata only in the journal
    # until writeback checkpoints it (30 s). The fsync of the file alone
    # (busybox `sync FILE`) is the journal commit ext4 would make within 5 s; made
    # here, it does not depend on how soon a guest under a loaded TCG gets to it.
    { echo "late artifact"; seq 1 1500; } >"$out/late.txt" || die "cannot write $out/late.txt"
    chown 1000:1000 "$out/late.txt"
    sync "$out/late.txt" || die "cannot fsync $out/late.txt"
    (cd /mnt/home/ubuntu && file_line ./output/late.txt)
    echo CAIRN-LATE
    n=0
    while :; do
        n=$((n + 1))
        echo "TICK $n $nonce"
        sleep 0.2
    done
    ;;
list)
    list
    umount /mnt
    echo CAIRN-DONE
    reboot -f
    ;;
*)  die "unknown cairn.mode '$mode'" ;;
esac
