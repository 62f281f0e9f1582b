#!/usr/bin/env bash
# The real-VM lifecycle (tests/e2e/vm.slow.sh's microVMs) driven through `cairn serve`
# with curl over loopback, as an orchestrator would (`make e2e`):
#   boot       sandbox vm1 (tenant t1, free) from the template's files, writing artifacts
#   hibernate  POST /v1/snapshots of its memory file, vmstate and disk
#   wake       POST /v1/snapshots/{id}/restore; QEMU resumes the restored files: the
#              guest's counter goes on, no reboot
#   second     vm2 (tenant t2) from the same template, hibernated: the store grows by
#              little (printed); t2 turns pro (PUT /v1/tenants/t2/tier)
#   gc         POST /v1/gc with now = +8 days: vm1 (free, 7 days) is reclaimed, its
#              full restore is 410; vm2 (pro, 21 days) is kept; now = +22 days: reclaimed
#   rebuild    POST /v1/sandboxes/vm1/rebuild, cold boot of the image: every artifact,
#              upload and project file there by checksum, mode, owner and time; no
#              secret, cache or temp
# Prints "N passed, N failed"; stops at the first failure (the steps build on each other).
. "$(dirname "$0")/../lib.sh"
. "$REPO/tests/api_lib.sh"
trap 'exit 130' INT TERM

passed=0; failed=0
fail() { failed=$((failed + 1)); printf 'FAIL %s: %s\n' "$TEST_NAME" "$*" >&2; exit 1; }
pass() { passed=$((passed + 1)); log "ok: $*"; }
finished=0
# A failure inside $(...) exits a subshell only: the test's own exit then counts it.
at_exit '[ "$finished" = 1 ] || [ "$failed" -gt 0 ] || failed=1; echo "$passed passed, $failed failed"'

. "$REPO/tests/e2e/vm_common.sh"

e2e_guest_setup
mkdir -p "$T/vms" "$T/dst"
e2e_mkfs "$tree" "$T/vms/disk1.img"
e2e_mkfs "$tree" "$T/vms/disk2.img"

S=$T/store
must cairn init --store "$S" >/dev/null
must cairn template add --store "$S" --name base --disk "$T/template.img" --json >/dev/null
api_serve - ORCH=orchestrator:orch GC=gc:gcbot <<JSON
{"snapshot_roots": ["$T/vms"], "restore_roots": ["$T/dst"]}
JSON
stored() { expect_status 200 GET /metrics ""; sed -n 's/^cairn_store_stored_bytes //p' "$T/body"; }
phase_done setup

# ---- boot and hibernate vm1 through the API
e2e_boot vm1 "$T/vms/disk1.img" "$T/vms/mem1.raw" 3 240 60
pass "vm1 booted from the template's files and sees them byte for byte"
phase_done boot

e2e_hibernate vm1 "$T/vms/snap1" "$T/vms/mem1.raw" "$T/vms/disk1.img"
(cd "$T/vms/snap1" && sha256sum mem.raw vmstate disk.img) >"$T/snap1.sha"
s0=$(stored)
expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"vm1","template":"base","memory":"'$T/vms/snap1/mem.raw'","vmstate":"'$T/vms/snap1/vmstate'","disk":"'$T/vms/snap1/disk.img'"}'
ID1=$(json 'j["snapshot"]' "$T/body")
logical=$(json 'j["logical_bytes"]' "$T/body")
s1=$(stored)
pass "POST /v1/snapshots hibernated vm1 as $ID1 (logical $logical bytes, store +$((s1 - s0)))"
phase_done hibernate

# ---- wake: only Cairn's copy is left
rm -f "$T/vms/snap1/"* "$T/vms/mem1.raw" "$T/vms/disk1.img"
expect_status 200 POST "/v1/snapshots/$ID1/restore" "$ORCH" '{"out_dir":"'$T/dst/wake1'"}'
(cd "$T/dst/wake1" && sha256sum memory vmstate disk) | awk '{ print $1 }' >"$T/wake1.sha"
awk '{ print $1 }' "$T/snap1.sha" | diff - "$T/wake1.sha" >&2 || fail "the restored files differ from the snapshot's"
pass "POST .../restore gave the memory file, vmstate and disk byte for byte"
vm_restore vm1w "$T/run/initrd" "$T/dst/wake1/disk" "$T/dst/wake1/memory" "$T/dst/wake1/vmstate" cairn.mode=run
vm_wait vm1w "^TICK $((before + 3)) " 120
vm_qmp vm1w quit >/dev/null
vm_wait_exit vm1w 30
serial vm1w | grep -q '^CAIRN-BOOT' && fail "the woken guest booted again: $(serial vm1w | head -c 300)"
assert_eq "$(serial vm1w | grep -m1 '^TICK ' | awk '{ print $2, $3 }')" "$((before + 1)) $nonce" \
    "the woken guest's first tick goes on from the snapshot"
pass "vm1 woke from the API's restore: tick $((before + 1)) after $before, same boot"
phase_done wake

# ---- a second sandbox from the same template: the store grows by little
vm_start vm2 "$T/run/initrd" "$T/vms/disk2.img" "$T/vms/mem2.raw" cairn.mode=run
vm_wait vm2 '^CAIRN-READY' 240
vm_wait vm2 '^TICK 3 ' 60
vm_snapshot vm2 "$T/vms/snap2" "$T/vms/mem2.raw" "$T/vms/disk2.img"
expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t2","sandbox":"vm2","template":"base","memory":"'$T/vms/snap2/mem.raw'","vmstate":"'$T/vms/snap2/vmstate'","disk":"'$T/vms/snap2/disk.img'"}'
logical2=$(json 'j["logical_bytes"]' "$T/body")
new2=$(json 'j["new_bytes"]' "$T/body")
s2=$(stored)
grew=$((s2 - s1))
assert_cmp "$grew" -lt "$((s1 - s0))" "the store grew by less for vm2 than for vm1"
growth_note="vm1 grew the store by $((s1 - s0)) bytes; vm2 (same template, logical $logical2) by $grew ($(awk -v a="$grew" -v b="$logical2" 'BEGIN { printf "%.1f", 100 * a / b }')% of its logical size; new_bytes $new2)"
log "$growth_note"
pass "vm2 hibernated: $growth_note"
expect_status 200 PUT /v1/tenants/t2/tier "$ORCH" '{"tier":"pro"}'
expect_status 200 GET /v1/sandboxes/vm2 "$ORCH"
assert_json 'j["tier"] == "pro" and j["state"] == "hibernated"' "$T/body" "vm2 is pro and hibernated"
pass "PUT /v1/tenants/t2/tier made vm2 pro"
phase_done second

# ---- gc at +8 days: the free sandbox goes, the pro one stays
now=$(date +%s)
expect_status 200 POST /v1/gc "$GC" '{"now": '$((now + 8 * 86400))'}'
assert_json '"vm1" in j["reclaimed_sandboxes"] and "vm2" not in j["reclaimed_sandboxes"] and j["ok"] is True' "$T/body" \
    "gc at +8 days reclaims vm1 only"
expect_status 200 GET /v1/sandboxes/vm1 "$ORCH"
assert_json 'j["state"] == "reclaimed"' "$T/body" "vm1's state after gc"
LATEST1=$(json 'j["latest"]' "$T/body")
expect_status 410 POST "/v1/snapshots/$LATEST1/restore" "$ORCH" '{"out_dir":"'$T/dst/wake1b'"}'
assert_json 'j["error"]["code"] == "reclaimed"' "$T/body"
expect_status 200 GET /v1/sandboxes/vm2 "$ORCH"
assert_json 'j["state"] == "hibernated"' "$T/body" "vm2 (pro) 8 days idle"
pass "gc at +8 days: vm1 (free) reclaimed, its restore 410; vm2 (pro) kept"

# ---- rebuild vm1 through the API and cold-boot it
expect_status 200 POST /v1/sandboxes/vm1/rebuild "$ORCH" '{"out":"'$T/dst/fresh.img'"}'
assert_json 'j["template"] == "base" and j["files"] > 0' "$T/body" "rebuild reply"
e2e_boot_rebuilt "$T/dst/fresh.img" "$T/vm1.files" 240
pass "POST /v1/sandboxes/vm1/rebuild: the cold-booted VM has its $(wc -l <"$T/files.fresh") important files, no secret or cache"
phase_done rebuild

# ---- gc at +22 days: past the pro window too
expect_status 200 POST /v1/gc "$GC" '{"now": '$((now + 22 * 86400))'}'
assert_json '"vm2" in j["reclaimed_sandboxes"]' "$T/body" "gc at +22 days reclaims vm2"
expect_status 200 GET /v1/sandboxes/vm2 "$ORCH"
assert_json 'j["state"] == "reclaimed"' "$T/body" "vm2's state at +22 days"
pass "gc at +22 days: vm2 (pro) reclaimed"

serve_stop
must cairn fsck --store "$S" >/dev/null
pass "the server stopped cleanly and fsck passes"
phase_done gc
printf '  %s\n' "${timings[@]}" >&2
finished=1
