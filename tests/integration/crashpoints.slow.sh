#!/usr/bin/env bash
# Issue 9, crash points: the fault shim (tests/fault/fault.c) in kill mode stops cairn
# (SIGKILL, as kill -9 or a power cut of the process would) before the N-th call that
# changes a file: write, pwrite, fsync, fdatasync, rename, unlink, truncate, mkdir, ...
# whether Cairn or RocksDB makes it, for EVERY N of a clean run of: an ingest, a gc
# (reclaim, drop, sweep, rewrite), an index rebuild (fsck --rebuild-index) and a rebuild.
# After each: fsck clean, every acknowledged snapshot restores byte-exact, nothing
# unacknowledged appears (tests/fault/scenario.sh says what each check is).
#   CRASH_OPS="ingest gc"   only these operations
#   CRASH_STRIDE=K          every K-th point only (default 8, to fit make test; make
#                           reliability runs 1: every point)
#   CRASH_JOBS=J            points tried side by side (default 2; each on its own store)
# Prints the points tried per operation; the last line is the summary make reliability reads.
. "$(dirname "$0")/../lib.sh"
. "$REPO/tests/fault/scenario.sh"

OPS=${CRASH_OPS:-ingest gc reindex rebuild}
STRIDE=${CRASH_STRIDE:-8}
JOBS=${CRASH_JOBS:-2}

# crash_point K: $op killed at call K on a fresh store, then checked; prints killed|ended.
crash_point() {
    local k=$1
    run_op "$op" "$W/kill" CAIRN_FAULT_MODE=kill CAIRN_FAULT_AT="$k"
    if [ "$RC" != 0 ] && [ "$RC" != 137 ]; then
        cat "$W/kill.err" >&2; fail "$op with a kill at call $k exited $RC, not 137 (SIGKILL)"
    fi
    why=$(check_store "$op" "$W/s") || fail "$op killed at call $k of $n: $why"
    [ "$RC" = 0 ] && echo ended || echo killed     # 0: the run made fewer than k calls
}

t0=$EPOCHREALTIME
make_base
tried=0 survived=0 finished=0
for op in $OPS; do
    n=$(clean_count "$op")
    # A few points past the clean count: RocksDB's background work varies the count.
    # With a stride, a random first point: runs in CI cover every point over time.
    first=$(( ${CRASH_FIRST:-$((RANDOM % STRIDE))} + 1 ))
    [ "$STRIDE" = 1 ] || log "$op: every ${STRIDE}th point from $first (CRASH_FIRST=$((first - 1)) to replay)"
    points=()
    for ((k = first; k <= n + 3; k += STRIDE)); do points+=("$k"); done
    run_points "$JOBS" crash_point "${points[@]}" >"$T/outcomes"
    o_tried=$(wc -l <"$T/outcomes")
    o_done=$(grep -c ended "$T/outcomes" || true)
    [ "$o_tried" = "${#points[@]}" ] || fail "$op: ${#points[@]} points, $o_tried outcomes"
    log "$op: $n calls in a clean run; $o_tried points tried ($((o_tried - o_done)) killed, $o_done ran to the end), all survived"
    tried=$((tried + o_tried)); survived=$((survived + o_tried)); finished=$((finished + o_done))
done
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
log "crash points: $tried tried, $survived survived ($finished ran to the end, $JOBS workers) in ${secs}s"
echo "crashpoints tried=$tried survived=$survived secs=$secs" >"${RELIABILITY_OUT:-/dev/null}"
