#!/usr/bin/env bash
# Issue 4, gc beside ingests: two writers snapshot sandboxes (a few pages change each time,
# most pages shared across sandboxes, and pages of old, maybe dropped, snapshots copied
# back in, so ingests deduplicate against chunks gc may be sweeping), pin and delete some,
# while gc runs back to back, half of the runs with a clock that reclaims the idle ones.
# Then every snapshot that should live restores byte-exact and fsck --verify-data is clean.
# Last, how long an ingest waits for the store lock while gc runs, against a quiet store.
source "$(dirname "$0")/../lib.sh"
export CAIRN_ACTOR=gc-stress
DUR=${GC_STRESS_SECONDS:-120}
DAY=86400
S=$T/store
must cairn init --store "$S" >/dev/null
mkdir -p "$T/w"
base_template "$S"
NOW0=$(date +%s)
FAR=$((NOW0 + 8 * DAY))          # reclaims every sandbox nobody touched later
KEEP_AT=$((NOW0 + 100 * DAY))    # a touch then keeps an "active" sandbox out of reach

# The memory every sandbox starts from (its kernel and page cache), 2 MiB, 85% holes.
# Inputs are kept small and sparse: every acknowledged snapshot's files stay until the end.
gen "$T/base.mem" $((2 << 20)) 1 85

# next_mem SRC DST SEED: DST = SRC with 8 pages rewritten and 4 pages copied from old
# memory files of any sandbox (their old versions may be in chunks gc is sweeping).
cat >"$T/mem.py" <<'EOF'
import glob, os, random, sys
src, dst, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = random.Random(seed)
data = open(src, "rb").read()
used = [off for off in range(0, len(data), 4096) if data.count(0, off, off + 4096) != 4096]
with open(dst, "wb") as f:                 # a sparse copy: zero pages stay holes
    f.truncate(len(data))
    for off in used:
        f.seek(off)
        f.write(data[off:off + 4096])
    # changes land on pages in use, so the file stays as sparse as it started
    for _ in range(8):
        f.seek(r.choice(used))
        f.write(r.randbytes(4096))
    old = glob.glob(os.path.join(os.path.dirname(os.path.dirname(dst)), "*", "mem.*"))
    for _ in range(4 if old else 0):
        try:
            with open(r.choice(old), "rb") as o:
                for _ in range(16):
                    o.seek(r.randrange(len(data) // 4096) * 4096)
                    b = o.read(4096)
                    if len(b) == 4096 and b.count(0) != 4096:
                        f.seek(r.choice(used))
                        f.write(b)
                        break
        except OSError:
            pass
EOF

# Sandboxes: a* are touched far ahead right after their first snapshot (taken before the
# stress starts, so no gc can reclaim them in between): never reclaimed; one snapshot in 4
# of theirs is pinned, so a sample of what was ingested beside gc is checked at the end;
# i* are left idle, so a gc with the far clock reclaims them and a later snapshot revives
# them. Every acknowledged snapshot is recorded as "SANDBOX ID memory=.. vmstate=.. disk=.."
# in $T/acked.W.
bad() { echo "$*" >>"$T/FAILED"; echo "$*" >&2; exit 1; }
newsb() {                           # W NAME SEED
    mkdir -p "$T/w/$2"
    sandbox_tree "$T/w/$2/tree" "$3"
    "$PY" "$T/mem.py" "$T/base.mem" "$T/w/$2/mem.0" "$3"
    echo 0 >"$T/w/$2/ver"
}
snap_one() {                        # W SANDBOX SEED: prints the id
    local w=$1 sb=$2 seed=$3 d=$T/w/$2 k rc=0 t0 t1 id
    k=$(($(cat "$d/ver") + 1))
    "$PY" "$T/mem.py" "$d/mem.$((k - 1))" "$d/mem.$k" "$seed"
    gen "$d/vm.$k" 60001 "$seed"
    if [ ! -e "$d/disk.$((k - 1))" ] || [ $((k % 5)) = 0 ]; then
        head -c $((5000 + seed % 30000)) /dev/urandom >"$d/tree/home/ubuntu/output/report.md"
        ext4_image "$d/tree" "$d/disk.tmp" 2>/dev/null || bad "writer $w: mke2fs"
        cp --sparse=always "$d/disk.tmp" "$d/disk.$k"
        rm -f "$d/disk.tmp"
    else
        ln "$d/disk.$((k - 1))" "$d/disk.$k"
    fi
    echo "$k" >"$d/ver"
    t0=$EPOCHREALTIME
    cairn snapshot --store "$S" --tenant "t$w" --sandbox "$sb" --template base --memory "$d/mem.$k" \
        --vmstate "$d/vm.$k" --disk "$d/disk.$k" --json >"$d/snap.$k.json" 2>"$d/snap.$k.err" || rc=$?
    t1=$EPOCHREALTIME
    [ "$rc" = 0 ] || bad "writer $w: snapshot of $sb exited $rc: $(cat "$d/snap.$k.err")"
    id=$(json 'j["snapshot"]' "$d/snap.$k.json") || bad "writer $w: snapshot JSON of $sb: $(cat "$d/snap.$k.json")"
    echo "$sb $id memory=$d/mem.$k vmstate=$d/vm.$k disk=$d/disk.$k" >>"$T/acked.$w"
    echo "$id"
}
for w in 1 2; do
    : >"$T/sbs.$w"
    : >"$T/pool.$w"
    for i in 1 2 3 4 5 6 7; do
        newsb "$w" "a$w-$i" $((w * 1000 + i))
        snap_one "$w" "a$w-$i" $((w * 1000 + i)) >/dev/null
        must cairn touch --store "$S" --sandbox "a$w-$i" --at "$KEEP_AT" >/dev/null
        [ "$i" -le 2 ] && echo "a$w-$i" >>"$T/sbs.$w" || echo "a$w-$i" >>"$T/pool.$w"
    done
    for i in 1 2; do newsb "$w" "i$w-$i" $((w * 1000 + 100 + i)); echo "i$w-$i" >>"$T/sbs.$w"; done
done

# writer W END: snapshots its sandboxes at random, pins some, and now and then deletes one
# (which then gets no snapshot) and takes a new one in its place.
writer() {
    local w=$1 end=$2 n=0 nnew=2 sb id j victim want sbs pool
    RANDOM=$((w * 7919 + 13))
    mapfile -t sbs <"$T/sbs.$w"
    mapfile -t pool <"$T/pool.$w"
    while [ "$(date +%s)" -lt "$end" ]; do
        n=$((n + 1))
        sb=${sbs[RANDOM % ${#sbs[@]}]}
        id=$(snap_one "$w" "$sb" $((w * 100000 + n))) || exit 1
        if [ "${sb:0:1}" = a ] && [ $((RANDOM % 4)) = 0 ]; then
            cairn pin --store "$S" --snapshot "$id" >/dev/null 2>"$T/pin.$w.err" ||
                bad "writer $w: pin $id of $sb: $(cat "$T/pin.$w.err")"
            echo "$sb $id" >>"$T/pinned.$w"
        fi
        if [ $((n % 25)) = 12 ]; then
            # one delete in 4 takes an a* (replaced from the pool), the others an i*
            want=i
            [ $((n % 100)) = 87 ] && [ ${#pool[@]} -gt 0 ] && want=a
            for j in "${!sbs[@]}"; do [ "${sbs[j]:0:1}" = "$want" ] && break; done
            victim=${sbs[j]}
            cairn delete --store "$S" --sandbox "$victim" >/dev/null 2>"$T/del.$w.err" ||
                bad "writer $w: delete $victim: $(cat "$T/del.$w.err")"
            echo "$victim" >>"$T/deleted.$w"
            sbs=("${sbs[@]:0:j}" "${sbs[@]:j+1}")
            if [ "${victim:0:1}" = a ] && [ ${#pool[@]} -gt 0 ]; then
                sbs+=("${pool[0]}")
                pool=("${pool[@]:1}")
            else
                nnew=$((nnew + 1))
                newsb "$w" "i$w-$nnew" $((w * 1000 + 100 + nnew))
                sbs+=("i$w-$nnew")
            fi
        fi
    done
}
gcloop() {
    local end=$1 i=0 rc now
    while [ "$(date +%s)" -lt "$end" ]; do
        i=$((i + 1))
        now=$(date +%s)
        [ $((i % 2)) = 0 ] && now=$FAR
        rc=0
        cairn gc --store "$S" --now "$now" --json >"$T/gc.$i.json" 2>"$T/gc.$i.err" || rc=$?
        if [ "$rc" != 0 ]; then
            echo "gc --now $now exited $rc: $(tail -n 5 "$T/gc.$i.err") $(cat "$T/gc.$i.json")" >>"$T/FAILED"
            exit 1
        fi
        sleep "0.$((RANDOM % 5))"
    done
}

END=$(($(date +%s) + DUR))
log "snapshots and gc in parallel for ${DUR}s"
writer 1 "$END" & p1=$!
writer 2 "$END" & p2=$!
gcloop "$END" & p3=$!
at_exit "kill $p1 $p2 $p3 2>/dev/null"
rc=0
wait $p1 || rc=1
wait $p2 || rc=1
wait $p3 || rc=1
[ ! -e "$T/FAILED" ] || fail "$(head -n 5 "$T/FAILED")"
[ "$rc" = 0 ] || fail "a writer or the gc loop failed"

cat "$T"/acked.* >"$T/acked"
cat "$T"/pinned.* >"$T/pinned" 2>/dev/null || : >"$T/pinned"
cat "$T"/deleted.* >"$T/deleted" 2>/dev/null || : >"$T/deleted"
"$PY" - "$T" <<'EOF' >&2
import glob, json, sys
runs = [json.load(open(f)) for f in glob.glob(sys.argv[1] + "/gc.*.json")]
tot = lambda k: sum(r[k] for r in runs)
print("gc-stress: %d acknowledged snapshots, %d gc runs: %d reclaims, %d snapshots dropped, "
      "%d packs deleted, %d rewritten, %d chunks removed; gc took %.2f s at most" % (
      sum(1 for _ in open(sys.argv[1] + "/acked")), len(runs), tot("reclaimed"), tot("dropped_snapshots"),
      tot("packs_deleted"), tot("packs_rewritten"), tot("chunks_removed"), max(r["seconds"] for r in runs)))
EOF
json_sum() { cat "$T"/gc.*.json | "$PY" -c "import json,sys; print(sum(json.loads(l)['$1'] for l in sys.stdin))"; }
# The run must have exercised what it claims to test.
assert_cmp "$(json_sum reclaimed)" -gt 0 "reclaims during the stress"
assert_cmp "$(json_sum dropped_snapshots)" -gt 0 "drops during the stress"
assert_cmp $(($(json_sum packs_deleted) + $(json_sum packs_rewritten))) -gt 0 "packs swept during the stress"
assert_cmp "$(wc -l <"$T/deleted")" -gt 0 "deletes during the stress"

# check: for each sandbox not deleted, its latest is its last acknowledged snapshot, or a
# files-only snapshot made from it (an idle one reclaimed); every full snapshot listed is
# an acknowledged one and restores byte-exact; pins are listed. Prints "RESTORE ID SPEC" and
# "RECLAIMED SANDBOX" lines for the shell; problems as "BAD ...".
cat >"$T/check.py" <<'EOF'
import json, subprocess, sys
T, store, cairn, final = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "final"
acked, order = {}, {}
for line in open(T + "/acked"):
    sb, sid, *spec = line.split()
    acked[sid] = (sb, spec)
    order.setdefault(sb, []).append(sid)
pins = {}
for line in open(T + "/pinned"):
    sb, sid = line.split()
    pins.setdefault(sb, set()).add(sid)
deleted = {l.strip() for l in open(T + "/deleted")}
def snaps(sb):
    out = subprocess.run([cairn, "snapshots", "--store", store, "--sandbox", sb, "--json"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode:
        print("BAD snapshots --sandbox %s exited %d: %s" % (sb, out.returncode, out.stderr.strip()))
        return []
    return json.loads(out.stdout)["snapshots"]
for sb, ids in sorted(order.items()):
    got = snaps(sb)
    if sb in deleted:
        if final and got:
            print("BAD deleted sandbox %s still has %d snapshots after gc" % (sb, len(got)))
        continue
    if not got:
        print("BAD %s has no snapshot at all (last acknowledged %s)" % (sb, ids[-1])); continue
    latest = got[0]
    if latest.get("kind") == "files":
        if sb[0] != "i" or latest.get("parent") != ids[-1]:
            print("BAD %s: latest is files-only %s from %s, last acknowledged is %s" % (
                sb, latest["snapshot"], latest.get("parent"), ids[-1]))
        print("RECLAIMED %s" % sb)
    elif latest["snapshot"] != ids[-1]:
        print("BAD %s: latest is %s, last acknowledged is %s" % (sb, latest["snapshot"], ids[-1]))
    listed = {g["snapshot"] for g in got}
    for p in pins.get(sb, ()):
        if p not in listed:
            print("BAD pinned %s of %s is gone" % (p, sb))
    for g in got:
        if g.get("kind") == "files":
            if g.get("parent") not in ids:
                print("BAD %s: files-only %s from unknown %s" % (sb, g["snapshot"], g.get("parent")))
            continue
        if g["snapshot"] not in acked:
            print("BAD %s: snapshot %s was never acknowledged" % (sb, g["snapshot"])); continue
        print("RESTORE %s %s" % (g["snapshot"], " ".join(acked[g["snapshot"]][1])))
EOF
check() {
    "$PY" "$T/check.py" "$T" "$S" "$CAIRN_BIN" "$1" >"$T/check.out" || fail "check.py failed"
    ! grep -q '^BAD' "$T/check.out" || fail "$(grep '^BAD' "$T/check.out" | head -n 5)"
    local tag id spec nr=0 nrec=0
    while read -r tag id spec; do
        case $tag in
            RESTORE)
                # shellcheck disable=SC2086
                verify "$S" "$id" $spec; nr=$((nr + 1)) ;;
            RECLAIMED)
                nrec=$((nrec + 1))
                must cairn ls --store "$S" --snapshot "$id@latest" --recursive --json >"$T/ls.json"
                assert_json 'any(e["path"] == "/home/ubuntu/upload/data.csv" for e in j["entries"])' "$T/ls.json" \
                    "ls of reclaimed $id"
                must cairn rebuild --store "$S" --sandbox "$id" --out "$T/rb.img" >/dev/null
                e2fsck -fn "$T/rb.img" >"$T/e2fsck.log" 2>&1 || { cat "$T/e2fsck.log" >&2; fail "e2fsck of rebuilt $id"; }
                rm -f "$T/rb.img" ;;
        esac
    done <"$T/check.out"
    log "$1: $nr snapshots restored byte-exact, $nrec reclaimed sandboxes listed and rebuilt"
}
check stress
fsck_ok "$S" --verify-data
must cairn gc --store "$S" --json >"$T/gc.final.json"
check final
fsck_ok "$S" --verify-data

# --- How long does an ingest wait for gc? The same small snapshot (one sandbox, 8 pages
# changed) first on a quiet store, then while gc runs back to back, the first run being a
# big one (every sandbox reclaimed, packs rewritten). Only gc and the probe use the store.
probe_snap() {
    local k=$1 d=$T/w/probe
    "$PY" "$T/mem.py" "$d/mem.$((k - 1))" "$d/mem.$k" $((900000 + k))
    local t0=$EPOCHREALTIME rc=0
    # strace -T times the flock calls: the time spent waiting for the lock, exactly.
    local env=()
    [ -z "$STRACE" ] || env=("${NOLEAK[@]}")
    "${env[@]}" timeout -k 5 "$CAIRN_TIMEOUT" ${STRACE:+strace -f -qq --seccomp-bpf -e trace=flock -T -o "$T/probe.strace"} \
        "$CAIRN_BIN" snapshot --store "$S" --tenant tp --sandbox probe --memory "$d/mem.$k" --json \
        >"$T/probe.json" 2>"$T/probe.err" || rc=$?
    local t1=$EPOCHREALTIME
    [ "$rc" = 0 ] || fail "probe snapshot exited $rc: $(cat "$T/probe.err")"
    local lockw=-1
    [ -z "$STRACE" ] || lockw=$(awk -F'<' '/flock\(/ { s += $NF + 0 } END { printf "%.6f", s }' "$T/probe.strace")
    echo "$t0 $t1 $(grep -c 'waiting for another' "$T/probe.err") $lockw"
}
STRACE=$(command -v strace || true)
# LeakSanitizer cannot run under ptrace (make asan): a cairn under strace runs without it,
# the leak check is left to the runs without strace.
NOLEAK=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0")
mkdir -p "$T/w/probe"
cp "$T/base.mem" "$T/w/probe/mem.0"
for k in $(seq 1 15); do probe_snap "$k" >>"$T/quiet.times"; done
must cairn touch --store "$S" --sandbox probe --at $((NOW0 + 1000 * DAY)) >/dev/null
END=$(($(date +%s) + 20))
(
    i=0
    while [ "$(date +%s)" -lt "$END" ]; do
        i=$((i + 1))
        cairn gc --store "$S" --now $((NOW0 + 300 * DAY)) --json >"$T/gcb.$i.json" 2>/dev/null \
            || echo "gc during the probe failed" >>"$T/FAILED"
    done
) &
pg=$!
at_exit "kill $pg 2>/dev/null"
k=15
while [ "$(date +%s)" -lt "$END" ]; do k=$((k + 1)); probe_snap "$k" >>"$T/busy.times"; done
wait $pg
[ ! -e "$T/FAILED" ] || fail "$(head -n 5 "$T/FAILED")"
verify "$S" "$(json 'j["snapshot"]' "$T/probe.json")" "memory=$T/w/probe/mem.$k"
fsck_ok "$S" --verify-data
"$PY" - "$T" <<'EOF' >"$T/wait.txt"
import glob, json, statistics, sys
T = sys.argv[1]
def load(f): return [tuple(float(x) for x in l.split()) for l in open(f)]
quiet, busy = load(T + "/quiet.times"), load(T + "/busy.times")
base = statistics.median(b - a for a, b, _, _ in quiet)
excess = max(max(b - a for a, b, _, _ in busy) - base, 0)
lock = sorted(w for _, _, _, w in busy if w >= 0)
gcs = [json.load(open(f)) for f in glob.glob(T + "/gcb.*.json")]
print("%d" % round((lock[-1] if lock else excess) * 1000))
print("ingest wait on gc: a snapshot takes %.0f ms on a quiet store (median of %d); during %d gc runs "
      "(the longest %.2f s, %d reclaims, %d packs rewritten) %d snapshots, %d printed 'waiting'; %s"
      "the slowest took %.0f ms more than the quiet median (CPU shared with gc included)" % (
      base * 1000, len(quiet), len(gcs), max(g["seconds"] for g in gcs), sum(g["reclaimed"] for g in gcs),
      sum(g["packs_rewritten"] for g in gcs), len(busy), sum(1 for x in busy if x[2]),
      "time blocked in flock (strace): median %.1f ms, 90th percentile %.1f ms, max %.1f ms; " % (
          statistics.median(lock) * 1000, lock[int(len(lock) * 0.9)] * 1000, lock[-1] * 1000)
      if lock else "", excess * 1000))
EOF
log "$(tail -n 1 "$T/wait.txt")"
read -r wait_ms <"$T/wait.txt"
# The issue wants <= 100 ms; the bound here is generous (2 cores, timing noise): the real
# figure is printed above.
assert_cmp "$wait_ms" -le 2000 "longest wait of an ingest for gc (ms; flock time if strace is here)"

# --- A delete that waits for the lock while gc reclaims its sandbox, as one does while a gc
# section holds it (strace makes the wait long enough to be sure): the delete returns after
# the reclaim, so the sandbox must end deleted and its files go at the next gc.
if [ -n "$STRACE" ]; then
    D=$T/delrace
    must cairn init --store "$D" >/dev/null
    snap "$D" tr x "memory=$T/w/probe/mem.1" "disk=$T/w/a1-1/disk.1" >/dev/null
    timeout 60 "${NOLEAK[@]}" strace -qq -f -o /dev/null -e trace=flock -e inject=flock:delay_enter=1500000 \
        "$CAIRN_BIN" delete --store "$D" --sandbox x >"$T/delrace.out" 2>&1 &
    pd=$!
    sleep 0.3
    must cairn gc --store "$D" --now $(($(date +%s) + 8 * DAY)) --json >"$T/delrace.gc.json"
    assert_json 'j["reclaimed"] == 1' "$T/delrace.gc.json" "gc reclaims x while the delete waits"
    wait $pd || fail "delete during gc failed: $(cat "$T/delrace.out")"
    must cairn gc --store "$D" --now $(($(date +%s) + 8 * DAY)) --json >/dev/null
    must cairn sandboxes --store "$D" --json >"$T/delrace.sb.json"
    [ "$(count_snapshots "$D" x)" = 0 ] || fail "a sandbox deleted while gc reclaimed it keeps its files \
after the next gc: $(cat "$T/delrace.sb.json") (delete said: $(cat "$T/delrace.out"))"
fi
log "ok"
