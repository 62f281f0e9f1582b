#!/usr/bin/env bash
# gc across the nodes of one bucket (docs/s3.md, "gc across nodes"), against a real RGW:
#  - nodes a and b snapshot continuously (their own sandboxes and one they share) while
#    node c runs `cairn gc` again and again: snapshots are superseded and dropped, sparse
#    packs rewritten, fossils deleted two epochs later. Afterwards every acknowledged
#    snapshot the bucket still has restores byte-exact on a fresh node (index rebuilt from
#    the bucket), every sandbox's newest acknowledged snapshot is still there, fsck is
#    clean, and gc really deleted packs (bytes freed > 0);
#  - node s, whose index was built before gc rewrote and deleted the packs it points into,
#    restores every live snapshot it knows with no manual step;
#  - a gc lease held by a dead node blocks deletes until it expires; then it is taken over;
#  - a snapshot whose commit comes later than the commit bound is not acknowledged.
# CAIRN_TEST_GC_SECONDS (default 20) is how long the nodes ingest.
. "$(dirname "$0")/../lib.sh"
need_s3

SECS=${CAIRN_TEST_GC_SECONDS:-20}
# The bounds every node must agree on, small so that epochs pass within the test.
# (stretched by CAIRN_TIME_SCALE under sanitizers and valgrind, where a snapshot is slower)
SCALE=${CAIRN_TIME_SCALE:-1}
export CAIRN_S3_COMMIT_BOUND_MS=$((3000 * SCALE)) CAIRN_S3_CLOCK_MARGIN_MS=500 CAIRN_GC_LEASE_SETTLE_MS=400
RIPE=$((3 * SCALE + 1))         # seconds: bound + margin, rounded up

B=$(s3_bucket)
for n in a b c; do s3_init "$T/$n" "$B" v4; done

# mem FILE SANDBOX K: the memory of snapshot K of SANDBOX: 192 pages; page j changes every
# 1 + j%4 snapshots (so parents share most pages, and superseded snapshots leave sparse
# packs), pages with j%16 == 15 are the same in every sandbox (dedup across sandboxes).
# Sandboxes st* keep only their pages j%4 == 0 from one snapshot to the next.
mem() {
    "$PY" - "$@" <<'EOF'
import random, sys
path, sb, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "wb") as f:
    for j in range(192):
        v = (0 if j % 4 == 0 else k) if sb.startswith("st") else k // (1 + j % 4)
        seed = f"common-{j}" if j % 16 == 15 else f"{sb}-{j}-{v}"
        f.write(random.Random(seed).randbytes(4096))
EOF
}

# acked NODE SANDBOX K: one snapshot; on success "ID SANDBOX FILE" goes to $T/acked.
snap_one() {
    local node=$1 sb=$2 k=$3 f out
    f=$T/data/$sb-$k-$node
    mem "$f" "$sb" "$k"
    if out=$(timeout 120 "$CAIRN_BIN" snapshot --store "$T/$node" --tenant acme --sandbox "$sb" --memory "$f" \
             2>>"$T/$node.err"); then
        echo "$(tail -n 1 <<<"$out") $sb $f" >>"$T/acked"
    else
        echo "$sb $k" >>"$T/failed.$node"
    fi
}
mkdir -p "$T/data"

# A snapshot whose writer has been open longer than the commit bound is not acknowledged:
# no manifest in the bucket (gc may have deleted a fossil it relied on).
mem "$T/late" late 0
CAIRN_S3_COMMIT_BOUND_MS=1 expect 1 cairn snapshot --store "$T/a" --tenant acme --sandbox late \
    --memory "$T/late" >/dev/null
assert_grep "past the bound" "$T/err" "a commit past the bound"
[ "$(s3_curl GET "$B?list-type=2&prefix=manifests%2F")" = 200 ] || fail "cannot list the bucket"
! grep -q "<Key>manifests/" "$T/s3_curl.out" || fail "a commit past the bound left a manifest"

# Sandbox st: two snapshots, then never again. Its second one keeps a quarter of the first's
# pages, so once the first is dropped its pack is sparse: gc copies the live third and
# deletes the pack. Node s builds its index now, pointing into that pack.
snap_one a st 0
snap_one a st 1
[ "$(wc -l <"$T/acked")" = 2 ] || fail "the first snapshots failed: $(cat "$T"/*.err)"
st_id=$(tail -n 1 "$T/acked" | cut -d' ' -f1)
s3_init "$T/s" "$B" v4
fsck_ok "$T/s" --rebuild-index

writer() {                      # writer NODE SANDBOX...: snapshots until $T/stop exists
    local node=$1 k=0 sb; shift
    while [ ! -e "$T/stop" ]; do
        k=$((k + 1))
        for sb in "$@"; do snap_one "$node" "$sb" "$k"; sleep 0.3; done
    done
}
gcloop() {
    local i=0
    while [ ! -e "$T/stop" ]; do
        i=$((i + 1))
        timeout 120 "$CAIRN_BIN" gc --store "$T/c" --json >"$T/gc.$i.json" 2>>"$T/gc.err" \
            || echo "gc run $i failed" >>"$T/gc.failed"
        sleep 1
    done
}
log "ingesting on a and b for ${SECS}s while c runs gc"
writer a a1 a2 shared & pa=$!
writer b b1 b2 shared & pb=$!
gcloop & pg=$!
sleep "$SECS"
touch "$T/stop"
wait $pa $pb $pg
[ ! -e "$T/gc.failed" ] || fail "$(cat "$T/gc.failed"): $(tail -n 5 "$T/gc.err")"
n_acked=$(wc -l <"$T/acked")
n_failed=$(cat "$T"/failed.a "$T"/failed.b 2>/dev/null | wc -l) || true
log "$n_acked snapshots acknowledged, $n_failed failed"
assert_cmp "$n_acked" -ge 12 "acknowledged snapshots"
assert_cmp "$n_failed" -le $((n_acked / 4)) "failed snapshots"

# A dead node's lease: gc deletes nothing while it holds one, even fossils old enough; once
# it expired, the next gc takes it over and deletes them. st2's first snapshot, superseded,
# leaves a sparse pack: fossils are certain.
snap_one a st2 0
snap_one a st2 1
must cairn gc --store "$T/c" --json >"$T/gc.l0.json"
assert_json 'j["fossils_recorded"] > 0' "$T/gc.l0.json" "fossils before the lease test"
# With a fossil pending, a writer names none of its parent's chunks unlooked-up, not even
# those at other offsets (snapshotter/ingest.c, docs/s3.md rule 4): st2's pages moved, its
# kept quarter (page j%4 == 0: only in st2's first pack, a fossil now) behind a hole, so a
# writer that took them from its parent's recipe would store none of them again.
"$PY" - "$T/data/st2-moved" <<'EOF2'
import random, sys
pages = [j for j in range(192) if j % 4] + [None] * 64 + [j for j in range(192) if j % 4 == 0]
with open(sys.argv[1], "wb") as f:
    for at, j in enumerate(pages):
        if j is not None:
            f.seek(at * 4096)
            seed = f"common-{j}" if j % 16 == 15 else f"st2-{j}-{0 if j % 4 == 0 else 1}"   # as mem()
            f.write(random.Random(seed).randbytes(4096))
    f.truncate(len(pages) * 4096)
EOF2
must cairn snapshot --store "$T/a" --tenant acme --sandbox st2 --memory "$T/data/st2-moved" --json >"$T/st2m.json"
assert_json 'j["new_chunks"] >= 48' "$T/st2m.json" "the moved pages of a fossil stored again"
echo "$(json 'j["snapshot"]' "$T/st2m.json") st2 $T/data/st2-moved" >>"$T/acked"
# The lease outlives the wait for ripe fossils by 8 s, so a gc slowed by a loaded machine
# still starts (and lists, and decides) while it holds. It ends its life after its
# Last-Modified (+ the listing's 1 s rounding), on the bucket's clock (here the same).
ttl=$((RIPE * 1000 + 8000))
until_ms=$(( $(date +%s%3N) + ttl + 1000 ))
printf 'node=abcdef\nttl_ms=%s\nnonce=00000000000000ff\n' "$ttl" >"$T/lease"
[ "$(s3_curl PUT "$B/gc/lease" --data-binary @"$T/lease")" = 200 ] || fail "cannot plant a lease"
sleep "$RIPE"
must cairn gc --store "$T/c" --json >"$T/gc.l1.json"
assert_json 'j["sweep_skipped"] and j["lease_holder"] == "abcdef" and j["packs_deleted"] == 0' "$T/gc.l1.json" \
    "gc under another node's lease"
# expired = past its time plus the clock margin
while [ "$(date +%s%3N)" -le $((until_ms + 700)) ]; do sleep 0.2; done
cairn gc --store "$T/c" --json >"$T/gc.l2.json" 2>"$T/l2.err" || fail "gc after the lease expired: $(cat "$T/l2.err")"
assert_json 'not j["sweep_skipped"] and j["packs_deleted"] > 0' "$T/gc.l2.json" "gc that took over an expired lease"
assert_grep "took over the gc lease of node abcdef" "$T/l2.err"
[ "$(s3_curl GET "$B/gc/lease")" = 404 ] || fail "the lease was not released"

"$PY" - "$T" >"$T/gcsum" <<'EOF'
import glob, json, sys
d, f, r, rs, dr = 0, 0, 0, 0, 0
runs = glob.glob(sys.argv[1] + "/gc.*.json")
for p in runs:
    j = json.load(open(p))
    d += j["packs_deleted"]; f += j["freed_bytes"]; r += j["packs_rewritten"]
    rs += j["fossils_resurrected"]; dr += j["dropped_snapshots"]
print(len(runs), dr, r, d, f, rs)
EOF
read -r runs dropped rewritten deleted freed resurrected <"$T/gcsum"
log "$runs gc runs: $dropped snapshots dropped, $rewritten packs rewritten, $deleted packs deleted" \
    "($freed bytes freed), $resurrected fossils resurrected"
assert_cmp "$dropped" -gt 0 "snapshots dropped by gc"
assert_cmp "$rewritten" -gt 0 "packs rewritten by gc"
assert_cmp "$deleted" -gt 0 "packs deleted by gc"
assert_cmp "$freed" -gt 0 "bytes freed by gc"

# A fresh node: every snapshot the bucket has was acknowledged and restores byte-exact;
# every sandbox's newest acknowledged snapshot is among them.
s3_init "$T/d" "$B" v4
fsck_ok "$T/d" --rebuild-index
# lists NODE: "ID SANDBOX" of every snapshot NODE lists.
lists() {
    local sb
    for sb in st st2 a1 a2 b1 b2 shared; do
        cairn snapshots --store "$T/$1" --sandbox "$sb" --json \
            | json '"\n".join(s["snapshot"] + " " + s["sandbox"] for s in j["snapshots"])'
    done | grep . || true
}
lists d >"$T/live"
while read -r id sb; do
    line=$(grep "^$id " "$T/acked") || fail "node d lists $id of $sb, never acknowledged"
    verify "$T/d" "$id" "memory=$(cut -d' ' -f3 <<<"$line")"
done <"$T/live"
live=$(wc -l <"$T/live")
for sb in st st2 a1 a2 b1 b2 shared; do
    newest=$(grep " $sb " "$T/acked" | cut -d' ' -f1 | sort | tail -n 1)
    grep -q "^$newest " "$T/live" || fail "the newest acknowledged snapshot of $sb ($newest) is gone"
done
log "$live live snapshots restore byte-exact on a fresh node"
fsck_ok "$T/d" --verify-data

# The stale node: its index still points into packs gc rewrote and deleted. First with a
# reader of the node holding its lock, so that no open refreshes the index: lookups find the
# chunks through the bucket's deletion records (store/gone.c). Then as usual: the open
# refreshes, the index catches up, and fsck of the node is clean.
exec 9<"$T/s/lock"
flock -s 9
verify "$T/s" "$st_id" "memory=$(grep "^$st_id " "$T/acked" | cut -d' ' -f3)"
exec 9<&-
n=0
while read -r id sb; do
    verify "$T/s" "$id" "memory=$(grep "^$id " "$T/acked" | cut -d' ' -f3)"
    n=$((n + 1))
done <"$T/live"
fsck_ok "$T/s"
log "the stale node restored $n live snapshots"

# A stepped wall clock never ripens a fossil early (HOSTILE2.md 2): a gc whose clock jumped
# forward by an hour used to delete the packs another gc made fossils a second before, under
# a writer that had deduplicated against them and committed after (its acknowledged
# snapshot then missed chunks). The same with a clock that was an hour behind when it
# recorded them and then stepped right. Once the bound really passed they go.
stepped() { LD_PRELOAD=$BUILD/libcairn-clockstep.so CAIRN_TEST_CLOCK_STEP_MS=$1 "$CAIRN_BIN" "${@:2}"; }
for step in 3600000 -3600000; do
    n=p$step                                  # a bucket each: the other's fossils ripen meanwhile
    s3_init "$T/$n" "$(s3_bucket)" v4
    snap_one "$n" step 0
    must cairn delete --store "$T/$n" --sandbox step >/dev/null
    if [ "$step" -gt 0 ]; then
        must cairn gc --store "$T/$n" --json >"$T/step.f$step.json"
        stepped "$step" gc --store "$T/$n" --json >"$T/step.d$step.json" 2>"$T/step.err" || fail "gc: $(cat "$T/step.err")"
    else
        stepped "$step" gc --store "$T/$n" --json >"$T/step.f$step.json" 2>"$T/step.err" || fail "gc: $(cat "$T/step.err")"
        must cairn gc --store "$T/$n" --json >"$T/step.d$step.json"
    fi
    assert_json 'j["fossils_recorded"] > 0' "$T/step.f$step.json" "fossils of a deleted sandbox (clock step $step ms)"
    assert_json 'j["packs_deleted"] == 0' "$T/step.d$step.json" \
        "packs deleted a moment after they became fossils (clock step $step ms)"
done
sleep "$RIPE"
for step in 3600000 -3600000; do
    must cairn gc --store "$T/p$step" --json >"$T/step.last.json"
    assert_json 'j["packs_deleted"] > 0' "$T/step.last.json" "fossils deleted once the bound passed (step $step ms)"
done

log "ok"
