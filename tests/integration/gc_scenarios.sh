#!/usr/bin/env bash
# Issue 4, retention by scenario, with gc --now: free and pro sandboxes just under and just
# over 7 and 21 idle days, a touch that saves one, an upgrade to pro that saves one, a
# downgrade that reclaims one, a deleted one, superseded and pinned snapshots, a disk gc
# cannot read; --dry-run changes nothing; after gc: what restores (byte-exact), what lists,
# what rebuilds (e2fsck, debugfs), fsck; a second gc does nothing; and after reclaiming
# sandboxes holding ~90% of the data, the store is at most 1.25x what the rest needs.
#
# With CAIRN_TEST_GC_S3=1 (tests/integration/s3_gc_scenarios.sh) every store is a node over
# its own bucket of the test RGW: the same scenarios, with gc across nodes' two-step
# collection (a run records fossils; the run an epoch later deletes them: gc_full), and
# "changes nothing" checked on the bucket, which is the store there.
source "$(dirname "$0")/../lib.sh"
export CAIRN_ACTOR=gc-scenarios
DAY=86400
ON_S3=${CAIRN_TEST_GC_S3:-}
if [ -n "$ON_S3" ]; then
    need_s3
    # (stretched by CAIRN_TIME_SCALE under sanitizers and valgrind, where a snapshot is slower)
    export CAIRN_S3_COMMIT_BOUND_MS=$((2000 * ${CAIRN_TIME_SCALE:-1})) CAIRN_S3_CLOCK_MARGIN_MS=500 \
        CAIRN_GC_LEASE_SETTLE_MS=400
    RIPE=$((2 * ${CAIRN_TIME_SCALE:-1} + 1))   # seconds: bound + margin, rounded up
fi
# new_store DIR: an empty store (S3: a node over a new bucket; its name in DIR.bucket)
new_store() {
    if [ -n "$ON_S3" ]; then
        s3_bucket >"$1.bucket"
        s3_init "$1" "$(cat "$1.bucket")" v4
    else
        must cairn init --store "$1" >/dev/null
    fi
}
# gc_full STORE JSON GC-ARGS...: one gc; on S3 a second one an epoch later, which deletes
# what the first made fossils (its JSON in JSON.2).
gc_full() {
    local store=$1 out=$2; shift 2
    must cairn gc --store "$store" "$@" --json >"$out"
    if [ -n "$ON_S3" ]; then
        cp "$T/err" "$T/err.1"
        sleep "$RIPE"
        must cairn gc --store "$store" "$@" --json >"$out.2"
        cat "$T/err.1" "$T/err" >"$T/err.both" && mv "$T/err.both" "$T/err"   # both runs' logs
    fi
}
# bucket_fp STORE: the objects of a store's bucket (name, size, ETag), sorted; PREFIX...
# keeps only those names.
bucket_fp() {
    local store=$1; shift
    [ "$(s3_curl GET "$(cat "$store.bucket")?list-type=2&max-keys=1000")" = 200 ] || fail "cannot list the bucket"
    "$PY" - "$T/s3_curl.out" "$@" <<'PYEOF'
import re, sys
x = open(sys.argv[1]).read()
assert "<IsTruncated>false</IsTruncated>" in x, "more than 1000 objects"
keep = sys.argv[2:]
for c in sorted(re.findall(r"<Contents>(.*?)</Contents>", x, re.S)):
    k = re.search(r"<Key>(.*?)</Key>", c).group(1)
    if not keep or any(k.startswith(p) for p in keep):
        print(k, re.search(r"<Size>(.*?)</Size>", c).group(1), re.search(r"<ETag>(.*?)</ETag>", c).group(1))
PYEOF
}
S=$T/store
new_store "$S"

base_template "$S"

# mk NAME SEED: inputs of sandbox NAME in $T/in/NAME: its tree, disk, a 4 MiB memory file
# (85% holes) and a vmstate whose size is not a multiple of a page.
mk() {
    local d=$T/in/$1
    mkdir -p "$d"
    sandbox_tree "$d/tree" "$2"
    ext4_image "$d/tree" "$d/disk"
    gen "$d/memory" $((4 << 20)) "$2" 85
    gen "$d/vmstate" 300001 $((1000 + $2))
}
spec() { echo "memory=$T/in/$1/memory vmstate=$T/in/$1/vmstate disk=$T/in/$1/disk"; }
declare -A ID
# one NAME TENANT SEED [EXTRA...]: a sandbox with one snapshot (EXTRA: tier=pro, ...)
one() {
    local name=$1 tenant=$2 seed=$3; shift 3
    mk "$name" "$seed"
    # shellcheck disable=SC2046
    ID[$name]=$(snap "$S" "$tenant" "$name" $(spec "$name") template=base "$@")
}

one f_under tf 1
one f_over tf 2
one p_under tp 3 tier=pro
one p_over tp 4 tier=pro
one saved tf 5
one up tu 6
one down td 7 tier=pro
one del tx 8
# multi: four snapshots of one VM, a few pages and one file changed each time; m2 pinned
mk multi 9
for k in 1 2 3 4; do
    if [ "$k" -gt 1 ]; then
        mutate "$T/in/multi/memory" 20 $((90 + k))
        echo "version $k" >"$T/in/multi/tree/home/ubuntu/output/report.md"
        ext4_image "$T/in/multi/tree" "$T/in/multi/disk"
    fi
    cp -a "$T/in/multi" "$T/in/m$k"
    # shellcheck disable=SC2046
    ID[m$k]=$(snap "$S" tf multi $(spec "m$k") template=base)
done
must cairn pin --store "$S" --snapshot "${ID[m2]}" >/dev/null
# bad: its disk is not ext4, so gc cannot tell its important files from the rest
mkdir -p "$T/in/bad"
gen "$T/in/bad/memory" $((1 << 20)) 11 50
gen "$T/in/bad/disk" $((1 << 20)) 12
ID[bad]=$(snap "$S" tf bad "memory=$T/in/bad/memory" "disk=$T/in/bad/disk")
assert_grep 'no file index|not a readable' "$T/err" "snapshot of a non-ext4 disk warns"

# Every scenario is placed relative to one gc clock G, 40 days after the snapshots: a
# sandbox nothing touched since would be over both windows.
NOW0=$(date +%s)
G=$((NOW0 + 40 * DAY))
touch_at() { must cairn touch --store "$S" --sandbox "$1" --at "$2" >/dev/null; }
touch_at f_under $((G - 596160))        # 6.9 days
touch_at f_over $((G - 613440))         # 7.1 days
touch_at p_under $((G - 1805760))       # 20.9 days
touch_at p_over $((G - 1823040))        # 21.1 days
touch_at up $((G - 8 * DAY))
touch_at down $((G - 8 * DAY))
touch_at del $((G - DAY))
touch_at multi $((G - DAY))
touch_at bad $((G - 10 * DAY))
# RFC 3339 works as well as unix seconds
touch_at saved "$(date -u -d "@$((G - 9 * DAY))" +%Y-%m-%dT%H:%M:%SZ)"
must cairn tier --store "$S" --tenant tu pro >/dev/null
must cairn tier --store "$S" --tenant td free >/dev/null
must cairn delete --store "$S" --sandbox del >/dev/null

sb_json() { must cairn sandboxes --store "$S" --json >"$T/sb.json"; }
sb_field() { json "[x for x in j['sandboxes'] if x['sandbox'] == '$1'][0]['$2']" "$T/sb.json"; }
sb_json
assert_eq "$(sb_field f_under last_activity_ms)" $(((G - 596160) * 1000)) "a touch sets the last activity"
assert_eq "$(sb_field saved last_activity_ms)" $(((G - 9 * DAY) * 1000)) "touch --at RFC 3339"
assert_eq "$(sb_field del state)" deleted "sandboxes after delete"
assert_eq "$(sb_field up tier)" pro "tier after the upgrade"
assert_eq "$(sb_field down tier)" free "tier after the downgrade"
assert_eq "$(sb_field p_under tier)" pro "tier from --tier pro"
assert_eq "$(sb_field multi snapshots)" 4 "snapshots of multi"

# What a dry run must not change: every file of the store but the lock, bytes and names.
store_all() {
    if [ -n "$ON_S3" ]; then bucket_fp "$S"; return; fi
    (cd "$S" && find . -type f ! -name lock -print0 | sort -z | xargs -0 md5sum)
}
dry() {
    store_all >"$T/fp.before"
    must cairn stats --store "$S" --json >"$T/stats.before"
    must cairn gc --store "$S" --now "$G" --dry-run --json >"$1"
    store_all >"$T/fp.after"
    must cairn stats --store "$S" --json >"$T/stats.after"
    cmp -s "$T/fp.before" "$T/fp.after" || { diff "$T/fp.before" "$T/fp.after" >&2; fail "gc --dry-run changed the store"; }
    if [ -n "$ON_S3" ]; then       # the node's index is a cache there: every open refreshes it
        for f in "$T/stats.before" "$T/stats.after"; do json 'j.pop("index_bytes") and j' "$f" >"$f.x"; done
        cmp -s "$T/stats.before.x" "$T/stats.after.x" || fail "gc --dry-run changed stats"
    else
        cmp -s "$T/stats.before" "$T/stats.after" || fail "gc --dry-run changed stats"
    fi
    assert_json 'j["ok"] and j["dry_run"]' "$1" "dry-run JSON"
}

# "saved" is idle 9 days: a dry run says it would go; a touch a day ago saves it.
dry "$T/dry1.json"
assert_json '"saved" in j["reclaimed_sandboxes"]' "$T/dry1.json" "an idle free sandbox would be reclaimed"
touch_at saved $((G - DAY))
dry "$T/dry2.json"
assert_json 'sorted(j["reclaimed_sandboxes"]) == ["down", "f_over", "p_over"]' "$T/dry2.json" "dry run: reclaims"
assert_json 'j["reclaimed"] == 3 and j["dropped_snapshots"] == 6 and j["not_reclaimed"] == 1' \
    "$T/dry2.json" "dry run: 3 reclaims, 6 drops (3 reclaimed, del, m1, m3), bad not reclaimed"
assert_json 'j["freed_bytes"] > 0 and j["chunks_removed"] > 0' "$T/dry2.json" "dry run: space to free"

gc_full "$S" "$T/gc.json" --now "$G"
assert_json 'j["ok"] and not j["dry_run"]' "$T/gc.json" "gc"
# (on S3 the sweep differs from the dry run's, which is the local one: fossils first)
for k in reclaimed dropped_snapshots not_reclaimed ${ON_S3:+x}packs_deleted ${ON_S3:+x}packs_rewritten ${ON_S3:+x}chunks_removed; do
    case $k in x*) continue ;; esac
    assert_eq "$(json "j['$k']" "$T/gc.json")" "$(json "j['$k']" "$T/dry2.json")" "gc $k = what the dry run said"
done
assert_eq "$(json 'sorted(j["reclaimed_sandboxes"])' "$T/gc.json")" '["down", "f_over", "p_over"]' "reclaimed"
for sb in down f_over p_over; do assert_grep "reclaimed $sb " "$T/err" "gc logs the reclaim of $sb"; done
assert_grep 'not reclaiming bad' "$T/err" "gc says why bad stays"
if [ -n "$ON_S3" ]; then
    assert_json 'j["fossils_recorded"] > 0 and j["packs_deleted"] == 0' "$T/gc.json" "S3: the first run records fossils"
    assert_json 'j["stored_bytes_after"] > 0 and j["freed_bytes"] > 0 and j["packs_deleted"] > 0' "$T/gc.json.2" \
        "S3: the run an epoch later deletes them"
else
    assert_json 'j["stored_bytes_after"] > 0 and j["freed_bytes"] > 0' "$T/gc.json" "gc freed space"
fi

# --- what restores, byte-exact
for sb in f_under p_under saved up; do
    # shellcheck disable=SC2046
    verify "$S" "${ID[$sb]}" $(spec "$sb")
done
# shellcheck disable=SC2046
verify "$S" "${ID[m2]}" $(spec m2)
# shellcheck disable=SC2046
verify "$S" "${ID[m4]}" $(spec m4)
verify "$S" "${ID[bad]}" "memory=$T/in/bad/memory" "disk=$T/in/bad/disk"
assert_eq "$(count_snapshots "$S" multi)" 2 "multi keeps its latest and its pinned snapshot"

# --- what no longer restores, and says why
gone() {
    expect 1 cairn restore --store "$S" --snapshot "$1" --out "$T/gone" >/dev/null
    [ ! -e "$T/gone/memory" ] && [ ! -e "$T/gone/disk" ] || fail "a failed restore of $1 left files"
    assert_grep "$2" "$T/err" "restore of dropped $1"
    rm -rf "$T/gone"
}
for sb in f_over p_over down; do gone "${ID[$sb]}" 'reclaimed.*rebuild'; done
gone "${ID[del]}" 'deleted|dropped'
gone "${ID[m1]}" 'superseded|dropped'
gone "${ID[m3]}" 'superseded|dropped'

sb_json
for sb in f_under p_under saved up multi bad; do
    assert_eq "$(sb_field "$sb" state)" hibernated "state of $sb"
done
for sb in f_over p_over down; do
    assert_eq "$(sb_field "$sb" state)" reclaimed "state of $sb"
    assert_eq "$(count_snapshots "$S" "$sb")" 1 "$sb keeps one files-only snapshot"
done
assert_json '[x["state"] for x in j["sandboxes"] if x["sandbox"] == "del"] in ([], ["deleted"])' "$T/sb.json" \
    "a deleted sandbox is not listed, or listed deleted"
assert_eq "$(count_snapshots "$S" del)" 0 "snapshots of a deleted sandbox"

# --- what lists: a reclaimed sandbox shows its important files with their classes, and
# nothing else; a hibernated one still shows everything.
cat >"$T/ls.py" <<'EOF'
import json, sys
mode, lsf = sys.argv[1], sys.argv[2]
got = {e["path"]: e for e in json.load(open(lsf))["entries"]}
H = "/home/ubuntu/"
important = {H + "upload/data.csv": "upload", H + "upload/photo.jpg": "upload",
             H + "output/report.md": "artifact", H + "output/chart.png": "artifact",
             H + "project/index.html": "project", H + "project/src/app.js": "project"}
rest = {H + "project/.env": "secret", H + ".ssh/id_ed25519": "secret",
        H + "project/node_modules/pkg/index.js": "cache", H + ".cache/pip/w.whl": "cache",
        "/tmp/build.log": "temp", "/etc/hostname": "runtime"}
bad = []
for p, c in important.items():
    if p not in got: bad.append("missing " + p)
    elif got[p]["class"] != c: bad.append("%s is %s, not %s" % (p, got[p]["class"], c))
for p, c in rest.items():
    if mode == "reclaimed" and p in got: bad.append("still lists " + p)
    if mode == "full" and (p not in got or got[p]["class"] != c): bad.append("%s: %s" % (p, got.get(p)))
if mode == "reclaimed":
    for p, e in got.items():
        if e["class"] not in ("upload", "artifact", "project") and not H.startswith(p + "/") and p not in ("/", H[:-1]):
            bad.append("lists %s (%s)" % (p, e["class"]))
print("; ".join(bad[:10]))
EOF
ls_check() {
    must cairn ls --store "$S" --snapshot "$1@latest" --recursive --json >"$T/ls.json"
    local bad; bad=$("$PY" "$T/ls.py" "$2" "$T/ls.json")
    [ -z "$bad" ] || fail "ls of $1 ($2): $bad"
}
for sb in f_over p_over down; do ls_check "$sb" reclaimed; done
for sb in f_under multi; do ls_check "$sb" full; done
for f in upload/data.csv output/chart.png project/src/app.js; do
    must cairn cat --store "$S" --snapshot f_over@latest "/home/ubuntu/$f" >"$T/cat.out"
    cmp -s "$T/cat.out" "$T/in/f_over/tree/home/ubuntu/$f" || fail "cat $f of reclaimed f_over differs"
done
expect 1 cairn cat --store "$S" --snapshot f_over@latest /home/ubuntu/project/node_modules/pkg/index.js >/dev/null

# --- what rebuilds: the template + the important files, a clean ext4, no secret or cache
for sb in f_over p_over down; do
    must cairn rebuild --store "$S" --sandbox "$sb" --out "$T/$sb.img" --json >/dev/null
    e2fsck -fn "$T/$sb.img" >"$T/e2fsck.log" 2>&1 || { cat "$T/e2fsck.log" >&2; fail "e2fsck of the rebuilt $sb"; }
    for f in home/ubuntu/upload/data.csv home/ubuntu/output/report.md home/ubuntu/project/src/app.js; do
        rm -f "$T/dump"
        debugfs -R "dump /$f $T/dump" "$T/$sb.img" >/dev/null 2>&1
        cmp -s "$T/dump" "$T/in/$sb/tree/$f" || fail "rebuilt $sb: /$f differs from the source"
    done
    debugfs -R "dump /etc/hostname $T/dump" "$T/$sb.img" >/dev/null 2>&1
    cmp -s "$T/dump" "$T/tpl/etc/hostname" || fail "rebuilt $sb: /etc/hostname is not the template's"
    for f in home/ubuntu/project/.env home/ubuntu/.ssh/id_ed25519 home/ubuntu/project/node_modules/pkg/index.js tmp/build.log; do
        debugfs -R "stat /$f" "$T/$sb.img" 2>&1 | grep -q 'File not found' || fail "rebuilt $sb holds /$f"
    done
done

fsck_ok "$S" --verify-data

# --- a second gc right after does nothing
fp() { if [ -n "$ON_S3" ]; then bucket_fp "$1" packs/ manifests/; else store_fp "$1"; fi; }
fp "$S" >"$T/fp1"
must cairn gc --store "$S" --now "$G" --json >"$T/gc2.json"
assert_json 'j["ok"] and j["reclaimed"] == 0 and j["dropped_snapshots"] == 0' "$T/gc2.json" "second gc"
assert_json 'j["packs_deleted"] == 0 and j["packs_rewritten"] == 0 and j["chunks_removed"] == 0' "$T/gc2.json" \
    "second gc sweeps nothing"
fp "$S" >"$T/fp2"
cmp -s "$T/fp1" "$T/fp2" || fail "a second gc changed packs or manifests"
verify "$S" "${ID[bad]}" "memory=$T/in/bad/memory" "disk=$T/in/bad/disk"

# --- space: reclaim 9 of 10 like sandboxes (~90% of the data); the store must then be at
# most 1.25x what the rest needs, measured as a fresh store holding only that: the kept
# sandbox's files and, for each reclaimed one, its important files (page-aligned, as on disk).
S2=$T/store90
new_store "$S2"
for i in 0 1 2 3 4 5 6 7 8 9; do
    mk "r$i" $((200 + i))
    # shellcheck disable=SC2046
    ID[r$i]=$(snap "$S2" t90 "r$i" $(spec "r$i"))
done
G2=$(($(date +%s) + 8 * DAY))
must cairn touch --store "$S2" --sandbox r0 --at $((G2 - DAY)) >/dev/null
must cairn stats --store "$S2" --json >"$T/s90.before"
must cairn sandboxes --store "$S2" --json >"$T/sb90.json"
share=$(json 'sum(x["bytes"] for x in j["sandboxes"] if x["sandbox"] != "r0") * 100 // sum(x["bytes"] for x in j["sandboxes"])' "$T/sb90.json")
assert_cmp "$share" -ge 85 "share of the data in the sandboxes to reclaim (percent)"
gc_full "$S2" "$T/gc90.json" --now "$G2"
assert_json 'j["ok"] and j["reclaimed"] == 9' "$T/gc90.json" "gc reclaims the 9 idle sandboxes"
fsck_ok "$S2"

S3=$T/need
must cairn init --store "$S3" >/dev/null
# shellcheck disable=SC2046
snap "$S3" t90 r0 $(spec r0) >/dev/null
for i in 1 2 3 4 5 6 7 8 9; do
    "$PY" - "$T/in/r$i/tree/home/ubuntu" "$T/files$i" <<'EOF'
import os, sys
home, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as o:
    for sub in ("upload", "output", "project"):
        for d, dirs, files in os.walk(os.path.join(home, sub)):
            dirs[:] = [x for x in dirs if x != "node_modules"]
            for f in sorted(files):
                if f == ".env":
                    continue
                b = open(os.path.join(d, f), "rb").read()
                o.write(b + bytes(-len(b) % 4096))
EOF
    snap "$S3" t90 "n$i" "memory=$T/files$i" >/dev/null
done
must cairn stats --store "$S2" --json >"$T/s90.after"
must cairn stats --store "$S3" --json >"$T/need.json"
before=$(json 'j["stored_bytes"]' "$T/s90.before")
after=$(json 'j["stored_bytes"]' "$T/s90.after")
need=$(json 'j["stored_bytes"]' "$T/need.json")
log "90% reclaim: stored $before -> $after bytes; the rest needs $need ($(awk -v a="$after" -v n="$need" 'BEGIN { printf "%.2f", a / n }')x)"
assert_cmp $((after * 100)) -le $((need * 125)) "stored_bytes after gc <= 1.25 x need"
# shellcheck disable=SC2046
verify "$S2" "${ID[r0]}" $(spec r0)
must cairn gc --store "$S2" --now "$G2" --json >"$T/gc90b.json"
assert_json 'j["reclaimed"] == 0 and j["dropped_snapshots"] == 0 and j["packs_rewritten"] == 0' "$T/gc90b.json" \
    "second gc of the 90% store"
log "ok"
