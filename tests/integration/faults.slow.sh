#!/usr/bin/env bash
# Issue 9, faults: the fault shim (tests/fault/fault.c) makes the N-th call that changes a
# file fail (Cairn's or RocksDB's): EIO once, ENOSPC from then on (a disk that stays full),
# or a short write (half the bytes; the caller must write the rest). For an ingest, a gc, an
# index rebuild and a rebuild, at points spread over the whole run, the operation must
# exit 0 (the fault was absorbed) or 1 with a message (never a crash, an abort, a hang),
# lose nothing (fsck clean, every acknowledged snapshot restores byte-exact, nothing
# half-made is listed), and once the fault is gone the same operation succeeds.
# RocksDB's own files (index/) are left out: Debian's RocksDB 7.8 is built with assertions,
# and a write or sync that fails inside it aborts the process (WritableFileWriter::
# AssertFalseAndGetStatusForPrevError), whatever Cairn does. Cairn keeps RocksDB off a full
# disk instead (store/space.c; enospc.sh fills a real filesystem), and the crash-point test
# does stop the process inside RocksDB's writes.
#   FAULT_OPS="ingest gc"     only these operations
#   FAULT_MODES="eio short"   only these modes
#   FAULT_POINTS=P            points per operation and mode, spread evenly (default 3;
#                             0: every point, which make reliability runs)
. "$(dirname "$0")/../lib.sh"
. "$REPO/tests/fault/scenario.sh"

OPS=${FAULT_OPS:-ingest gc reindex rebuild}
FAULT_SKIP=/index
MODES=${FAULT_MODES:-eio enospc short}
POINTS=${FAULT_POINTS:-3}
t0=$EPOCHREALTIME
make_base
injected=0 survived=0 absorbed=0
for op in $OPS; do
    for mode in $MODES; do
        # A short write is a fault of the write family only: count those alone.
        fresh "$T/s"
        CMD=$(op_cmd "$op" "$T/s")
        if [ "$mode" = short ]; then
            shim_run "$T/count" CAIRN_FAULT_MODE=short CAIRN_FAULT_COUNT="$T/count.n"
            n=$(cut -d' ' -f1 "$T/count.n")
        else
            n=$(clean_count "$op")
        fi
        step=1
        [ "$POINTS" -gt 0 ] && [ "$n" -gt "$POINTS" ] && step=$(( (n + POINTS - 1) / POINTS ))
        sticky=0; [ "$mode" = enospc ] && sticky=1
        m_inj=0 m_abs=0
        for ((k = 1 + (step > 1 ? step / 2 : 0); k <= n; k += step)); do
            fresh "$T/s"
            CMD=$(op_cmd "$op" "$T/s")
            rm -f "$T/fault.log"
            shim_run "$T/f" CAIRN_FAULT_MODE=$mode CAIRN_FAULT_AT=$k CAIRN_FAULT_STICKY=$sticky \
                CAIRN_FAULT_LOG="$T/fault.log"
            [ -s "$T/fault.log" ] || continue          # this run made fewer calls: nothing injected
            at=$(head -1 "$T/fault.log" | cut -d' ' -f2)
            what="$op, $mode at call $k ($at)"
            case $RC in
                0) m_abs=$((m_abs + 1)) ;;
                1) [ -s "$T/f.err" ] || fail "$what: exit 1 without a message" ;;
                *) cat "$T/f.err" >&2; fail "$what: exit $RC (expected 0, or 1 with a message)" ;;
            esac
            grep -qiE 'assert|abort|sanitizer|core dumped' "$T/f.err" && { cat "$T/f.err" >&2; fail "$what: $(head -1 "$T/f.err")"; }
            m_inj=$((m_inj + 1))
            why=$(check_store "$op" "$T/s") || fail "$what, exit $RC: $why (stderr: $(head -c 300 "$T/f.err"))"
            why=$(works_again "$op" "$T/s") || fail "$what, exit $RC, then without the fault: $why"
        done
        log "$op/$mode: $n calls; $m_inj faults injected ($m_abs absorbed with exit 0, $((m_inj - m_abs)) failed cleanly), all survived"
        injected=$((injected + m_inj)); survived=$((survived + m_inj)); absorbed=$((absorbed + m_abs))
    done
done
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
log "faults: $injected injected, $survived survived ($absorbed absorbed) in ${secs}s"
echo "faults injected=$injected survived=$survived secs=$secs" >"${RELIABILITY_OUT:-/dev/null}"
