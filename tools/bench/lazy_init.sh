#!/bin/busybox sh
# /init of tools/bench_lazy.sh's guest (busybox + lazy_fill): fills cairn.fill= MiB of
# memory, says CAIRN-READY, then a counter that lives in this shell's memory ticks on the
# console every 50 ms (finer than the e2e guest's 200 ms: the tick is the bench's clock).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
fill=0
for a in $(cat /proc/cmdline); do
    case $a in cairn.fill=*) fill=${a#cairn.fill=} ;; esac
done
nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "CAIRN-BOOT $nonce"
/bin/lazy_fill "$fill" &
n=0
while :; do
    n=$((n + 1))
    echo "TICK $n $nonce"
    sleep 0.05
done
