# What the real-VM tests (tests/e2e/*.slow.sh) share, sourced after tests/lib.sh: QEMU
# checks, tools/vm/vm.sh, phase timings, the sandbox's files and what a rebuild owes.
#   e2e_guest_setup      the guest's kernel and initramfs ($T/run/initrd), then e2e_trees
#   e2e_trees            $base (the template's tree) and $tree/$h (a sandbox's: uploads,
#                        outputs, project files, a secret, caches, temp files); $T/template.img
#   e2e_boot NAME DISK MEMFILE TICKS READY_S WAIT_S  boots sandbox VM NAME on DISK (a
#                        copy of $tree): CAIRN-READY within READY_S, then its late artifact
#                        (late_t0) and TICKS ticks within WAIT_S each; checks it sees $h
#                        (e2e_check_guest_sees); sets $nonce, its boot's
#   e2e_hibernate NAME DIR MEMFILE DISK  e2e_late_settle, vm_snapshot into DIR; sets $before,
#                        the ticks NAME counted before it paused
#   e2e_mkfs DIR IMG     a 64 MiB ext4 image of DIR with 4 KiB blocks
#   serial NAME          a VM's console, without CRs
#   e2e_check_guest_sees NAME  vm NAME listed every file of $h with the bytes the host wrote
#   e2e_late_settle      sleep until late.txt is 8 s old (after vm_wait ... CAIRN-LATE and
#                        late_t0=$EPOCHREALTIME): ext4's 5 s commit, not its 30 s writeback
#   e2e_check_rebuilt ORIG FRESH  FILE lines: FRESH has exactly ORIG's important files
#   e2e_boot_rebuilt IMG ORIG READY_S  a rebuilt disk passes e2fsck -fn, cold-boots (listing
#                        within READY_S) with exactly ORIG's important files and the
#                        template's file; its listing in $T/files.fresh
#   phase_done NAME      records the time since the last phase in ${timings[@]}

"$REPO/tools/deps.sh" vm >"$T/deps.log" 2>&1 ||
    { cat "$T/deps.log" >&2; skip "cannot install QEMU (tools/deps.sh vm failed)"; }
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"
qemu-system-x86_64 -accel help 2>/dev/null | grep -qx tcg || skip "this QEMU has no TCG"

. "$REPO/tools/vm/vm.sh"
vm_die() { fail "$*"; }
at_exit vm_stop_all

phase_t0=$EPOCHREALTIME
timings=()
phase_done() {
    local s; s=$(awk -v a="$phase_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    timings+=("$(printf '%-10s %6ss' "$1" "$s")")
    log "phase $1 done in ${s}s"
    phase_t0=$EPOCHREALTIME
}

serial() { tr -d '\r' <"$VM_RUN/$1.serial"; }

# Real root disks have 4 KiB blocks (mke2fs picks 1 KiB for small images).
e2e_mkfs() { mke2fs -q -F -t ext4 -b 4096 -d "$1" "$2" 64M >"$T/mkfs.log" 2>&1 ||
             { cat "$T/mkfs.log" >&2; fail "mke2fs -d $1 failed"; }; }

e2e_guest_setup() {
    vm_setup "$T/run" 128M
    vm_initramfs "$REPO/tests/e2e/guest-init.sh" "$T/run/initrd"
    e2e_trees
}

e2e_trees() {
    base=$T/tree-base
    mkdir -p "$base"/{etc,tmp,home/ubuntu}
    echo "cairn e2e template v1" >"$base/etc/cairn-template"
    echo sandbox >"$base/etc/hostname"
    chown 1000:1000 "$base/home/ubuntu"

    tree=$T/tree
    cp -a "$base" "$tree"
    h=$tree/home/ubuntu
    mkdir -p "$h"/upload/photos "$h"/output "$h"/project/app "$h"/project/node_modules/left-pad \
             "$h"/.ssh "$h"/.cache/pip
    head -c 300000 /dev/urandom >"$h/upload/data.csv"      # spans many 4 KiB blocks
    head -c 50001 /dev/urandom >"$h/upload/photos/cat.jpg"
    : >"$h/upload/empty.txt"
    printf '# Summary\nall good\n' >"$h/output/summary.md"
    echo '<h1>app</h1>' >"$h/project/app/index.html"
    echo 'console.log(1)' >"$h/project/app/main.js"
    chmod 750 "$h/project/app/main.js"
    echo 'OPENAI_API_KEY=sk-e2e-secret' >"$h/project/.env"
    echo 'module.exports = 1' >"$h/project/node_modules/left-pad/index.js"
    echo '{"name":"left-pad"}' >"$h/project/node_modules/left-pad/package.json"
    echo 'PRIVATE KEY' >"$h/.ssh/id_ed25519"
    head -c 8192 /dev/urandom >"$h/.cache/pip/wheel.bin"
    echo 'swap of main.js' >"$h/project/app/.main.js.swp"
    echo 'half-written' >"$h/output/draft.tmp"
    chown -R 1000:1000 "$h"
    touch -d '2024-03-01 12:00:00' "$h/upload/photos/cat.jpg"
    e2e_mkfs "$base" "$T/template.img"
}

# The harness itself: the guest read the bytes mke2fs -d put in.
e2e_check_guest_sees() {
    local f want got
    serial "$1" | grep '^FILE ' >"$T/$1.files"
    while read -r f; do
        want=$(sha256sum <"$h/$f" | cut -d' ' -f1)
        got=$(awk -v p="$f" '{ q = $0; for (i = 0; i < 6; i++) sub(/^[^ ]+ /, "", q) } q == p { print $6 }' "$T/$1.files")
        [ "$got" = "$want" ] || fail "guest $1 sees $f with sha256 '$got', host wrote $want"
    done < <(cd "$h" && find . -type f | sed 's|^\./||' | sort)
    grep -q ' output/report.txt$' "$T/$1.files" || fail "$1 did not list its output/report.txt"
}

e2e_boot() {
    local name=$1 disk=$2 memfile=$3 ticks=$4 ready_s=$5 wait_s=$6
    vm_start "$name" "$T/run/initrd" "$disk" "$memfile" cairn.mode=run
    vm_wait "$name" '^CAIRN-READY' "$ready_s"
    vm_wait "$name" '^CAIRN-LATE' "$wait_s"
    late_t0=$EPOCHREALTIME
    vm_wait "$name" "^TICK $ticks " "$wait_s"
    e2e_check_guest_sees "$name"
    nonce=$(serial "$name" | sed -n 's/^CAIRN-BOOT //p')
    [ -n "$nonce" ] || fail "no CAIRN-BOOT line from $name"
}

# late.txt was fsynced alone (metadata into the journal): a few seconds more, well inside
# its 30 s writeback (metadata to its home blocks), as a guest hibernated mid-work would be.
e2e_hibernate() {
    e2e_late_settle
    vm_snapshot "$1" "$2" "$3" "$4"
    before=$(serial "$1" | grep -c '^TICK ')
}

e2e_late_settle() {
    sleep "$(awk -v a="$late_t0" -v b="$EPOCHREALTIME" 'BEGIN { d = 8 - (b - a); printf "%.2f", (d > 0 ? d : 0) }')"
    late_age=$(awk -v a="$late_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
}

# What a rebuild owes the user: uploads, outputs and project files exactly as
# the sandbox had them (bytes, mode, owner, mtime) and nothing else of its home.
is_important() { awk '{ q = $0; for (i = 0; i < 6; i++) sub(/^[^ ]+ /, "", q) }
    q ~ /^(upload|output|project)\// && q !~ /(^|\/)node_modules\// && q !~ /(^|\/)\.env$/ && q !~ /\.(swp|tmp)$/'; }

e2e_check_rebuilt() {
    local orig=$1 fresh=$2 p
    # (Sorted: the sandbox listed late.txt after the others.)
    is_important <"$orig" | LC_ALL=C sort >"$T/files.want"
    LC_ALL=C sort "$fresh" >"$T/files.fresh.sorted"
    diff "$T/files.want" "$T/files.fresh.sorted" >"$T/files.diff" ||
        fail "the rebuilt VM's /home/ubuntu differs from the sandbox's important files (< sandbox, > rebuilt): $(cat "$T/files.diff")"
    for p in project/.env .ssh/id_ed25519 project/node_modules/left-pad/index.js \
             project/node_modules/.cache/run.json .cache/pip/wheel.bin \
             project/app/.main.js.swp output/draft.tmp; do
        grep -q " $p\$" "$orig" || fail "the sandbox had no $p: the test lost its point"
        ! grep -q " $p\$" "$fresh" || fail "the rebuilt VM has $p (secret or cache)"
    done
}

e2e_boot_rebuilt() {
    local img=$1 orig=$2 ready_s=$3 rc=0
    e2fsck -fn "$img" >"$T/e2fsck.log" 2>&1 || rc=$?
    [ $rc = 0 ] || { cat "$T/e2fsck.log" >&2; fail "e2fsck -fn $img exited $rc"; }
    vm_start fresh "$T/run/initrd" "$img" "$T/run/mem-fresh.raw" cairn.mode=list
    vm_wait fresh '^CAIRN-DONE' "$ready_s"
    vm_wait_exit fresh 30
    serial fresh | grep '^FILE ' >"$T/files.fresh"
    e2e_check_rebuilt "$orig" "$T/files.fresh"
    assert_eq "$(serial fresh | sed -n 's/^BASE //p')" "$(sha256sum <"$base/etc/cairn-template" | cut -d' ' -f1)" \
        "the rebuilt VM's template file"
}
