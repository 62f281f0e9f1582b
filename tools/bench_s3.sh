#!/usr/bin/env bash
# make bench, S3 part: ingest and restore throughput of a store on a real Ceph RGW (started
# here by tests/rgw.sh, stopped at the end) beside the local backend's, on the same file,
# with each transport (libcurl V4, libs3 V2), as ratios to local (issue 11's targets:
# ingest >= 0.5x, warm restore >= 0.8x, cold restore >= 0.3x).
#   warm  restore on the node that wrote the snapshot (its packs in the local cache)
#   cold  restore on a fresh node of the same bucket (empty cache: ranged GETs only)
#   cold2 the same restore again on that node (groups read by the first one are cached)
# Prints "bench-s3: skipped: WHY" and exits 0 when Ceph is not installed.
#   BENCH_S3_MIB=N    size of the file (random bytes: nothing to dedup or compress), 256
#   BENCH_S3_RUNS=N   runs of each measure, best taken (default 2)
#   BENCH_S3_DIR=DIR  where stores and restores go (default: a temporary folder in /var/tmp)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
case $BUILD in /*) CAIRN=$BUILD/cairn ;; *) CAIRN=$PWD/$BUILD/cairn ;; esac
MIB=${BENCH_S3_MIB:-256}
RUNS=${BENCH_S3_RUNS:-2}
[ -x "$CAIRN" ] || { echo "bench-s3: $CAIRN not built (make)" >&2; exit 1; }
ROOT=$(mktemp -d "${BENCH_S3_DIR:-/var/tmp}/cairn-bench-s3.XXXXXX") || exit 1
cleanup() {
    [ -s "$ROOT/rgw/env" ] && tests/rgw.sh stop "$ROOT/rgw" >/dev/null 2>&1
    rm -rf "$ROOT"
}
trap cleanup EXIT
# Room for a few copies of the file (memstore holds everything in memory).
rc=0
CAIRN_RGW_MEMSTORE_MIB=$((MIB * 6 + 1024)) tests/rgw.sh start "$ROOT/rgw" >"$ROOT/rgw.log" 2>&1 || rc=$?
if [ "$rc" = 77 ]; then
    echo "bench-s3: skipped: $(grep -m1 -o 'SKIP.*' "$ROOT/rgw.log" | sed 's/^SKIP rgw: //')"
    exit 0
elif [ "$rc" != 0 ]; then
    echo "bench-s3: skipped: Ceph RGW did not start (tests/rgw.sh start failed):" >&2
    tail -n 5 "$ROOT/rgw.log" >&2
    echo "bench-s3: skipped: Ceph RGW did not start"
    exit 0
fi
# shellcheck disable=SC1091
. "$ROOT/rgw/env"
export CAIRN_S3_ACCESS_KEY=$CAIRN_TEST_S3_ACCESS_KEY CAIRN_S3_SECRET_KEY=$CAIRN_TEST_S3_SECRET_KEY
EP=$CAIRN_TEST_S3_ENDPOINT

head -c $((MIB << 20)) /dev/urandom >"$ROOT/memory"

# secs CMD...: runs it, prints its wall seconds; a failure ends the bench (never a number
# for work that did not happen).
secs() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$ROOT/out" 2>&1 || { echo "bench-s3: failed: $*" >&2; cat "$ROOT/out" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
# m ARRAY CMD...: appends CMD's seconds to ARRAY (the bench ends if CMD failed).
m() {
    local -n arr=$1
    shift
    local t
    t=$(secs "$@") || exit 1
    arr+=("$t")
}
best() { printf '%s\n' "$@" | sort -g | head -n 1; }
restore() {   # restore STORE ID: a byte-exact restore into a fresh folder
    local out="$ROOT/r.$RANDOM"
    "$CAIRN" restore --store "$1" --snapshot "$2" --out "$out" >/dev/null &&
        cmp -s "$ROOT/memory" "$out/memory" && rm -rf "$out"
}
snapid() { "$CAIRN" snapshots --store "$1" --sandbox s --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshots"][0]["snapshot"])'; }
purge() { radosgw-admin -c "$ROOT/rgw/ceph.conf" bucket rm --bucket="$1" --purge-objects --bypass-gc >/dev/null 2>&1; }

declare -A T
ing=() res=()
for ((r = 0; r < RUNS; r++)); do
    rm -rf "$ROOT/local"
    "$CAIRN" init --store "$ROOT/local" >/dev/null || exit 1
    m ing "$CAIRN" snapshot --store "$ROOT/local" --tenant t --sandbox s --memory "$ROOT/memory"
    id=$(snapid "$ROOT/local")
    m res restore "$ROOT/local" "$id"
done
T[local.ingest]=$(best "${ing[@]}")
T[local.restore]=$(best "${res[@]}")
rm -rf "$ROOT/local"

for sig in v4 v2; do
    ing=() warm=() cold=() cold2=() refr=()
    for ((r = 0; r < RUNS; r++)); do
        b=cairn-bench-$sig-$r-$RANDOM
        rm -rf "$ROOT/a" "$ROOT/b"
        "$CAIRN" init --store "$ROOT/a" --backend s3 --s3-endpoint "$EP" --s3-bucket "$b" --s3-http \
            --s3-signature $sig >/dev/null || exit 1
        m ing "$CAIRN" snapshot --store "$ROOT/a" --tenant t --sandbox s --memory "$ROOT/memory"
        id=$(snapid "$ROOT/a")
        m warm restore "$ROOT/a" "$id"
        "$CAIRN" init --store "$ROOT/b" --backend s3 --s3-endpoint "$EP" --s3-bucket "$b" --s3-http \
            --s3-signature $sig >/dev/null || exit 1
        m refr "$CAIRN" refresh --store "$ROOT/b"
        m cold restore "$ROOT/b" "$id"
        m cold2 restore "$ROOT/b" "$id"
        rm -rf "$ROOT/a" "$ROOT/b"
        purge "$b"
    done
    T[$sig.ingest]=$(best "${ing[@]}")
    T[$sig.warm]=$(best "${warm[@]}")
    T[$sig.cold]=$(best "${cold[@]}")
    T[$sig.cold2]=$(best "${cold2[@]}")
    T[$sig.refresh]=$(best "${refr[@]}")
done

ratio() { awk -v l="$1" -v s="$2" 'BEGIN { printf "%.2fx", l / s }'; }
mbs() { awk -v t="$1" -v m="$MIB" 'BEGIN { printf "%.0f MB/s", m * 1.048576 / t }'; }
verdict() { awk -v l="$1" -v s="$2" -v t="$3" 'BEGIN { print (l / s >= t ? "ok" : "MISSED") }'; }
echo "bench-s3: $MIB MiB of random pages, Ceph RGW on loopback, best of $RUNS; ratio = local time / S3 time"
printf '%-34s %10s %10s %10s %10s\n' "" local "S3 V4" "S3 V2" target
printf '%-34s %9ss %9ss %9ss\n' "ingest (snapshot)" "${T[local.ingest]}" "${T[v4.ingest]}" "${T[v2.ingest]}"
printf '%-34s %10s %10s %10s %10s\n' "  throughput, ratio" "$(mbs "${T[local.ingest]}")" \
    "$(ratio "${T[local.ingest]}" "${T[v4.ingest]}")" "$(ratio "${T[local.ingest]}" "${T[v2.ingest]}")" ">= 0.5x"
printf '%-34s %9ss %9ss %9ss\n' "restore, warm (node's cache)" "${T[local.restore]}" "${T[v4.warm]}" "${T[v2.warm]}"
printf '%-34s %10s %10s %10s %10s\n' "  throughput, ratio" "$(mbs "${T[local.restore]}")" \
    "$(ratio "${T[local.restore]}" "${T[v4.warm]}")" "$(ratio "${T[local.restore]}" "${T[v2.warm]}")" ">= 0.8x"
printf '%-34s %10s %9ss %9ss\n' "restore, cold (fresh node)" "" "${T[v4.cold]}" "${T[v2.cold]}"
printf '%-34s %10s %10s %10s %10s\n' "  ratio" "" \
    "$(ratio "${T[local.restore]}" "${T[v4.cold]}")" "$(ratio "${T[local.restore]}" "${T[v2.cold]}")" ">= 0.3x"
printf '%-34s %10s %9ss %9ss\n' "restore again on it (group cache)" "" "${T[v4.cold2]}" "${T[v2.cold2]}"
printf '%-34s %10s %10s %10s\n' "  ratio" "" \
    "$(ratio "${T[local.restore]}" "${T[v4.cold2]}")" "$(ratio "${T[local.restore]}" "${T[v2.cold2]}")"
printf '%-34s %10s %9ss %9ss\n' "refresh of the fresh node" "" "${T[v4.refresh]}" "${T[v2.refresh]}"
for sig in v4 v2; do
    echo "bench-s3: $sig targets: ingest $(verdict "${T[local.ingest]}" "${T[$sig.ingest]}" 0.5)," \
        "warm $(verdict "${T[local.restore]}" "${T[$sig.warm]}" 0.8)," \
        "cold $(verdict "${T[local.restore]}" "${T[$sig.cold]}" 0.3)"
done
