# QEMU microVMs as the Firecracker stand-in, for tests (source this file).
# Facts behind the flags: /work/shared/notes/vm-harness.md.  TCG only: this
# machine's /dev/kvm cannot run a stock kernel.
#
#   vm_setup RUNDIR [MEM]        kernel from the cache, guest RAM size (default 128M)
#   vm_initramfs INIT OUT        busybox-static + the modules + INIT as /init
#   vm_start NAME INITRD DISK MEMFILE APPEND [QEMU-ARGS...]
#   vm_qmp NAME CMD [JSON] ...   QMP commands (tools/vm/qmp.py)
#   vm_wait NAME ERE [SECONDS]   until the serial log matches ERE (fails loudly)
#   vm_wait_exit NAME [SECONDS]  until QEMU has exited by itself
#   vm_snapshot NAME DIR         pause; DIR/{mem.raw,vmstate,disk.img}; quit
#   vm_restore NAME INITRD DISK MEMFILE VMSTATE APPEND   resume a snapshot
#   VM_SHARE=off       map the memory file private (copy-on-write; default share=on)
#   vm_stop NAME / vm_stop_all   kill (vm_stop_all belongs in the EXIT trap)
# A failure prints the serial log tail and QEMU's stderr, then calls vm_die
# (exit 1; a test may redefine vm_die after sourcing this file).

VM_TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
declare -A VM_PID=()

vm_die() { echo "FAIL vm: $*" >&2; exit 1; }

# The guest needs the host's TSC rate: under TCG its own calibration against
# the PIT can hang.
_vm_tsc_khz() {
    local khz
    khz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Detected \([0-9]*\)\.\([0-9]\{3\}\) MHz.*/\1\2/p' | head -n 1)
    [ -n "$khz" ] || khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
    echo "$khz"
}

vm_setup() {
    VM_RUN=$1
    VM_MEM=${2:-128M}
    mkdir -p "$VM_RUN"
    VM_KDIR=$("$VM_TOOLS/kernel.sh") || vm_die "no guest kernel (tools/vm/kernel.sh failed)"
    VM_KERNEL=$VM_KDIR/vmlinux
    VM_TSC_KHZ=$(_vm_tsc_khz)
    VM_CMDLINE="console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=$VM_TSC_KHZ"
}

vm_initramfs() {
    local init=$1 out=$2 root
    root=$(mktemp -d "$VM_RUN/initramfs.XXXXXX")
    mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
    cp /bin/busybox "$root/bin/busybox"
    cp "$VM_KDIR"/modules/*.ko "$root/lib/modules/"
    cp "$VM_KDIR/modules.order" "$root/lib/modules/order"
    cp "$init" "$root/init"
    chmod 755 "$root/init"
    # The kernel opens /dev/console before /init runs; without the node the
    # guest has no stdout and the serial log stays empty.
    mknod -m 600 "$root/dev/console" c 5 1
    # Uncompressed: unpacking is faster than inflating under TCG.
    (cd "$root" && find . | cpio -o -H newc --quiet) >"$out"
    rm -rf "$root"
}

# vm_start NAME INITRD DISK MEMFILE APPEND [QEMU-ARGS...]
# QEMU stays in the test's process group (no setsid), so a runner that kills
# the group on timeout kills the VMs too; stdin is /dev/null so it never
# touches a terminal.
vm_start() {
    local name=$1 initrd=$2 disk=$3 memfile=$4 append=$5
    shift 5
    [ -z "${VM_PID[$name]:-}" ] || vm_die "$name is already running"
    rm -f "$VM_RUN/$name.qmp"
    qemu-system-x86_64 \
        -M microvm,acpi=on,memory-backend=mem -accel tcg -cpu max -smp 1 -m "$VM_MEM" \
        -object "memory-backend-file,id=mem,size=$VM_MEM,mem-path=$memfile,share=${VM_SHARE:-on}" \
        -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$VM_KERNEL" -initrd "$initrd" -append "$VM_CMDLINE $append" \
        -chardev "file,id=ser0,path=$VM_RUN/$name.serial" -serial chardev:ser0 \
        -qmp "unix:$VM_RUN/$name.qmp,server=on,wait=off" \
        -drive "id=d0,file=$disk,format=raw,if=none" -device virtio-blk-device,drive=d0 \
        "$@" </dev/null >"$VM_RUN/$name.stderr" 2>&1 &
    VM_PID[$name]=$!
}

vm_alive() { [ -n "${VM_PID[$1]:-}" ] && kill -0 "${VM_PID[$1]}" 2>/dev/null; }

vm_report() {
    local name=$1
    {   echo "--- $name: serial log (last 30 lines)"
        tail -n 30 "$VM_RUN/$name.serial" 2>/dev/null | tr -d '\r'
        echo "--- $name: QEMU stderr"
        tail -n 15 "$VM_RUN/$name.stderr" 2>/dev/null
        vm_alive "$name" && echo "--- $name: QEMU still running (pid ${VM_PID[$name]})" \
                         || echo "--- $name: QEMU not running"; } >&2
}

vm_fail() { local name=$1; shift; vm_report "$name"; vm_die "$name: $*"; }

vm_qmp() {
    local name=$1; shift
    vm_alive "$name" || vm_fail "$name" "QMP $1: QEMU is not running"
    python3 "$VM_TOOLS/qmp.py" "$VM_RUN/$name.qmp" "$@" 2>"$VM_RUN/$name.qmp.err" ||
        { cat "$VM_RUN/$name.qmp.err" >&2; vm_fail "$name" "QMP $* failed"; }
}

vm_wait() {
    local name=$1 ere=$2 secs=${3:-60} end
    end=$(( $(date +%s) + secs ))
    until tr -d '\r' 2>/dev/null <"$VM_RUN/$name.serial" | grep -Eq -- "$ere"; do
        vm_alive "$name" || vm_fail "$name" "QEMU exited before the console showed /$ere/"
        grep -q '^CAIRN-FAIL' "$VM_RUN/$name.serial" 2>/dev/null && vm_fail "$name" "the guest failed"
        [ "$(date +%s)" -lt "$end" ] || vm_fail "$name" "no /$ere/ on the console after ${secs}s"
        sleep 0.1
    done
}

vm_wait_exit() {
    local name=$1 secs=${2:-60} end rc=0
    end=$(( $(date +%s) + secs ))
    while vm_alive "$name"; do
        [ "$(date +%s)" -lt "$end" ] || vm_fail "$name" "QEMU still running after ${secs}s"
        sleep 0.1
    done
    wait "${VM_PID[$name]}" || rc=$?
    unset "VM_PID[$name]"
    [ "$rc" = 0 ] || { vm_report "$name"; vm_die "$name: QEMU exited with status $rc"; }
}

vm_stop() {
    local name=$1 pid=${VM_PID[$1]:-} i
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    unset "VM_PID[$name]"
}

vm_stop_all() { local n; for n in "${!VM_PID[@]}"; do vm_stop "$n"; done; }

# Firecracker-style snapshot: the guest RAM is the share=on memory file
# itself, so the migration stream with x-ignore-shared carries only device
# state.  The memory file and disk are copied while the guest is paused (QEMU
# drains and flushes the disk on stop), then QEMU quits.
vm_snapshot() {
    local name=$1 dir=$2 memfile=$3 disk=$4
    mkdir -p "$dir"
    vm_qmp "$name" stop \
        migrate-set-capabilities '{"capabilities":[{"capability":"x-ignore-shared","state":true}]}' \
        migrate "{\"uri\":\"exec:cat > $dir/vmstate\"}" wait-migrate 60 >/dev/null
    [ -s "$dir/vmstate" ] || vm_fail "$name" "migration wrote no vmstate"
    cp --sparse=always "$memfile" "$dir/mem.raw"
    cp --sparse=always "$disk" "$dir/disk.img"
    vm_qmp "$name" quit >/dev/null
    vm_wait_exit "$name" 30
}

# vm_restore NAME INITRD DISK MEMFILE VMSTATE APPEND: the same machine with
# -incoming defer; the destination needs x-ignore-shared too, or it expects
# the RAM in the stream.  The source was paused when it was saved, so the
# loaded VM is "paused" too and needs a `cont`.  Returns once the guest runs.
vm_restore() {
    local name=$1 initrd=$2 disk=$3 memfile=$4 vmstate=$5 append=$6 st= i
    vm_start "$name" "$initrd" "$disk" "$memfile" "$append" -incoming defer
    vm_qmp "$name" \
        migrate-set-capabilities '{"capabilities":[{"capability":"x-ignore-shared","state":true}]}' \
        migrate-incoming "{\"uri\":\"exec:cat $vmstate\"}" >/dev/null
    for i in $(seq 300); do
        st=$(vm_qmp "$name" query-status | sed -n 's/.*"status": *"\([a-z-]*\)".*/\1/p')
        case $st in
            running) return 0 ;;
            paused) vm_qmp "$name" cont >/dev/null ;;
            inmigrate) ;;
            *) vm_fail "$name" "state '$st' after migrate-incoming" ;;
        esac
        sleep 0.02
    done
    vm_fail "$name" "not running 6 s after migrate-incoming (state '$st')"
}
