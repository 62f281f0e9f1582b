#!/usr/bin/env bash
# Issue 9, faults: the fault shim (tests/fault/fault.c) makes the N-th call that changes a
# file fail (Cairn's or RocksDB's): EIO once, ENOSPC from then on (a disk that stays full),
# or a short write (half the bytes; the caller must write the rest). For an ingest, a gc, an
# index rebuild and a rebuild, at points spread over the whole run, the operation must
# exit 0 (the fault was absorbed) or 1 with a message (never a crash, an abort, a hang),
# lose nothing (fsck clean, every acknowledged snapshot restores byte-exact, nothing
# half-made is listed), and once the fault is gone the same operation succeeds.
# RocksDB's own files (index/) are faulted like the rest: a failed write or sync there comes
# back as a clean error, or is absorbed (a flush at close: the WAL keeps the data). The one
# exception, RocksDB's info LOG, whose writer asserts after a failed write, ends in exit 1
# with a message too (tools/cli_assert.c). Besides the points spread over all calls, a
# second pass puts FAULT_INDEX_POINTS (default 2) EIO and ENOSPC points on index/ alone
# (skipped with FAULT_POINTS=0: every point is tried then anyway).
#   FAULT_OPS="ingest gc"     only these operations
#   FAULT_MODES="eio short"   only these modes
#   FAULT_POINTS=P            points per operation and mode, spread evenly (default 3;
#                             0: every point, which make reliability runs)
#   FAULT_JOBS=J              points tried side by side (default 2; each on its own store)
. "$(dirname "$0")/../lib.sh"
. "$REPO/tests/fault/scenario.sh"

OPS=${FAULT_OPS:-ingest gc reindex rebuild}
MODES=${FAULT_MODES:-eio enospc short}
POINTS=${FAULT_POINTS:-3}
IPOINTS=${FAULT_INDEX_POINTS:-2}
JOBS=${FAULT_JOBS:-2}

# fault_point K: $op with $mode injected at call K on a fresh store, then checked and run
# again without the fault; prints absorbed (exit 0), failed (exit 1 with a message) or
# none (the run made fewer than K calls).
fault_point() {
    local k=$1
    rm -f "$W/fault.log"
    run_op "$op" "$W/f" CAIRN_FAULT_MODE=$mode CAIRN_FAULT_AT=$k CAIRN_FAULT_STICKY=$sticky \
        CAIRN_FAULT_LOG="$W/fault.log"
    [ -s "$W/fault.log" ] || { echo none; return 0; }
    local at what
    at=$(head -1 "$W/fault.log" | cut -d" " -f2-)
    what="$op, $mode at call $k ($at)"
    case $RC in
        0|1) ;;
        *) cat "$W/f.err" >&2; fail "$what: exit $RC (expected 0, or 1 with a message)" ;;
    esac
    [ "$RC" = 0 ] || [ -s "$W/f.err" ] || fail "$what: exit 1 without a message"
    grep -qiE 'assert|abort|sanitizer|core dumped' "$W/f.err" && { cat "$W/f.err" >&2; fail "$what: $(head -1 "$W/f.err")"; }
    why=$(check_store "$op" "$W/s") || fail "$what, exit $RC: $why (stderr: $(head -c 300 "$W/f.err"))"
    why=$(works_again "$op" "$W/s") || fail "$what, exit $RC, then without the fault: $why"
    [ "$RC" = 0 ] && echo absorbed || echo failed
}

t0=$EPOCHREALTIME
make_base
injected=0 survived=0 absorbed=0
passes=("all:$MODES:$POINTS")
[ "$POINTS" -gt 0 ] && [ "$IPOINTS" -gt 0 ] && passes+=("index:$(sed 's/short//' <<<"$MODES"):$IPOINTS")
for pass in "${passes[@]}"; do
  scope=${pass%%:*} pmodes=${pass#*:}; pmodes=${pmodes%:*}; POINTS=${pass##*:}
  FAULT_ONLY=; [ "$scope" = index ] && FAULT_ONLY=/index
  for op in $OPS; do
    for mode in $pmodes; do
        # A short write is a fault of the write family only: count those alone.
        if [ "$mode" = short ]; then
            run_op "$op" "$T/count" CAIRN_FAULT_MODE=short CAIRN_FAULT_COUNT="$T/count.n"
            n=$(cut -d' ' -f1 "$T/count.n")
        else
            n=$(clean_count "$op")
        fi
        step=1
        [ "$POINTS" -gt 0 ] && [ "$n" -gt "$POINTS" ] && step=$(( (n + POINTS - 1) / POINTS ))
        sticky=0; [ "$mode" = enospc ] && sticky=1
        points=()
        for ((k = 1 + (step > 1 ? step / 2 : 0); k <= n; k += step)); do points+=("$k"); done
        run_points "$JOBS" fault_point "${points[@]}" >"$T/outcomes"
        m_inj=$(grep -c -e absorbed -e failed "$T/outcomes" || true)
        m_abs=$(grep -c absorbed "$T/outcomes" || true)
        log "$op/$mode${FAULT_ONLY:+ (index/ only)}: $n calls; $m_inj faults injected ($m_abs absorbed with exit 0, $((m_inj - m_abs)) failed cleanly), all survived"
        injected=$((injected + m_inj)); survived=$((survived + m_inj)); absorbed=$((absorbed + m_abs))
    done
  done
done
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
log "faults: $injected injected, $survived survived ($absorbed absorbed) in ${secs}s"
echo "faults injected=$injected survived=$survived secs=$secs" >"${RELIABILITY_OUT:-/dev/null}"
