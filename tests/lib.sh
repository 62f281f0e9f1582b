# Helpers sourced by tests/integration/*.sh.  A test runs in its own empty
# directory ($T, made by tests/run.sh or here when the test is run by hand) and
# finds the binaries through $BUILD.  Every cairn call is bounded by a timeout:
# a hang must show up as a failure, not as a CI job that never ends.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$REPO/build}
# The test shims (tests/fault: fault, failio, clockstep) are preloaded ahead of the ASan
# runtime under `make asan`, whose link-order check would refuse to start cairn.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
# For a test that bounds cairn's RSS: under AddressSanitizer freed memory waits in its
# quarantine, 256 MiB by default, and counts in the RSS; a small one keeps the bound the
# program's.
asan_small_quarantine() { export ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=16; }
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
CAIRN_BIN=$BUILD/cairn
CORPUS_BIN=$BUILD/cairn-corpus
CAIRN_TIMEOUT=${CAIRN_TIMEOUT:-120}
# The system python starts in 20 ms; a pyenv shim takes 150 ms per call.
PY=$(command -v /usr/bin/python3 || command -v python3)
TEST_NAME=$(basename "$0" .sh)
unset CAIRN_STORE

# at_exit CMD: run CMD when the test ends, however it ends (latest first).
_at_exit=()
at_exit() { _at_exit=("$1" "${_at_exit[@]}"); }
_run_at_exit() { local c; for c in "${_at_exit[@]}"; do eval "$c" || true; done; }
trap _run_at_exit EXIT

if [ -n "${TEST_TMP:-}" ]; then
    T=$TEST_TMP
else
    T=$(mktemp -d "${TMPDIR:-/tmp}/cairn-$TEST_NAME.XXXXXX")
    at_exit 'rm -rf "$T"'
fi
cd "$T"

log()  { printf '%s: %s\n' "$TEST_NAME" "$*" >&2; }
fail() { printf 'FAIL %s: %s\n' "$TEST_NAME" "$*" >&2; exit 1; }
skip() { printf 'SKIP %s: %s\n' "$TEST_NAME" "$*" >&2; exit 77; }

[ -x "$CAIRN_BIN" ] || fail "no $CAIRN_BIN (run make first)"

# cairn ARGS: the binary under a timeout (exit 124 if it hangs).
# CAIRN_WRAP (e.g. "valgrind -q --error-exitcode=99") runs cairn under a tool;
# CAIRN_TIME_SCALE (set by tests/run.sh for sanitizers and valgrind) stretches the timeout.
cairn() { timeout -k 5 "$((CAIRN_TIMEOUT * ${CAIRN_TIME_SCALE:-1}))" ${CAIRN_WRAP:-} "$CAIRN_BIN" "$@"; }

# expect RC CMD...: runs CMD, keeps its output in $T/out and $T/err, and fails
# the test unless it exits RC.  Prints CMD's stdout.
expect() {
    local want=$1 rc=0; shift
    "$@" >"$T/out" 2>"$T/err" || rc=$?
    if [ "$rc" != "$want" ]; then
        {   echo "command: $*"
            echo "exit $rc, expected $want"
            echo "--- stdout"; tail -n 20 "$T/out"
            echo "--- stderr"; tail -n 20 "$T/err"; } >&2
        fail "unexpected exit status $rc of: $*"
    fi
    cat "$T/out"
}
must() { expect 0 "$@"; }

# json EXPR [FILE]: evaluates the Python expression EXPR with j = the JSON
# document read from FILE or stdin; strings print bare, the rest as JSON.
json() {
    "$PY" -c '
import json, sys
j = json.load(open(sys.argv[2]) if len(sys.argv) > 2 else sys.stdin)
v = eval(sys.argv[1], {"j": j})
print(v if isinstance(v, str) else json.dumps(v))
' "$@"
}

# is_json FILE: exactly one JSON object and nothing else.
is_json_object() {
    "$PY" -c 'import json,sys; assert isinstance(json.load(open(sys.argv[1])), dict)' "$1" 2>/dev/null
}

# assert_json EXPR FILE MSG: the Python expression over the JSON must be True.
assert_json() { [ "$(json "$1" "$2")" = true ] || fail "${3:-$1}: $(head -c 400 "$2")"; }
assert_eq() { [ "$1" = "$2" ] || fail "${3:-values differ}: got '$1', expected '$2'"; }
# assert_cmp A OP B MSG: integer comparison, OP one of -lt -le -gt -ge -eq -ne
assert_cmp() { [ "$1" "$2" "$3" ] || fail "${4:-comparison}: $1 $2 $3 is false"; }
assert_grep() { grep -Eqi -e "$1" "$2" || fail "${3:-pattern}: /$1/ not in $2: $(head -c 400 "$2")"; }

size_of()  { stat -c %s "$1"; }
# bytes the file really occupies on disk
alloc_of() { echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") )); }

# gen FILE SIZE SEED [ZERO_PERCENT]: deterministic pseudo-random pages; a page
# is all-zero with probability ZERO_PERCENT and left as a hole.  SIZE need not
# be a multiple of 4096.
gen() {
    "$PY" - "$@" <<'EOF'
import random, sys, os
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
zero = int(sys.argv[4]) if len(sys.argv) > 4 else 0
r = random.Random(seed)
with open(path, "wb") as f:
    f.truncate(size)
    for off in range(0, size, 4096):
        n = min(4096, size - off)
        if r.randrange(100) < zero:
            continue
        f.seek(off)
        f.write(r.randbytes(n))
EOF
}

# mutate FILE NPAGES SEED: overwrites NPAGES random pages in place (the "next
# snapshot of the same VM").
mutate() {
    "$PY" - "$@" <<'EOF'
import random, sys, os
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
pages = max(1, os.path.getsize(path) // 4096)
with open(path, "r+b") as f:
    for _ in range(n):
        f.seek(r.randrange(pages) * 4096)
        f.write(r.randbytes(4096))
EOF
}

# damage FILE STRIDE XOR: XORs one byte in every STRIDE with XOR (e.g. 0x55), from offset
# 4096 to 4096 before the end: damage spread over a pack's records, not only at its ends.
damage() {
    "$PY" - "$@" <<'EOF'
import sys
p, stride, xor = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0)
b = bytearray(open(p, "rb").read())
for off in range(4096, len(b) - 4096, stride):
    b[off] ^= xor
open(p, "wb").write(b)
EOF
}

# nonzero_bytes FILE: 4096 x the number of pages that are not all zero.
nonzero_bytes() {
    "$PY" - "$1" <<'EOF'
import sys
z, n = bytes(4096), 0
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        for i in range(0, len(b), 4096):
            if b[i:i + 4096] != z[:len(b[i:i + 4096])]:
                n += 1
print(n * 4096)
EOF
}

# corpus NAME ARGS...: a cairn-corpus output dir, shared between the tests of
# one run (tests/run.sh sets CAIRN_TEST_CACHE) since generating it is slow.
corpus() {
    local name=$1; shift
    local dir=${CAIRN_TEST_CACHE:-$T}/corpus-$name
    [ -x "$CORPUS_BIN" ] || fail "no $CORPUS_BIN (run make first)"
    timeout 600 "$CORPUS_BIN" --out "$dir" "$@" >"$T/corpus.log" 2>&1 \
        || { cat "$T/corpus.log" >&2; fail "cairn-corpus $* failed"; }
    echo "$dir"
}

# A file set is named by a spec: "memory=PATH vmstate=PATH disk=PATH" (any
# subset).  spec_args turns it into snapshot flags.
spec_args() {
    local kv
    for kv in "$@"; do printf -- '--%s\n%s\n' "${kv%%=*}" "${kv#*=}"; done
}

# snap STORE TENANT SANDBOX SPEC...: snapshot, check the JSON, print the id.
# The JSON answer is left in $T/snap.json.
snap() {
    local store=$1 tenant=$2 sandbox=$3; shift 3
    local args; mapfile -t args < <(spec_args "$@")
    expect 0 cairn snapshot --store "$store" --tenant "$tenant" --sandbox "$sandbox" \
        "${args[@]}" --json >"$T/snap.json"
    is_json_object "$T/snap.json" || fail "snapshot --json is not one JSON object: $(head -c 300 "$T/snap.json")"
    local id; id=$(json 'j["snapshot"]' "$T/snap.json")
    [ -n "$id" ] || fail "snapshot --json has an empty id"
    echo "$id"
}

# verify STORE ID SPEC...: restores ID into a fresh dir and compares every file
# of SPEC byte for byte; files not in SPEC must not be written.
verify() {
    local store=$1 id=$2; shift 2
    local out; out=$(mktemp -u "$T/restore.XXXXXX")
    expect 0 cairn restore --store "$store" --snapshot "$id" --out "$out" >/dev/null
    local kv name
    for name in memory vmstate disk; do
        local src=
        for kv in "$@"; do [ "${kv%%=*}" = "$name" ] && src=${kv#*=}; done
        if [ -n "$src" ]; then
            [ -f "$out/$name" ] || fail "restore of $id wrote no $name"
            cmp -s "$src" "$out/$name" || fail "restore of $id: $name differs from $src"
        else
            [ ! -e "$out/$name" ] || fail "restore of $id wrote a $name it does not have"
        fi
    done
    rm -rf "$out"
}

# fsck_ok STORE [FLAGS]: fsck --json must answer ok=true with no problems.
fsck_ok() {
    local store=$1; shift
    local rc=0
    cairn fsck --store "$store" --json "$@" >"$T/fsck.json" 2>"$T/fsck.err" || rc=$?
    is_json_object "$T/fsck.json" || fail "fsck --json $* (exit $rc) is not JSON: $(head -c 300 "$T/fsck.json") $(head -c 300 "$T/fsck.err")"
    [ "$(json 'j["ok"]' "$T/fsck.json")" = true ] \
        || fail "fsck $* not ok (exit $rc): $(json 'j.get("problems")' "$T/fsck.json")"
    [ "$(json 'len(j["problems"])' "$T/fsck.json")" = 0 ] || fail "fsck ok but problems listed"
    [ "$rc" = 0 ] || fail "fsck answered ok but exited $rc"
}

# store_fp STORE: what a failed command must not change: packs and manifests.
store_fp() {
    (cd "$1" && { find packs manifests -type f \( -name '*.pack' -o -name '*.cmf' \) \
        -printf '%p %s\n' 2>/dev/null || true; } | sort)
}

# count_snapshots STORE SANDBOX
count_snapshots() {
    must cairn snapshots --store "$1" --sandbox "$2" --json | json 'len(j["snapshots"])'
}

pack_bytes() {
    local s=0 f
    for f in "$1"/packs/*.pack; do [ -e "$f" ] && s=$((s + $(size_of "$f"))); done
    echo $s
}

# The corpus most tests share: 2 sandboxes of one template, 2 snapshots each.
std_corpus() { corpus std --sandboxes 2 --snapshots 2 --memory-size 64M --disk-size 64M --seed 7; }
# set_of DIR SB K: the spec of one corpus snapshot.
set_of() { echo "memory=$1/$2/$3/memory vmstate=$1/$2/$3/vmstate disk=$1/$2/$3/disk"; }
# snap_std STORE DIR: every snapshot of the std corpus DIR (sb01 1, 2, then sb02 1, 2) into
# STORE, tenant acme; spec[ID] = each one's spec (the caller has declared spec with -A).
snap_std() {
    local sb k id
    for sb in sb01 sb02; do
        for k in 1 2; do
            # shellcheck disable=SC2046
            id=$(snap "$1" acme "$sb" $(set_of "$2" $sb $k))
            spec[$id]=$(set_of "$2" $sb $k)
        done
    done
}

# sandbox_tree DIR SEED: a small sandbox root in DIR, contents a function of SEED: important
# files (upload, output, project), secrets (.env, .ssh), caches (node_modules, .cache) and /tmp.
sandbox_tree() {
    "$PY" - "$1" "$2" <<'PYEOF'
import os, random, sys
root, r = sys.argv[1], random.Random(int(sys.argv[2]))
H = "home/ubuntu/"
for p, n in [(H + "upload/data.csv", 150000), (H + "upload/photo.jpg", 50000),
             (H + "output/report.md", 9000), (H + "output/chart.png", 30000),
             (H + "project/index.html", 1500), (H + "project/src/app.js", 12000),
             (H + "project/.env", 40), (H + ".ssh/id_ed25519", 400),
             (H + "project/node_modules/pkg/index.js", 60000), (H + ".cache/pip/w.whl", 40000),
             ("tmp/build.log", 30000), ("etc/hostname", 8)]:
    os.makedirs(os.path.dirname(os.path.join(root, p)), exist_ok=True)
    with open(os.path.join(root, p), "wb") as f:
        f.write(r.randbytes(n))
PYEOF
}

# ext4_image DIR IMG [SIZE [MKE2FS-OPTION...]]: a reproducible ext4 image of the tree DIR
# (fixed UUID, hash seed and times, so an unchanged file keeps its blocks from one image to
# the next); DIR "" makes an empty filesystem. The one mke2fs of the shell tests.
ext4_image() {
    local u=0b8f3a4e-0000-4000-8000-0000000000f2 d=()
    [ -n "$1" ] && d=(-d "$1")
    E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 -U "$u" -E hash_seed="$u" \
        "${@:4}" "${d[@]}" "$2" "${3:-16M}" >"$T/mke2fs.log" 2>&1 ||
        { cat "$T/mke2fs.log" >&2; fail "mke2fs ${1:+-d $1} $2"; }
}

# base_template STORE: a tiny template disk ($T/tpl.img, one file) added as template "base".
base_template() {
    mkdir -p "$T/tpl/etc"
    echo template-base >"$T/tpl/etc/hostname"
    ext4_image "$T/tpl" "$T/tpl.img"
    must cairn template add --store "$1" --name base --disk "$T/tpl.img" >/dev/null
}

# need_s3: a real S3 endpoint (Ceph RGW: tests/rgw.sh). tests/run.sh starts one for all the
# s3* tests of a run; a test run by hand starts its own. Sets S3_EP and exports the keys
# the way a user gives them to cairn ($CAIRN_S3_ACCESS_KEY / $CAIRN_S3_SECRET_KEY).
need_s3() {
    [ -z "${CAIRN_TEST_S3_SKIP:-}" ] || skip "$CAIRN_TEST_S3_SKIP"
    [ -z "${CAIRN_TEST_S3_ERROR:-}" ] || fail "the test RGW did not start: $CAIRN_TEST_S3_ERROR"
    if [ -z "${CAIRN_TEST_S3_ENDPOINT:-}" ]; then
        local rc=0
        "$REPO/tests/rgw.sh" start "$T/rgw" >"$T/rgw.log" 2>&1 || rc=$?
        [ "$rc" != 77 ] || skip "$(grep -m1 -o 'SKIP.*' "$T/rgw.log")"
        [ "$rc" = 0 ] || { cat "$T/rgw.log" >&2; fail "tests/rgw.sh start failed"; }
        at_exit '"$REPO/tests/rgw.sh" stop "$T/rgw"'
        # shellcheck disable=SC1091
        . "$T/rgw/env"
    fi
    export CAIRN_S3_ACCESS_KEY=$CAIRN_TEST_S3_ACCESS_KEY CAIRN_S3_SECRET_KEY=$CAIRN_TEST_S3_SECRET_KEY
    S3_EP=$CAIRN_TEST_S3_ENDPOINT
}

# s3_bucket: a bucket name no other test of the run uses.
s3_bucket() {
    printf 'cairn-%s-%s\n' "$(printf %s "$TEST_NAME" | tr -c 'a-z0-9' -)" "$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
}

# s3_init DIR BUCKET v2|v4 [ARGS...]: makes DIR a node of BUCKET on the test endpoint.
s3_init() {
    local dir=$1 bucket=$2 sig=$3; shift 3
    must cairn init --store "$dir" --backend s3 --s3-endpoint "$S3_EP" --s3-bucket "$bucket" --s3-http \
        --s3-signature "$sig" "$@" >/dev/null
}

# s3_curl METHOD PATH [CURL ARGS...]: a signed request (V4) to the test endpoint; prints the
# HTTP status (for tests that plant or inspect objects behind Cairn's back).
s3_curl() {
    local m=$1 p=$2; shift 2
    curl -s -o "$T/s3_curl.out" -w '%{http_code}' -X "$m" --aws-sigv4 "aws:amz:us-east-1:s3" \
        -u "$CAIRN_S3_ACCESS_KEY:$CAIRN_S3_SECRET_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
        "$@" "http://$S3_EP/$p"
}
