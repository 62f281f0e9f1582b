#!/usr/bin/env bash
# Leases of lazy readers across the nodes of one bucket (docs/s3.md, "Leases of lazy
# readers"; store/lease.h), against a real RGW:
#  - node r (a fresh node: nothing cached) holds a snapshot's memory open through
#    `cairn mount`: its lease is an object in the bucket, renewed past its life;
#  - node a deletes the sandbox and runs gc with --now a year ahead, twice, an epoch
#    apart: the leased snapshot is kept (kept_leased) and none of its packs deleted, while an
#    older snapshot of the sandbox, whose lease in the bucket has expired (a dead holder),
#    is dropped, its lease removed and its pack deleted; then node r reads every page
#    byte-exact (from the bucket: its cache was cold);
#  - a reader that finds a fresh drop intent of another node's gc fails cleanly (ENOENT);
#  - once r closes the file its lease is gone, and a's gc drops the snapshot and, an epoch
#    later, deletes its packs.
. "$(dirname "$0")/../lib.sh"
need_s3
[ -e /dev/fuse ] || skip "no /dev/fuse"
command -v fusermount3 >/dev/null || skip "no fusermount3 (apt-get install fuse3)"

SCALE=${CAIRN_TIME_SCALE:-1}
# Small bounds so that epochs pass and leases would expire within the test; the lease of
# a reader lives 3 s and is renewed every second.
export CAIRN_S3_COMMIT_BOUND_MS=$((2000 * SCALE)) CAIRN_S3_CLOCK_MARGIN_MS=300 CAIRN_GC_LEASE_SETTLE_MS=300
export CAIRN_S3_READ_LEASE_MS=$((3000 * SCALE))
RIPE=$((2 * SCALE + 1))         # seconds: bound + margin, rounded up
LATER=$(($(date +%s) + 365 * 86400))

B=$(s3_bucket)
s3_init "$T/a" "$B" v4
mkdir -p "$T/data" "$T/mnt"
# mem FILE SEED: 2 MiB of random pages (nothing to dedup between snapshots).
mem() { "$PY" -c 'import random, sys; open(sys.argv[1], "wb").write(random.Random(sys.argv[2]).randbytes(2 << 20))' "$1" "$2"; }
snap_mem() {                    # snap_mem SANDBOX SEED: prints the id
    mem "$T/data/$1-$2" "$1-$2"
    must cairn snapshot --store "$T/a" --tenant acme --sandbox "$1" --memory "$T/data/$1-$2" --json >"$T/snap.json"
    json 'j["snapshot"]' "$T/snap.json"
}
old=$(snap_mem box 1)
id=$(snap_mem box 2)

# list_keys PREFIX: the keys of the bucket under PREFIX, one a line.
list_keys() {
    [ "$(s3_curl GET "$B?list-type=2&prefix=$(printf %s "$1" | sed 's,/,%2F,g')")" = 200 ] || fail "cannot list $1"
    grep -o '<Key>[^<]*</Key>' "$T/s3_curl.out" | sed 's/<Key>\(.*\)<\/Key>/\1/' || true
}
last_modified() {               # last_modified KEY: its LastModified in a listing
    [ "$(s3_curl GET "$B?list-type=2&prefix=$(printf %s "$1" | sed 's,/,%2F,g')")" = 200 ] || fail "cannot list $1"
    grep -o '<LastModified>[^<]*</LastModified>' "$T/s3_curl.out" | head -n 1
}
now_ms() { "$PY" -c 'import time; print(int(time.time() * 1000))'; }
put_obj() {                     # put_obj KEY TEXT
    printf '%s' "$2" >"$T/obj"
    [ "$(s3_curl PUT "$B/$1" --data-binary @"$T/obj")" = 200 ] || fail "cannot PUT $1"
}

# Node r mounts the view (foreground, so the test has its pid).
s3_init "$T/r" "$B" v4
must cairn refresh --store "$T/r" >/dev/null
M=$T/mnt
timeout -k 5 300 "$CAIRN_BIN" mount --store "$T/r" --foreground "$M" 2>"$T/mount.err" &
mpid=$!
at_exit "fusermount3 -u '$M' 2>/dev/null; kill $mpid 2>/dev/null"
for _ in $(seq 200); do grep -q " $M fuse" /proc/mounts && break; sleep 0.05; done
grep -q " $M fuse" /proc/mounts || { cat "$T/mount.err" >&2; fail "cairn mount did not mount $M"; }

# A reader that finds a fresh drop intent gives up cleanly, and leaves no lease behind.
put_obj "leases/$old/drop" "node=00beef
stale_ms=600000
"
if cat "$M/snapshots/$old/memory" >/dev/null 2>"$T/cat.err"; then fail "a snapshot being dropped was opened"; fi
assert_grep "No such file" "$T/cat.err" "the open of a snapshot being dropped"
assert_eq "$(list_keys "leases/$old/" | tr '\n' ' ')" "leases/$old/drop " "leases of $old after the refused open"
[ "$(s3_curl DELETE "$B/leases/$old/drop")" = 204 ] || fail "cannot delete the planted intent"
cmp "$M/snapshots/$old/memory" "$T/data/box-1" || fail "$old through the mount once the intent is gone"

# The holder: opens the memory file and reads its first page, then waits for go, reads
# the whole file and compares it; closes it at close.
"$PY" - "$M/snapshots/$id/memory" "$T/data/box-2" "$T" <<'EOF' >"$T/holder.out" 2>&1 &
import os, sys, time
path, ref, t = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
def wait(name):
    while not os.path.exists(os.path.join(t, name)):
        time.sleep(0.05)
f = open(path, "rb")
assert f.read(4096) == ref[:4096], "first page"
open(os.path.join(t, "opened"), "w").close()
wait("go")
f.seek(0)
data = f.read()
print("exact" if data == ref else "DIFFERS (%d bytes)" % len(data), flush=True)
open(os.path.join(t, "read"), "w").close()
wait("close")
f.close()
open(os.path.join(t, "closed"), "w").close()
EOF
hpid=$!
at_exit "touch '$T/go' '$T/close'; kill $hpid 2>/dev/null"
for _ in $(seq 600); do [ -e "$T/opened" ] && break; kill -0 $hpid 2>/dev/null || break; sleep 0.05; done
[ -e "$T/opened" ] || { cat "$T/holder.out" "$T/mount.err" >&2; fail "the holder could not open $id"; }
leases=$(list_keys "leases/$id/")
[ "$(wc -l <<<"$leases")" = 1 ] && [ -n "$leases" ] || fail "node r's lease on $id in the bucket: '$leases'"
s3_curl GET "$B/$leases" >/dev/null
grep -q '^ttl_ms=[1-9]' "$T/s3_curl.out" || fail "the lease object has no life: $(cat "$T/s3_curl.out")"
first_put=$(last_modified "$leases")

# A dead holder's lease on the older snapshot: its life (0) ends at its Last-Modified
# (+ the listing's 1 s rounding), so once past the margin it keeps nothing.
put_obj "leases/$old/00dead-00000001" "node=00dead
ttl_ms=0
"
dead_at=$(now_ms)

must cairn delete --store "$T/a" --sandbox box >/dev/null
while [ "$(now_ms)" -le $((dead_at + 1000 + 300 + 200)) ]; do sleep 0.1; done
# gc's node 3 h ahead: r's lease is judged on the bucket's clock, so it still holds.
LD_PRELOAD=$BUILD/libcairn-clockstep.so CAIRN_TEST_CLOCK_STEP_MS=$((3 * 3600 * 1000)) \
    must cairn gc --store "$T/a" --now "$LATER" --json >"$T/gc1.json"
assert_json 'j["kept_leased"] == 1 and j["dropped_snapshots"] == 1' "$T/gc1.json" "gc while r holds its lease"
[ -z "$(list_keys "manifests/$old")" ] || fail "the snapshot with only an expired lease was not dropped"
[ -z "$(list_keys "leases/$old/")" ] || fail "the expired lease of a dropped snapshot stayed"
[ -n "$(list_keys "manifests/$id.cmf")" ] || fail "the leased snapshot's manifest was deleted"
sleep "$RIPE"
# An epoch later, and past the first life of r's lease (only its renewal keeps it): the
# older snapshot's pack goes, the leased one's stays.
must cairn gc --store "$T/a" --now "$LATER" --json >"$T/gc2.json"
assert_json 'j["kept_leased"] == 1 and j["dropped_snapshots"] == 0 and j["packs_deleted"] >= 1' "$T/gc2.json" \
    "gc an epoch later"
[ "$(last_modified "$leases")" \> "$first_put" ] || fail "the lease was not renewed (Last-Modified $first_put)"

# r reads every page now, from the bucket (its node cached only what the first page's
# read brought).
touch "$T/go"
for _ in $(seq 1200); do [ -e "$T/read" ] && break; kill -0 $hpid 2>/dev/null || break; sleep 0.05; done
assert_eq "$(cat "$T/holder.out")" "exact" "node r's read of the leased snapshot after three gc runs"
packs_now=$(list_keys packs/ | sort)
touch "$T/close"
for _ in $(seq 200); do [ -e "$T/closed" ] && break; sleep 0.05; done
[ -e "$T/closed" ] || fail "the holder did not close"
wait $hpid || fail "the holder failed: $(cat "$T/holder.out")"
# The mount releases the lease when the file's last user closes it.
for _ in $(seq 100); do [ -z "$(list_keys "leases/$id/")" ] && break; sleep 0.1; done
[ -z "$(list_keys "leases/$id/")" ] || fail "node r's lease stayed after the file was closed"

must cairn gc --store "$T/a" --now "$LATER" --json >"$T/gc4.json"
assert_json 'j["kept_leased"] == 0 and j["dropped_snapshots"] == 1' "$T/gc4.json" "gc after the release"
[ -z "$(list_keys "manifests/$id")" ] || fail "the released snapshot was not dropped"
if cat "$M/snapshots/$id/memory" >/dev/null 2>&1; then fail "node r opened a dropped snapshot"; fi
sleep "$RIPE"
must cairn gc --store "$T/a" --now "$LATER" --json >"$T/gc5.json"
assert_json 'j["packs_deleted"] >= 1 and j["freed_bytes"] > 0' "$T/gc5.json" "gc an epoch after the drop"
[ "$(list_keys packs/ | sort)" != "$packs_now" ] || fail "no pack of the released snapshot was deleted"

fusermount3 -u "$M" || fail "fusermount3 -u failed"
rc=0
wait "$mpid" || rc=$?
[ "$rc" = 0 ] || { cat "$T/mount.err" >&2; fail "cairn mount exited $rc after fusermount3 -u"; }
[ -z "$(list_keys leases/)" ] || fail "lease objects left in the bucket: $(list_keys leases/ | tr '\n' ' ')"
