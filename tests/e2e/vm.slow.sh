#!/usr/bin/env bash
# End to end with real microVMs (QEMU microvm under TCG, a Debian kernel):
#   boot      a sandbox VM on an ext4 disk with uploads, outputs, project files,
#             a secret, caches and temp files; it writes an artifact and counts in
#             memory on its console
#   hibernate pause it, snapshot Firecracker-style (memory file, vmstate, disk),
#             store the three files in a fresh Cairn store; an artifact the
#             guest wrote 8 s before, fsynced but with no sync of the filesystem, is in the journal only,
#             yet Cairn lists it and gives its bytes
#   wake      delete them, restore from Cairn (byte-exact), resume the VM from
#             the restored files: the counter goes on, the guest did not reboot
#   lazywake  resume the same snapshot with QEMU mapping the memory file of `cairn mount`
#             private (share=off) and reading its disk with snapshot=on: pages and disk
#             blocks come on demand, the counter goes on
#   rebuild   `cairn rebuild` a fresh disk from the template, cold-boot a VM on
#             it: every important file is there with its bytes, mode, owner and
#             time; the secrets and caches are not
# The guest kernel is cached in $CAIRN_VM_CACHE (default /var/tmp/cairn-vm-cache).
. "$(dirname "$0")/../lib.sh"
trap 'exit 130' INT TERM

. "$REPO/tests/e2e/vm_common.sh"

# ---- setup: kernel, initramfs, the template disk and the sandbox's disk
e2e_guest_setup
e2e_mkfs "$tree" "$T/disk.img"
phase_done setup

# ---- boot: the sandbox runs, writes its artifact, lists its files, counts
e2e_boot vm1 "$T/disk.img" "$T/run/mem.raw" 5 120 30
cp "$T/vm1.files" "$T/files.orig"
phase_done boot

# ---- hibernate: snapshot the running guest, store it in Cairn
e2e_hibernate vm1 "$T/snap" "$T/run/mem.raw" "$T/disk.img"
mkdir "$T/kept"
for f in mem.raw vmstate disk.img; do cp --sparse=always "$T/snap/$f" "$T/kept/$f"; done

# Whether this run has the case late.txt is for: a journal to replay, and
# late.txt absent from the disk as it is (metadata not yet checkpointed).
recovery=no; unreplayed=absent
dumpe2fs -h "$T/kept/disk.img" 2>/dev/null | grep -q '^Filesystem features:.* needs_recovery' && recovery=yes
debugfs -R 'stat /home/ubuntu/output/late.txt' "$T/kept/disk.img" 2>/dev/null | grep -q '^Inode:' &&
    unreplayed=present
journal_note="late.txt written ${late_age}s before the pause; needs_recovery=$recovery; late.txt in the unreplayed disk: $unreplayed"
log "hibernated disk: $journal_note"
[ "$recovery/$unreplayed" = yes/absent ] ||
    journal_note="$journal_note; NOTE: late.txt was not only in the journal, the replay case is not exercised this run"

S=$T/store
must cairn init --store "$S" >/dev/null
must cairn template add --store "$S" --name base --disk "$T/template.img" --json >/dev/null
must cairn snapshot --store "$S" --tenant t --sandbox vm1 --template base \
    --memory "$T/snap/mem.raw" --vmstate "$T/snap/vmstate" --disk "$T/snap/disk.img" \
    --json >"$T/snap.json"
id=$(json 'j["snapshot"]' "$T/snap.json")
[ -n "$id" ] || fail "snapshot --json gave no id: $(cat "$T/snap.json")"
log "snapshot $id: $(cat "$T/snap.json")"
phase_done hibernate

# The classes the rebuild below depends on, for a clear message if one is off.
must cairn ls --store "$S" --snapshot "$id" /home/ubuntu --recursive --actor e2e --json >"$T/ls.json"
for pc in output/report.txt=artifact upload/data.csv=upload project/app/main.js=project \
          project/.env=secret project/node_modules/left-pad/index.js=cache .ssh/id_ed25519=secret; do
    got=$(json "[e['class'] for e in j['entries'] if e['path'] == '/home/ubuntu/${pc%%=*}']" "$T/ls.json")
    assert_eq "$got" "[\"${pc#*=}\"]" "class of /home/ubuntu/${pc%%=*}"
done

# The unsynced artifact, from the index and from the stored bytes.
{ echo "late artifact"; seq 1 1500; } >"$T/late.want"
late_sha=$(sha256sum <"$T/late.want" | cut -d' ' -f1)
assert_eq "$(awk '/ output\/late\.txt$/ { print $6 }' "$T/files.orig")" "$late_sha" "sha256 of late.txt as vm1 wrote it"
must cairn ls --store "$S" --snapshot vm1@latest /home/ubuntu/output --actor e2e --json >"$T/ls-out.json"
got=$(json "[[e['type'], e['size'], e['class']] for e in j['entries'] if e['path'] == '/home/ubuntu/output/late.txt']" "$T/ls-out.json")
assert_eq "$got" "[[\"file\", $(size_of "$T/late.want"), \"artifact\"]]" \
    "ls --snapshot vm1@latest /home/ubuntu/output: late.txt ($journal_note)"
must cairn cat --store "$S" --snapshot vm1@latest /home/ubuntu/output/late.txt --actor e2e >"$T/late.got"
cmp "$T/late.got" "$T/late.want" >&2 || fail "cat of late.txt differs from what vm1 wrote ($journal_note)"

# ---- wake: the originals are gone; Cairn's copy must resume the guest
rm -f "$T/snap/mem.raw" "$T/snap/vmstate" "$T/snap/disk.img" "$T/run/mem.raw" "$T/disk.img"
must cairn restore --store "$S" --snapshot "$id" --out "$T/wake" >/dev/null
for pair in memory=mem.raw vmstate=vmstate disk=disk.img; do
    cmp "$T/wake/${pair%%=*}" "$T/kept/${pair#*=}" ||
        fail "restored ${pair%%=*} differs from the snapshot's ${pair#*=}"
done
vm_restore vm1w "$T/run/initrd" "$T/wake/disk" "$T/wake/memory" "$T/wake/vmstate" cairn.mode=run
vm_wait vm1w "^TICK $((before + 5)) " 60
vm_qmp vm1w quit >/dev/null
vm_wait_exit vm1w 30
phase_done wake

# ---- lazy wake: the same snapshot resumed from memory Cairn serves on demand through
#      the FUSE view. QEMU maps the memory file private (share=off): pages come in
#      through FUSE reads as the guest touches them, its writes stay in QEMU. QEMU 7.2
#      opens the file O_RDWR even so, hence --open-rw (writes still fail). With
#      x-ignore-shared on both sides the stream carries no RAM and the destination's
#      private block is not "shared", so QEMU keeps what the mapping shows: the snapshot.
lazy_note="not run (no /dev/fuse or fusermount3)"
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
    mkdir -p "$T/mnt"
    timeout -k 5 600 "$CAIRN_BIN" mount --store "$S" --foreground --open-rw "$T/mnt" 2>"$T/mount.err" &
    mpid=$!
    at_exit "fusermount3 -u '$T/mnt' 2>/dev/null; kill $mpid 2>/dev/null"
    for _ in $(seq 100); do grep -q " $T/mnt fuse" /proc/mounts && break; sleep 0.05; done
    grep -q " $T/mnt fuse" /proc/mounts || fail "cairn mount did not mount: $(cat "$T/mount.err")"
    # The disk is lazy too: QEMU's snapshot=on reads the view's file and keeps the guest's
    # writes in a temporary copy-on-write overlay of its own (vm_start's -drive file=...).
    lazy_t0=$EPOCHREALTIME
    VM_SHARE=off vm_restore vm1l "$T/run/initrd" "$T/mnt/snapshots/$id/disk,snapshot=on" "$T/mnt/snapshots/$id/memory" \
        "$T/mnt/snapshots/$id/vmstate" cairn.mode=run
    lazy_run=$(awk -v a="$lazy_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    vm_wait vm1l "^TICK $((before + 1)) " 60
    lazy_tick=$(awk -v a="$lazy_t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    find "/proc/${VM_PID[vm1l]}/fd" -lname "$T/mnt/snapshots/$id/disk" | grep -q . ||
        fail "QEMU does not read the guest's disk from the view: $(ls -l "/proc/${VM_PID[vm1l]}/fd")"
    vm_wait vm1l "^TICK $((before + 5)) " 60
    vm_qmp vm1l quit >/dev/null
    vm_wait_exit vm1l 30
    serial vm1l | grep -q '^CAIRN-BOOT' && fail "the lazily woken guest booted again"
    first=$(serial vm1l | grep -m1 '^TICK ')
    assert_eq "$(echo "$first" | awk '{ print $2, $3 }')" "$((before + 1)) $nonce" \
        "the lazily woken guest's first tick goes on from the snapshot"
    fusermount3 -u "$T/mnt" || fail "fusermount3 -u"
    wait "$mpid" || fail "cairn mount exited $? after fusermount3 -u: $(cat "$T/mount.err")"
    lazy_note="running ${lazy_run}s after launch, first tick after ${lazy_tick}s (QEMU share=off on the FUSE memory file, snapshot=on on its disk)"
    log "lazy wake: $lazy_note"
    phase_done lazywake
fi

# One console across the hibernation: the counter never restarts, no boot in
# between, same boot nonce (the same memory, not a lucky reboot).
serial vm1w | grep -q '^CAIRN-BOOT' && fail "the woken guest booted again: $(serial vm1w | head -c 300)"
cat "$T/run/vm1.serial" "$T/run/vm1w.serial" | tr -d '\r' | grep '^TICK ' >"$T/ticks"
awk -v nonce="$nonce" '
    $3 != nonce { print "line " NR " has nonce " $3 ", boot nonce " nonce; bad = 1; exit }
    $2 != NR    { print "line " NR " counts " $2; bad = 1; exit }
    END { exit bad }' "$T/ticks" >"$T/ticks.err" ||
    fail "the counter did not go on across the wake: $(cat "$T/ticks.err"); tail: $(tail -n 4 "$T/ticks" | tr '\n' '|')"
after=$(wc -l <"$T/ticks")
log "counter: ${before} ticks before hibernation, $((after - before)) after the wake, consecutive"

# ---- rebuild: a fresh disk from the template plus the important files
must cairn rebuild --store "$S" --sandbox vm1 --out "$T/fresh.img" --json >"$T/rebuild.json"
e2e_boot_rebuilt "$T/fresh.img" "$T/files.orig" 120
assert_eq "$(awk '/ output\/late\.txt$/ { print $6 }' "$T/files.fresh")" "$late_sha" \
    "sha256 of late.txt in the rebuilt VM"
phase_done rebuild
log "rebuilt VM: $(wc -l <"$T/files.fresh") important files of $(wc -l <"$T/files.orig"), all identical"

echo "e2e vm: PASS"
echo "  journal: $journal_note"
echo "  lazy wake: $lazy_note"
printf '  %s\n' "${timings[@]}"
