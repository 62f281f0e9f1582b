#!/usr/bin/env bash
# gc across nodes judges ages on the bucket's clock, never on a node's wall clock
# (docs/s3.md, "Whose clock"), against a real RGW. Nodes w (writer), c and d (gc), each
# a folder over one bucket; c and d run with their wall clocks stepped by hours
# (tests/fault/clockstep.c):
#  - w's writer of sandbox y opens, deduplicates y's first pages against the packs of a
#    snapshot just deleted, and is stopped before it commits; c, 3 h behind, records those
#    packs as fossils; d (which did not write that record) runs gc at its own clock, then
#    3 h ahead: nothing is deleted. The writer then commits: y restores byte-exact;
#  - a gc lease another node took a moment ago keeps d, 3 h ahead, from deleting;
#  - once the fossils are old enough on the bucket's clock, d 6 h behind (3 h behind the
#    node that recorded them) deletes the garbage among them (and keeps the one y needs):
#    no record waits for a node's clock;
#  - a writer 3 h behind names its snapshots on the bucket's clock, so another node's
#    refresh (which lists the manifests of its last 10 min) finds them;
#  - lifecycle events are in the order the bucket stored them: q pins a snapshot, then p
#    (3 h behind) unpins it: it is unpinned, and gc drops it (superseded).
# Each of those fails with ages judged by the wall clock (gc/fossil.c, store/gcrec.c).
. "$(dirname "$0")/../lib.sh"
need_s3

SCALE=${CAIRN_TIME_SCALE:-1}
# The writer is stopped for three gc runs: the commit bound covers them on a loaded machine.
export CAIRN_S3_COMMIT_BOUND_MS=$((20000 * SCALE)) CAIRN_S3_CLOCK_MARGIN_MS=500 CAIRN_GC_LEASE_SETTLE_MS=300
HOURS3=$((3 * 3600 * 1000))
stepped() { LD_PRELOAD=$BUILD/libcairn-clockstep.so CAIRN_TEST_CLOCK_STEP_MS=$1 "$CAIRN_BIN" "${@:2}"; }
gc_json() {                     # gc_json NODE STEP_MS OUT: one gc run, its --json in OUT
    stepped "$2" gc --store "$T/$1" --json >"$3" 2>>"$T/gc.err" || fail "gc on $1 (clock $2 ms): $(tail -n 5 "$T/gc.err")"
}

B=$(s3_bucket)
for n in w c; do s3_init "$T/$n" "$B" v4; done
s3_init "$T/d" "$B" v2              # d judges by libs3's listings (whole seconds), c and w by the XML's
gen "$T/a" $((8 << 20)) 1              # x: the pages y starts with
gen "$T/z" $((2 << 20)) 2              # z: garbage once deleted
gen "$T/b" $((56 << 20)) 3
cat "$T/a" "$T/b" >"$T/y"
must cairn snapshot --store "$T/w" --tenant acme --sandbox x --memory "$T/a" >/dev/null
must cairn snapshot --store "$T/w" --tenant acme --sandbox z --memory "$T/z" >/dev/null
must cairn delete --store "$T/w" --sandbox x >/dev/null
must cairn delete --store "$T/w" --sandbox z >/dev/null

# The writer: stopped once it writes its first new page (y's first 8 MiB found in x's pack
# by then), before its commit.
"$CAIRN_BIN" snapshot --store "$T/w" --tenant acme --sandbox y --memory "$T/y" >"$T/y.out" 2>"$T/y.err" &
wpid=$!
at_exit "kill -CONT $wpid 2>/dev/null; kill $wpid 2>/dev/null"
for _ in $(seq 3000); do
    compgen -G "$T/w/packs/*.tmp" >/dev/null && break
    kill -0 $wpid 2>/dev/null || break
    sleep 0.01
done
kill -STOP $wpid 2>/dev/null || fail "the writer ended before it was stopped: $(cat "$T/y.err")"
compgen -G "$T/w/packs/*.tmp" >/dev/null || fail "the writer never started a pack: $(cat "$T/y.err")"

gc_json c -$HOURS3 "$T/gc1.json"
assert_json 'j["fossils_recorded"] >= 2' "$T/gc1.json" "fossils of the deleted sandboxes (node c, 3 h behind)"
# A record a node behind wrote is not old to a node whose clock is right...
gc_json d 0 "$T/gc2.json"
assert_json 'j["packs_deleted"] == 0' "$T/gc2.json" "packs deleted by node d a moment after node c (3 h behind) made them fossils"
# ...nor to one 3 h ahead that did not write it.
gc_json d $HOURS3 "$T/gc3.json"
assert_json 'j["packs_deleted"] == 0' "$T/gc3.json" "packs deleted by node d (3 h ahead) a moment after they became fossils"

kill -CONT $wpid
wait $wpid || fail "the writer stopped across the gc runs failed: $(cat "$T/y.err")"
y=$(tail -n 1 "$T/y.out")
s3_init "$T/e" "$B" v4
verify "$T/e" "$y" "memory=$T/y"

# A gc lease another node took a moment ago (60 s) holds for a node 3 h ahead.
printf 'node=abcdef\nttl_ms=60000\nnonce=00000000000000ff\n' >"$T/lease"
[ "$(s3_curl PUT "$B/gc/lease" --data-binary @"$T/lease")" = 200 ] || fail "cannot plant a lease"
gc_json d $HOURS3 "$T/gc4.json"
assert_json 'j["sweep_skipped"] and j["lease_holder"] == "abcdef" and j["packs_deleted"] == 0' "$T/gc4.json" \
    "gc of a node 3 h ahead under another node's fresh lease"
[ "$(s3_curl DELETE "$B/gc/lease")" = 204 ] || fail "cannot remove the planted lease"

# Old enough on the bucket's clock (bound + margin + the listing's 1 s rounding, from the
# record's PUT, which came before gc1 ended): a node 6 h behind (3 h behind the one that
# wrote the record) deletes z's pack and keeps the one y needs.
ripe_at=$(( $(stat -c %Y "$T/gc1.json") + (CAIRN_S3_COMMIT_BOUND_MS + CAIRN_S3_CLOCK_MARGIN_MS + 1000) / 1000 + 1 ))
while [ "$(date +%s)" -le "$ripe_at" ]; do sleep 0.5; done
gc_json d -$((2 * HOURS3)) "$T/gc5.json"
assert_json 'j["packs_deleted"] >= 1 and j["fossils_resurrected"] >= 1' "$T/gc5.json" \
    "gc of a node 6 h behind once the fossils are old on the bucket's clock"
s3_init "$T/f" "$B" v4
verify "$T/f" "$y" "memory=$T/y"
fsck_ok "$T/f"

# The refresh window: on a bucket of its own, p (3 h behind) snapshots, q refreshes, p
# snapshots again: q's next refresh finds it.
B2=$(s3_bucket)
for n in p q; do s3_init "$T/$n" "$B2" v4; done
gen "$T/p1" $((1 << 20)) 4
gen "$T/p2" $((1 << 20)) 5
stepped -$HOURS3 snapshot --store "$T/p" --tenant acme --sandbox p --memory "$T/p1" >"$T/p1.out" 2>>"$T/gc.err" ||
    fail "snapshot on p: $(tail -n 3 "$T/gc.err")"
must cairn refresh --store "$T/q" --json >/dev/null
stepped -$HOURS3 snapshot --store "$T/p" --tenant acme --sandbox p --memory "$T/p2" >"$T/p2.out" 2>>"$T/gc.err" ||
    fail "snapshot on p: $(tail -n 3 "$T/gc.err")"
must cairn refresh --store "$T/q" --json >"$T/refresh.json"
assert_json 'j["snapshots"] == 1' "$T/refresh.json" "node q's refresh after a snapshot of a node 3 h behind"
verify "$T/q" "$(tail -n 1 "$T/p2.out")" "memory=$T/p2"
p1=$(tail -n 1 "$T/p1.out")
must cairn pin --store "$T/q" --snapshot "$p1" >/dev/null
stepped -$HOURS3 unpin --store "$T/p" --snapshot "$p1" >/dev/null 2>>"$T/gc.err" || fail "unpin on p: $(tail -n 3 "$T/gc.err")"
gc_json q 0 "$T/gc6.json"
assert_json 'j["dropped_snapshots"] == 1' "$T/gc6.json" "gc after a pin, then an unpin by a node 3 h behind"
[ "$(s3_curl GET "$B2?list-type=2&prefix=manifests%2F$p1")" = 200 ] || fail "cannot list $B2"
! grep -q "<Key>manifests/$p1" "$T/s3_curl.out" || fail "the unpinned, superseded snapshot $p1 was kept"
log "ok"
