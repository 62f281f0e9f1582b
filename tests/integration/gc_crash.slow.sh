#!/usr/bin/env bash
# Issue 4, kill -9 during gc: a store where gc reclaims idle sandboxes, drops superseded and
# deleted snapshots and rewrites packs is copied, gc is started on the copy and killed at a
# random moment within its measured duration, many times. After each kill: fsck is clean;
# every snapshot still listed restores byte-exact (the ones that must live always are);
# a reclaimed sandbox whose full snapshots are gone has its files-only snapshot (ls, cat,
# rebuild work); the next gc completes and leaves what an uninterrupted gc leaves.
source "$(dirname "$0")/../lib.sh"
export CAIRN_ACTOR=gc-crash
DUR=${GC_CRASH_SECONDS:-150}
DAY=86400
P=$T/pristine
must cairn init --store "$P" >/dev/null
base_template "$P"

# snapshot NAME TENANT K SEED [EXTRA]: the K-th snapshot of NAME (K > 1: 30 pages and a file
# changed since K-1); inputs kept in $T/in/NAME.K, "NAME ID SPEC" appended to $T/acked.
: >"$T/acked"
snapshot() {
    local name=$1 tenant=$2 k=$3 seed=$4 d=$T/in/$1.$3 id; shift 4
    mkdir -p "$d"
    if [ "$k" = 1 ]; then
        sandbox_tree "$T/in/$name.tree" "$seed"
        gen "$d/memory" $((4 << 20)) "$seed" 85
    else
        cp --sparse=always "$T/in/$name.$((k - 1))/memory" "$d/memory"
        mutate "$d/memory" 30 $((seed + k))
        head -c $((3000 + k * 1000)) /dev/urandom >"$T/in/$name.tree/home/ubuntu/output/report.md"
    fi
    ext4_image "$T/in/$name.tree" "$d/disk"
    gen "$d/vmstate" 100001 $((seed * 10 + k))
    id=$(snap "$P" "$tenant" "$name" memory="$d/memory" vmstate="$d/vmstate" disk="$d/disk" template=base "$@")
    echo "$name $id memory=$d/memory vmstate=$d/vmstate disk=$d/disk" >>"$T/acked"
    cp -a "$T/in/$name.tree" "$d/tree"
}
seed=0
for sb in r1 r2 r3 r4; do            # idle: reclaimed
    seed=$((seed + 1))
    for k in 1 2; do snapshot "$sb" tr "$k" "$seed"; done
done
for sb in a1 a2 a3; do               # active: their older snapshots are superseded
    seed=$((seed + 1))
    for k in 1 2 3 4; do snapshot "$sb" ta "$k" "$seed"; done
done
for k in 1 2 3; do snapshot d1 td "$k" 99; done
FAR=$(($(date +%s) + 8 * DAY))
for sb in a1 a2 a3; do must cairn touch --store "$P" --sandbox "$sb" --at $((FAR - DAY)) >/dev/null; done
PIN=$(awk '$1 == "a1" { n++; if (n == 2) print $2 }' "$T/acked")
must cairn pin --store "$P" --snapshot "$PIN" >/dev/null
must cairn delete --store "$P" --sandbox d1 >/dev/null
echo "a1 $PIN" >"$T/pinned"
fsck_ok "$P"

# The reference: what an uninterrupted gc leaves, and how long it takes (best of 3).
listing() {   # STORE OUT: "SANDBOX full ID" / "SANDBOX files PARENT" lines, sorted
    local sb
    for sb in r1 r2 r3 r4 a1 a2 a3 d1; do
        must cairn snapshots --store "$1" --sandbox "$sb" --json |
            json '"\n".join("%s %s" % (("files", s.get("parent")) if s.get("kind") == "files" else ("full", s["snapshot"])) for s in j["snapshots"])' |
            sed "/./s/^/$sb /"
    done | sort >"$2"
}
best=999999
for i in 1 2 3; do
    rm -rf "$T/ref"
    cp -a "$P" "$T/ref"
    must cairn gc --store "$T/ref" --now "$FAR" --json >"$T/ref.json"
    ms=$(json 'int(j["seconds"] * 1000)' "$T/ref.json")
    [ "$ms" -lt "$best" ] && best=$ms
done
assert_json 'j["reclaimed"] == 4 and j["dropped_snapshots"] == 8 + 8 + 3 and j["packs_rewritten"] + j["packs_deleted"] > 0' \
    "$T/ref.json" "the reference gc reclaims 4, drops 19 (8 reclaimed, 8 superseded, 3 deleted), sweeps packs"
listing "$T/ref" "$T/ref.list"
ref_bytes=$(must cairn stats --store "$T/ref" --json | json 'j["stored_bytes"]')
log "reference gc: ${best} ms, $(json 'j["packs_rewritten"]' "$T/ref.json") packs rewritten, stored $ref_bytes bytes after"

# after_kill STORE: every listed full snapshot restores byte-exact (a dropped one it lists
# may be refused only as dropped, if gc was dropping it); the ones that must live do; a
# sandbox without its full snapshots has its files-only one. Prints RESTORE/FILES/BAD lines.
cat >"$T/check.py" <<'EOF'
import json, subprocess, sys
T, store, cairn = sys.argv[1:4]
acked, order = {}, {}
for line in open(T + "/acked"):
    sb, sid, *spec = line.split()
    acked[sid] = (sb, spec)
    order.setdefault(sb, []).append(sid)
pinned = {l.split()[1] for l in open(T + "/pinned")}
for sb, ids in order.items():
    out = subprocess.run([cairn, "snapshots", "--store", store, "--sandbox", sb, "--json"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode:
        print("BAD snapshots --sandbox %s exited %d: %s" % (sb, out.returncode, out.stderr.strip())); continue
    got = json.loads(out.stdout)["snapshots"]
    full = {g["snapshot"] for g in got if g.get("kind") != "files"}
    files = [g for g in got if g.get("kind") == "files"]
    must = set()
    if sb[0] == "a":
        must = {ids[-1]} | (pinned & set(ids))
    for m in sorted(must - full):
        print("BAD %s: %s must live and is not listed" % (sb, m))
    for f in full:
        if f not in acked:
            print("BAD %s: %s was never acknowledged" % (sb, f)); continue
        print("RESTORE %s %s %s" % ("must" if f in must else "may", f, " ".join(acked[f][1])))
    if sb[0] == "r":
        ok = [f for f in files if f.get("parent") == ids[-1]]
        if ids[-1] not in full and not ok:
            print("BAD %s: its latest full snapshot %s is gone and it has no files-only snapshot from it (%s)" % (
                sb, ids[-1], [f.get("parent") for f in files]))
        if ok:
            print("FILES %s %s" % (sb, ids[-1]))
    elif files:
        print("BAD %s has a files-only snapshot" % sb)
EOF
dropped_ok=0
check_store() {   # STORE
    "$PY" "$T/check.py" "$T" "$1" "$CAIRN_BIN" >"$T/check.out" || fail "check.py failed"
    ! grep -q '^BAD' "$T/check.out" || fail "$(grep '^BAD' "$T/check.out" | head -n 5)"
    local tag a b spec rc
    while read -r tag a b spec; do
        case $tag in
            RESTORE)
                rc=0
                cairn restore --store "$1" --snapshot "$b" --out "$T/r" >/dev/null 2>"$T/r.err" || rc=$?
                if [ "$rc" != 0 ]; then
                    # gc logged the drop and unlinked the manifest; the index record goes after
                    [ "$a" = may ] && grep -q 'dropped by gc' "$T/r.err" && grep -q "\"$b\"" "$1/events.log" ||
                        fail "restore of listed $b (exit $rc): $(cat "$T/r.err")"
                    dropped_ok=$((dropped_ok + 1))
                else
                    local kv
                    for kv in $spec; do
                        cmp -s "${kv#*=}" "$T/r/${kv%%=*}" || fail "restore of $b: ${kv%%=*} differs"
                    done
                fi
                rm -rf "$T/r" ;;
            FILES)
                must cairn cat --store "$1" --snapshot "$a@latest" /home/ubuntu/upload/data.csv >"$T/cat.out"
                local src
                src=$(dirname "$(grep "^$a $b " "$T/acked" | tr ' ' '\n' | grep '^disk=' | cut -d= -f2)")/tree
                cmp -s "$T/cat.out" "$src/home/ubuntu/upload/data.csv" || fail "cat from files-only $a differs"
                must cairn rebuild --store "$1" --sandbox "$a" --out "$T/rb.img" >/dev/null
                e2fsck -fn "$T/rb.img" >"$T/e2fsck.log" 2>&1 || { cat "$T/e2fsck.log" >&2; fail "e2fsck of rebuilt $a"; }
                rm -f "$T/dump"
                debugfs -R "dump /home/ubuntu/output/report.md $T/dump" "$T/rb.img" >/dev/null 2>&1
                cmp -s "$T/dump" "$src/home/ubuntu/output/report.md" || fail "rebuilt $a: report.md differs"
                rm -f "$T/rb.img" ;;
        esac
    done <"$T/check.out"
}

W=$T/work
END=$(($(date +%s) + DUR))
n=0 killed=0 k_plan=0 k_retention=0 k_sweep=0
RANDOM=4242
while [ "$(date +%s)" -lt "$END" ] || [ "$n" -lt 10 ]; do
    n=$((n + 1))
    rm -rf "$W"
    cp -a "$P" "$W"
    delay=$((RANDOM * RANDOM % (best * 12 / 10 + 1)))
    "$CAIRN_BIN" gc --store "$W" --now "$FAR" --json >"$T/gc.out" 2>"$T/gc.err" &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    kill -9 "$pid" 2>/dev/null || true
    rc=0
    { wait "$pid"; } 2>/dev/null || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 137 ] || fail "gc exited $rc before the kill: $(tail -n 3 "$T/gc.err")"
    if [ "$rc" = 137 ]; then
        killed=$((killed + 1))
        # where it was, from what it logged: nothing yet (planning), some of the 4 reclaims
        # and 19 drops, or all of them (sweeping)
        acts=$(grep -Ec '^gc: (reclaimed|dropped) ' "$T/gc.err" || true)
        if [ "$acts" = 0 ]; then k_plan=$((k_plan + 1))
        elif [ "$acts" -lt 23 ]; then k_retention=$((k_retention + 1))
        else k_sweep=$((k_sweep + 1)); fi
    fi
    log_ctx="iteration $n, kill -9 at ${delay} ms (gc exit $rc)"
    log "$log_ctx"
    fsck_ok "$W"
    check_store "$W"
    # the next gc completes and resumes what was interrupted
    must cairn gc --store "$W" --now "$FAR" --json >"$T/gc2.json"
    assert_json 'j["ok"]' "$T/gc2.json" "gc after the kill"
    listing "$W" "$T/after.list"
    diff "$T/ref.list" "$T/after.list" >"$T/list.diff" ||
        fail "$log_ctx: after the next gc the snapshots differ from an uninterrupted gc: $(cat "$T/list.diff")"
    check_store "$W"
    fsck_ok "$W"
    bytes=$(must cairn stats --store "$W" --json | json 'j["stored_bytes"]')
    garbage=$(json 'len(j["garbage"])' "$T/fsck.json")
    [ "$garbage" = 0 ] || log "iteration $n: after the next gc fsck lists garbage: $(json 'j["garbage"][:3]' "$T/fsck.json")"
    assert_cmp $((bytes * 100)) -le $((ref_bytes * 110)) \
        "$log_ctx: stored bytes after the next gc vs an uninterrupted gc ($bytes vs $ref_bytes)"
    must cairn gc --store "$W" --now "$FAR" --json >"$T/gc3.json"
    assert_json 'j["reclaimed"] == 0 and j["dropped_snapshots"] == 0' "$T/gc3.json" "a third gc has nothing left to do"
done
log "$n iterations, $killed killed mid-gc: $k_plan while planning, $k_retention amid reclaims and drops, $k_sweep while sweeping"
log "listed snapshots refused as dropped between the kill and the next gc: $dropped_ok"
assert_cmp "$killed" -ge $((n / 2)) "kills that landed inside a gc run"
log "ok"
