#!/usr/bin/env bash
# Issue 8: an I/O error while gc decides what to delete stops gc (exit 1, a message naming
# what failed) and deletes nothing. The errors are real EIO answers of readdir and pread,
# injected by the failio LD_PRELOAD shim ($BUILD/libcairn-failio.so) into the index scan
# that counts pack references and into the listing of manifests that marks live chunks.
# A clean gc afterwards deletes what the failed runs did not: the failures guarded
# something.
source "$(dirname "$0")/../lib.sh"
SHIM=$BUILD/libcairn-failio.so
[ -f "$SHIM" ] || fail "no $SHIM (run make first)"
DAY=86400
S=$T/store
must cairn init --store "$S" >/dev/null

# keep: a live sandbox; gone: deleted, so gc drops its snapshots and sweeps its packs.
gen "$T/keep.mem" $((2 << 20)) 1 30
gen "$T/gone.mem" $((2 << 20)) 2 30
gen "$T/gone2.mem" $((2 << 20)) 3 30
KEEP=$(snap "$S" t keep "memory=$T/keep.mem")
snap "$S" t gone "memory=$T/gone.mem" >/dev/null
snap "$S" t gone "memory=$T/gone2.mem" >/dev/null
must cairn delete --store "$S" --sandbox gone >/dev/null
NOW=$(($(date +%s) + DAY))

packs() { (cd "$S/packs" && ls) | sort; }
manifests() { (cd "$S/manifests" && ls) | sort; }
packs >"$T/packs.0"
manifests >"$T/manifests.0"
assert_cmp "$(wc -l <"$T/packs.0")" -ge 3 "packs before gc"

# 1. The scan of the index's chunk records fails part way: gc stops before it plans.
SST=$(cd "$S/index" && ls -S -- *.sst | head -n 1)
[ -n "$SST" ] || fail "no table file in $S/index"
expect 1 env LD_PRELOAD="$SHIM" FAILIO_PREAD="/index/$SST" FAILIO_LOG=1 \
    "$CAIRN_BIN" gc --store "$S" --now "$NOW" >/dev/null
assert_grep 'failio: pread' "$T/err" "the pread failure was injected"
assert_grep 'index: counting pack references: .*(I/O|IO error)' "$T/err" "gc names the failed scan"
packs | cmp -s - "$T/packs.0" || fail "a failed reference count deleted packs"
manifests | cmp -s - "$T/manifests.0" || fail "a failed reference count dropped snapshots"

# 2. The listing of manifests fails after a few entries, in the sweep (the second
#    listing of the folder in a gc run: the first is the size gc reports). The drops
#    of the deleted sandbox happen before the sweep, by design and logged; no pack goes.
expect 1 env LD_PRELOAD="$SHIM" FAILIO_DIR=/manifests FAILIO_DIR_NTH=2 FAILIO_DIR_AFTER=3 \
    FAILIO_LOG=1 "$CAIRN_BIN" gc --store "$S" --now "$NOW" >/dev/null
assert_grep 'failio: readdir' "$T/err" "the readdir failure was injected"
assert_grep 'manifests: cannot list: Input/output error' "$T/err" "gc names the failed listing"
packs | cmp -s - "$T/packs.0" || fail "a failed manifest listing deleted packs"
[ "$(manifests)" = "$KEEP.cmf" ] || fail "manifests after the drops: $(manifests | tr '\n' ' ')"
verify "$S" "$KEEP" "memory=$T/keep.mem"

# 3. The listing fails at the first opendir (the sizes gc reports): nothing happens.
expect 1 env LD_PRELOAD="$SHIM" FAILIO_DIR=/manifests FAILIO_DIR_AFTER=0 \
    "$CAIRN_BIN" gc --store "$S" --now "$NOW" --json >/dev/null
assert_grep 'manifests: Input/output error' "$T/err" "gc names the failed size"
packs | cmp -s - "$T/packs.0" || fail "a failed size deleted packs"

# 4. Without injected errors the same gc sweeps what the deleted sandbox left.
must cairn gc --store "$S" --now "$NOW" --json >"$T/gc.json"
assert_cmp "$(json 'j["packs_deleted"] + j["packs_rewritten"]' "$T/gc.json")" -ge 1 "the clean gc sweeps"
verify "$S" "$KEEP" "memory=$T/keep.mem"
fsck_ok "$S"
