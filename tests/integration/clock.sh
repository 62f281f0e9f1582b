#!/usr/bin/env bash
# Issue 9, defect 4: the order of snapshots is the order of commit, whatever the wall clock
# does. The clock is stepped with CAIRN_TEST_CLOCK_STEP_MS through the LD_PRELOAD shim
# tests/fault/clockstep.c (faketime is not available; cairn has no such hook) backward, as NTP does, and forward. After
# each step the newest acknowledged snapshot is the sandbox's latest (`snapshots`, `@latest`,
# rebuild), gc keeps it and drops its elders, and a delete or a tier change is ordered by
# the log, not by the time it carries.
source "$(dirname "$0")/../lib.sh"

HOUR=3600000
DAY=$((24 * HOUR))
S=$T/store
must cairn init --store "$S" >/dev/null
latest() { must cairn snapshots --store "$S" --sandbox "$1" --json | json 'j["snapshots"][0]["snapshot"]'; }
ids() { must cairn snapshots --store "$S" --sandbox "$1" --json | json '" ".join(s["snapshot"] for s in j["snapshots"])'; }
stepped() { local ms=$1; shift; LD_PRELOAD=$BUILD/libcairn-clockstep.so CAIRN_TEST_CLOCK_STEP_MS=$ms "$@"; }

for i in 1 2 3 4 5 6; do gen "$T/m$i" 65536 "$i"; done

# ---- backward: the newest snapshot was taken after the clock went back an hour.
a=$(snap "$S" acme back memory="$T/m1")
b=$(stepped -$HOUR snap "$S" acme back memory="$T/m2")
assert_eq "$(latest back)" "$b" "after a backward step the newest commit is the latest"
assert_eq "$(ids back)" "$b $a" "snapshots lists newest commit first"
must cairn snapshots --store "$S" --sandbox back --json >"$T/l.json"
assert_json 'j["snapshots"][0]["time_ms"] < j["snapshots"][1]["time_ms"]' "$T/l.json" \
    "the times still say what the clock said"
# Stepped back further, twice in a row: still commit order.
c=$(stepped -$DAY snap "$S" acme back memory="$T/m3")
assert_eq "$(ids back)" "$c $b $a" "two backward steps"
must cairn gc --store "$S" >/dev/null
assert_eq "$(ids back)" "$c" "gc keeps the newest commit and drops the elders as superseded"
verify "$S" "$c" memory="$T/m3"

# ---- forward: a snapshot taken while the clock ran 10 days ahead, then one after it was
# corrected; the corrected one is newer.
d=$(stepped $((10 * DAY)) snap "$S" acme fwd memory="$T/m1")
e=$(snap "$S" acme fwd memory="$T/m4")
assert_eq "$(ids fwd)" "$e $d" "after a forward step and its correction, commit order"
# gc with the clock still ahead (as a gc during the step would run): nothing is idle for a
# window yet, the older commit is superseded, the newest stays.
stepped $((10 * DAY)) must cairn gc --store "$S" >/dev/null
assert_eq "$(ids fwd)" "$e" "gc during a forward step keeps the newest commit"
verify "$S" "$e" memory="$T/m4"
# What a forward step does to retention (docs/gc.md): idle time is the gc's wall clock minus
# the last activity's, so that gc saw `back` idle 11 days and reclaimed it (free tier: 7).
must cairn sandboxes --store "$S" --json >"$T/sb.json"
assert_json '[x["state"] for x in j["sandboxes"] if x["sandbox"] == "back"] == ["reclaimed"]' "$T/sb.json" \
    "a gc whose clock is 10 days ahead reclaims a sandbox idle 1 day"

# ---- a delete, then a snapshot with the clock stepped back: the sandbox lives again,
# its new snapshot is kept; the one before the delete goes.
f1=$(snap "$S" acme del memory="$T/m1")
must cairn delete --store "$S" --sandbox del >/dev/null
f2=$(stepped -$HOUR snap "$S" acme del memory="$T/m5")
must cairn sandboxes --store "$S" --json >"$T/sb.json"
assert_json '[x["state"] for x in j["sandboxes"] if x["sandbox"] == "del"] == ["hibernated"]' "$T/sb.json" \
    "a snapshot committed after the delete brings the sandbox back"
must cairn gc --store "$S" >/dev/null
assert_eq "$(ids del)" "$f2" "gc keeps the snapshot taken after the delete"
verify "$S" "$f2" memory="$T/m5"

# ---- a snapshot taken while the clock was ahead, then a delete after the correction: the
# delete came later in commit order, so the sandbox is deleted.
g1=$(stepped $((2 * HOUR)) snap "$S" acme del2 memory="$T/m6")
must cairn delete --store "$S" --sandbox del2 >/dev/null
must cairn sandboxes --store "$S" --json >"$T/sb.json"
assert_json '[x["state"] for x in j["sandboxes"] if x["sandbox"] == "del2"] == ["deleted"]' "$T/sb.json" \
    "a delete after the newest commit deletes, though its time is earlier"
must cairn gc --store "$S" >/dev/null
assert_eq "$(count_snapshots "$S" del2)" 0 "gc drops the deleted sandbox"

# ---- tiers: the last `cairn tier` wins, though the clock went back between them.
must cairn tier --store "$S" --tenant acme pro >/dev/null
stepped -$DAY must cairn tier --store "$S" --tenant acme free >/dev/null
must cairn sandboxes --store "$S" --tenant acme --json >"$T/sb.json"
assert_json 'all(x["tier"] == "free" for x in j["sandboxes"])' "$T/sb.json" "the last tier event wins"

# ---- the order survives the index: rebuilt from manifests, then one more backward step.
must cairn fsck --store "$S" --rebuild-index >/dev/null
h=$(stepped -$((3 * DAY)) snap "$S" acme fwd memory="$T/m2")
assert_eq "$(ids fwd)" "$h $e" "after an index rebuild, a backward step still orders by commit"
fsck_ok "$S"
log "ok"
