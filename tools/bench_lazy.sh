#!/usr/bin/env bash
# Lazy wake vs full restore on real VMs, and the page server's fault rate (docs/lazy-wake.md).
#   tools/bench_lazy.sh             (BUILD=build; BENCH_LAZY_SIZES="256M 1G 4G")
#
# wake: for each guest size, a QEMU microVM (TCG, the e2e tests' kernel, cached) boots a
#   busybox guest that fills half its memory with distinct pages (tools/bench/lazy_fill.c:
#   a sandbox's memory is mostly in use) and ticks a counter every 50 ms; it is
#   snapshotted Firecracker-style (raw memory file, device state, disk) into a fresh store,
#   its files deleted, and the page cache dropped. Then, from the wake request until the
#   guest's next tick (tools/bench/lazy_vm.py):
#     full   `cairn restore` of memory, vmstate and disk, then QEMU resumes from the files;
#     lazy   QEMU resumes from `cairn mount`'s view (running before the request, as an
#            operator runs it): memory mapped private (share=off), the disk opened with
#            snapshot=on (QEMU's copy-on-write overlay in a temp file, the FUSE file read
#            only), vmstate read through the view; with the bytes the mount read.
# rate: first the machine's ceiling (build/cairn-uffd-ceiling: a page server that only
#   answers faults from a ready buffer), then `cairn uffd-serve` against build/cairn-fc-uffd
#   (Firecracker's side of the UFFD protocol, 4 touching threads) on 256 MiB of data pages
#   and on a 1 GiB corpus memory (70% zero pages), every page touched: in order, once
#   cold (each group decompressed on its first page) and once warm (every group in the
#   server's cache), and in random order with a 64 MiB cache (cold) and the default
#   one; with and without fault-around. Faults per second (faults the touching threads
#   took) and pages per second, the server's CPU time, the load average. BENCH_LAZY_RATE_RUNS (default 3)
#   runs of each, every run printed (this machine is shared: say the load).
#
# Each wake is measured BENCH_LAZY_RUNS times (default 2), the best kept.
# Needs root (userfaultfd, drop_caches, FUSE); the wake part needs qemu-system-x86_64 and
# /dev/fuse. Each part says why it is skipped. BENCH_LAZY_PARTS="wake rate" picks parts.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$REPO/build}
case $BUILD in /*) ;; *) BUILD=$REPO/$BUILD ;; esac
B=$BUILD/cairn FC=$BUILD/cairn-fc-uffd CEIL=$BUILD/cairn-uffd-ceiling
sizes=(${BENCH_LAZY_SIZES:-256M 1G 4G})
parts=${BENCH_LAZY_PARTS:-wake rate}
runs=${BENCH_LAZY_RUNS:-2}
rate_runs=${BENCH_LAZY_RATE_RUNS:-3}
W=$(mktemp -d "${TMPDIR:-/var/tmp}/cairn-bench-lazy.XXXXXX")
mpid=
cleanup() {
    [ -z "$mpid" ] || { fusermount3 -u "$W/mnt" 2>/dev/null || true; kill "$mpid" 2>/dev/null || true; wait "$mpid" 2>/dev/null || true; }
    [ "$(type -t vm_stop_all)" = function ] && vm_stop_all
    rm -rf "$W"
}
trap cleanup EXIT
say() { echo "bench_lazy: $*" >&2; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

if [ "$(id -u)" != 0 ]; then
    say "skipped: needs root (userfaultfd, drop_caches, FUSE)"; exit 0
fi

wake_skip=
command -v qemu-system-x86_64 >/dev/null || wake_skip="no qemu-system-x86_64 (tools/deps.sh vm)"
[ -n "$wake_skip" ] || [ -e /dev/fuse ] && command -v fusermount3 >/dev/null || wake_skip=${wake_skip:-"no /dev/fuse or fusermount3"}
command -v cc >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || wake_skip=${wake_skip:-"cannot build the static guest filler (cc, libc6-dev)"}

# qemu_cmd NAME MEM MEMFILE SHARE DRIVE APPEND [ARGS]: vm.sh's machine, with the drive's
# options given (snapshot=on for the lazy disk).
qemu_cmd() {
    local name=$1 mem=$2 memfile=$3 share=$4 drive=$5 append=$6; shift 6
    echo qemu-system-x86_64 -M microvm,acpi=on,memory-backend=mem -accel tcg -cpu max -smp 1 -m "$mem" \
        -object "memory-backend-file,id=mem,size=$mem,mem-path=$memfile,share=$share" \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$VM_KERNEL" -initrd "$cache/initrd" -append "'$VM_CMDLINE $append'" \
        -chardev "file,id=ser0,path=$VM_RUN/$name.serial" -serial chardev:ser0 \
        -qmp "unix:$VM_RUN/$name.qmp,server=on,wait=off" \
        -drive "id=d0,$drive,format=raw,if=none" -device virtio-blk-device,drive=d0 "$@"
}

# boot_snapshot SIZE: boots the guest, lets it fill its memory, snapshots it (vm.sh's
# vm_snapshot without its copies of 4 GiB) into $snapdir; kept in the VM cache, keyed by
# the guest's files, so a rerun skips the boot (a 4 GiB fill takes a minute under TCG).
boot_snapshot() {
    local size=$1 mib fill
    mib=$(numfmt --from=iec "$size"); mib=$((mib >> 20)); fill=$((mib / 2))
    snapdir=$cache/$size
    [ -s "$snapdir/nonce" ] && return 0
    rm -rf "$snapdir"; mkdir -p "$snapdir"
    truncate -s 64M "$snapdir/disk.img"; mkfs.ext4 -q -F "$snapdir/disk.img"
    VM_MEM=$size
    vm_start boot "$cache/initrd" "$snapdir/disk.img" "$snapdir/mem.raw" "cairn.fill=$fill"
    vm_wait boot '^FILLED ' 600
    vm_qmp boot stop \
        migrate-set-capabilities '{"capabilities":[{"capability":"x-ignore-shared","state":true}]}' \
        migrate "{\"uri\":\"exec:cat > $snapdir/vmstate\"}" wait-migrate 60 quit >/dev/null
    vm_wait_exit boot 60
    echo "$fill" >"$snapdir/fill"
    tr -d '\r' <"$VM_RUN/boot.serial" | grep -c '^TICK ' >"$snapdir/before"
    tr -d '\r' <"$VM_RUN/boot.serial" | sed -n 's/^CAIRN-BOOT //p' >"$snapdir/nonce"
}

wake_one() {   # wake_one SIZE
    local size=$1 fill before nonce id t0
    boot_snapshot "$size"
    fill=$(cat "$snapdir/fill") before=$(cat "$snapdir/before") nonce=$(cat "$snapdir/nonce")
    rm -rf "$W/s" "$W/r" "$W/full.json" "$W/lazy.json"
    "$B" init --store "$W/s" >/dev/null
    id=$("$B" snapshot --store "$W/s" --tenant t --sandbox b --memory "$snapdir/mem.raw" \
         --vmstate "$snapdir/vmstate" --disk "$snapdir/disk.img" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')

    local run v
    for run in $(seq "$runs"); do
        drop_caches
        t0=$EPOCHREALTIME
        "$B" restore --store "$W/s" --snapshot "$id" --out "$W/r" >/dev/null 2>&1
        eval "python3 '$REPO/tools/bench/lazy_vm.py' --t0 $t0 --qmp '$VM_RUN/full.qmp' --serial '$VM_RUN/full.serial' \
            --vmstate '$W/r/vmstate' --after $before --nonce $nonce -- \
            $(qemu_cmd full "$size" "$W/r/memory" on "file=$W/r/disk" '' -incoming defer)" >>"$W/full.json"
        rm -rf "$W/r"

        # A fresh mount each run: its group cache must not carry over.
        mkdir -p "$W/mnt"
        "$B" mount --store "$W/s" --foreground --open-rw "$W/mnt" 2>"$W/mount.err" &
        mpid=$!
        for _ in $(seq 200); do grep -q " $W/mnt fuse" /proc/mounts && break; sleep 0.05; done
        grep -q " $W/mnt fuse" /proc/mounts || { cat "$W/mount.err" >&2; say "cairn mount did not mount"; exit 1; }
        v=$W/mnt/snapshots/$id
        drop_caches
        t0=$EPOCHREALTIME
        eval "python3 '$REPO/tools/bench/lazy_vm.py' --t0 $t0 --qmp '$VM_RUN/lazy.qmp' --serial '$VM_RUN/lazy.serial' \
            --vmstate '$v/vmstate' --after $before --nonce $nonce --io-pid $mpid -- \
            $(qemu_cmd lazy "$size" "$v/memory" off "file=$v/disk,snapshot=on" '' -incoming defer)" >>"$W/lazy.json"
        fusermount3 -u "$W/mnt"
        wait "$mpid"; mpid=
    done
    python3 - "$W/full.json" "$W/lazy.json" "$size" "$fill" "$(du -sb "$W/s" | cut -f1)" <<'PY' | tee -a "$W/wake.txt"
import json, sys
# best of the runs (this machine is shared: the spread is other jobs)
f = min((json.loads(x) for x in open(sys.argv[1])), key=lambda r: r["tick"])
l = min((json.loads(x) for x in open(sys.argv[2])), key=lambda r: r["tick"])
print("%-5s (%5s MiB filled, store %6.0f MiB)  full restore + resume: running %6.3f s, tick %6.3f s"
      "   lazy: qemu up %5.3f s, running %6.3f s, tick %6.3f s, %6.1f MiB read, mount cpu %4.2f s   lazy/full %.2f"
      % (sys.argv[3], sys.argv[4], int(sys.argv[5]) / 2**20, f["running"], f["tick"],
         l["qmp"], l["running"], l["tick"], l["rchar"] / 2**20, l["cpu"], l["tick"] / f["tick"]))
PY
}

if [[ " $parts " == *" wake "* ]]; then
    if [ -n "$wake_skip" ]; then
        say "wake part skipped: $wake_skip"
    else
        . "$REPO/tools/vm/vm.sh"
        vm_die() { say "$*"; exit 1; }
        vm_setup "$W/run" 256M
        key=$(cat "$REPO/tools/bench/lazy_fill.c" "$REPO/tools/bench/lazy_init.sh" /bin/busybox |
              { sha256sum; echo "$VM_KDIR"; } | sha256sum | cut -c1-12)
        cache=${CAIRN_VM_CACHE:-/var/tmp/cairn-vm-cache}/bench-lazy-$key
        if [ ! -s "$cache/initrd" ]; then
            rm -rf "${CAIRN_VM_CACHE:-/var/tmp/cairn-vm-cache}"/bench-lazy-*   # older guests
            mkdir -p "$cache"
            root=$W/initramfs
            mkdir -p "$root"/{bin,dev,proc,tmp}
            cc -static -O2 -o "$root/bin/lazy_fill" "$REPO/tools/bench/lazy_fill.c"
            cp /bin/busybox "$root/bin/"
            cp "$REPO/tools/bench/lazy_init.sh" "$root/init"
            chmod 755 "$root/init"
            mknod -m 600 "$root/dev/console" c 5 1
            (cd "$root" && find . | cpio -o -H newc --quiet) >"$cache/initrd.tmp"
            mv "$cache/initrd.tmp" "$cache/initrd"
            rm -rf "$root"
        fi
        for size in "${sizes[@]}"; do wake_one "$size"; done
        python3 - "$W/wake.txt" <<'PY'
import re, sys
rows = [l for l in open(sys.argv[1])]
ticks = [(l.split()[0], float(re.search(r"lazy: qemu up +[\d.]+ s, running +[\d.]+ s, tick +([\d.]+)", l).group(1)),
          float(re.search(r"resume: running +[\d.]+ s, tick +([\d.]+)", l).group(1))) for l in rows]
if len(ticks) > 1:
    print("lazy wake, largest/smallest guest: %.2fx (target <= 1.5x); at %s lazy/full = %.2f (target <= 0.25)"
          % (ticks[-1][1] / ticks[0][1], ticks[-1][0], ticks[-1][1] / ticks[-1][2]))
PY
    fi
fi

if [[ " $parts " == *" rate "* ]]; then
    [ -x "$FC" ] || { say "no $FC (make)"; exit 1; }
    [ -x "$CEIL" ] || { say "no $CEIL (make $CEIL)"; exit 1; }
    la() { cut -d' ' -f1 /proc/loadavg; }
    # The ceiling: a page server that does nothing but answer (a ready buffer, no lookup,
    # no decompression, no hash): what the kernel's fault and wake-up round trip allows
    # on this machine, with 1, 2 and 4 touching threads.
    for cfg in "1 1" "2 1" "4 1" "4 2" "4 1 --interleave" "1 1 --around 16"; do
        read -r nt ns extra <<<"$cfg"
        for _ in $(seq "$rate_runs"); do
            "$CEIL" --touchers "$nt" --servers "$ns" $extra | sed 's/^/ceiling   /'
        done
    done
    rm -rf "$W/c" "$W/s"
    "$BUILD/cairn-corpus" --out "$W/c" --sandboxes 1 --snapshots 1 --memory-size 1G --no-disk \
        --seed 3 >/dev/null
    "$B" init --store "$W/s" >/dev/null
    id=$("$B" snapshot --store "$W/s" --tenant t --sandbox b --memory "$W/c/sb01/1/memory" --json |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')
    # data: 256 MiB in which every page is data (2 KiB distinct + 2 KiB zeros), so every
    # fault copies a page out of the cache (the corpus's memory is 70% zero pages).
    python3 -c 'import os, sys
with open(sys.argv[1], "wb") as f:
    for _ in range(65536): f.write(os.urandom(2048) + bytes(2048))' "$W/data.mem"
    did=$("$B" snapshot --store "$W/s" --tenant t --sandbox d --memory "$W/data.mem" --json |
          python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')
    # warm: the client registers its memory twice (two VMs woken from one snapshot by one
    # server) and touches every page of the first copy in order (cold: each group is
    # decompressed once, on its first page), then of the second (warm: every group is in
    # the server's cache, which holds them all). 4 touching threads side by side.
    # random: every page once in random order with a 64 MiB cache (cold: most data faults
    # decompress a group), and with the default cache (cache 0: the blob's data, 64..256
    # MiB). fa: --fault-around pages (0: off).
    for cfg in "warm 1 1024 0 $did" "warm 2 1024 0 $did" "warm 1 1024 16 $did" "warm 2 1024 16 $did" \
               "warm 1 1024 0 $id" "warm 1 1024 16 $id" "random 2 64 0 $id" "random 2 64 16 $id" \
               "random 2 0 16 $id"; do
        read -r order nth cmib fa sid <<<"$cfg"
        name=1G; mem=$W/c/sb01/1/memory
        [ "$sid" = "$did" ] && { name=256M-data; mem=$W/data.mem; }
        for _ in $(seq "$rate_runs"); do
            args=(--threads "$nth" --fault-around "$fa"); [ "$cmib" = 0 ] || args+=(--cache-mib "$cmib")
            "$B" uffd-serve --store "$W/s" --snapshot "$sid" --socket "$W/rate.sock" --record 0 --no-prefetch \
                "${args[@]}" --json >"$W/rate.json" 2>"$W/rate.err" &
            spid=$!
            while [ ! -S "$W/rate.sock" ]; do kill -0 $spid 2>/dev/null || { cat "$W/rate.err" >&2; exit 1; }; sleep 0.01; done
            args=(--sequential --warm); [ "$order" = random ] && args=()
            "$FC" --socket "$W/rate.sock" --expect "$mem" --threads 4 --regions 1 "${args[@]}" >"$W/fc.json"
            wait $spid
            python3 - "$W/fc.json" "$W/rate.json" "$order" "$nth" "$cmib" "$name" "$fa" "$(la)" <<'PY'
import json, sys
c, s = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert c["mismatches"] == 0, "pages differ from the snapshot"
order, nth, cmib, name, fa, load = sys.argv[3:9]
def row(phase, faults, secs, user, sys_):
    cpu = user + sys_
    print("%-9s %-11s %s srv thr, fault-around %2s, cache %4s MiB: %7d faults, %7d pages in %6.3f s: "
          "%7.0f faults/s %7.0f pages/s; server cpu %.2f+%.2f s (%.1f us/fault); load %s"
          % (name, phase, nth, fa, cmib if cmib != "0" else "dflt", faults, c["pages"], secs, faults / secs,
             c["pages"] / secs, user, sys_, cpu * 1e6 / faults if cpu >= 0 else -1, load))
if order == "warm":
    row("cold-seq", c["cold_faults"], c["cold_seconds"], c["cold_server_user_s"], c["cold_server_sys_s"])
    row("warm-seq", c["thread_faults"], c["seconds"], c["server_user_s"], c["server_sys_s"])
else:
    row("cold-random", c["thread_faults"], c["seconds"], c["server_user_s"], c["server_sys_s"])
print("%-9s %-11s   server: %d groups decompressed, %d cache hits, %d index lookups, %d batched, %d around"
      % (name, order, s["groups_read"], s["cache_hits"], s["lookups"], s["batched"], s["around"]))
PY
        done
    done
fi
