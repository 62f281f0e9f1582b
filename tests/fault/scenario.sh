# Sourced by tests/integration/faults.slow.sh and crashpoints.slow.sh (after tests/lib.sh):
# one small store and the four operations the fault shim (tests/fault/fault.c) interrupts,
# with the checks every interrupted run must pass.
#
# The base store ($T/base): template "base"; sandbox box (tenant acme, pro) with two
# snapshots B1, B2; sandbox keep (acme) with K1, pinned, and K2; sandbox old (tenant beta,
# free) with O1. The operations:
#   ingest    snapshot B3 of box (new memory and disk pages, a file index)
#   gc        gc --now +10 days: reclaims old (a files-only snapshot, O1 goes), drops B1
#             (superseded), sweeps and rewrites packs
#   reindex   fsck --rebuild-index
#   rebuild   rebuild --sandbox box --out $W/rebuilt.img
# Scratch files go to $W (see below), so that workers can try points side by side.
# Survivors, whatever happened: B2 (box's latest until B3 is acknowledged), K1 (pinned),
# K2 (keep's latest): each restores byte-exact after every interruption.

FAULT_LIB=$BUILD/libcairn-fault.so
# W: the scratch folder of the points being tried (the interrupted store's outputs, fsck's
# and the restores'): $T, or one per worker when points run side by side (run_points).
W=$T
[ -f "$FAULT_LIB" ] || fail "no $FAULT_LIB (run make first)"
DAY_MS=86400000

# in_files DIR SEED: memory and disk of one snapshot (disk: a small ext4 with a sandbox tree).
in_files() {
    mkdir -p "$1/tree"
    gen "$1/memory" $((256 << 10)) "$2" 30
    sandbox_tree "$1/tree" "$2"
    ext4_image "$1/tree" "$1/disk" 4M
}
in_spec() { echo "memory=$1/memory disk=$1/disk"; }

make_base() {
    local B=$T/base
    must cairn init --store "$B" >/dev/null
    base_template "$B"
    for x in b1:1 b2:2 b3:3 k1:4 k2:5 o1:6; do in_files "$T/in/${x%%:*}" "${x#*:}"; done
    B1=$(snap "$B" acme box $(in_spec "$T/in/b1"))
    K1=$(snap "$B" acme keep $(in_spec "$T/in/k1"))
    O1=$(snap "$B" beta old $(in_spec "$T/in/o1"))
    B2=$(snap "$B" acme box $(in_spec "$T/in/b2"))
    K2=$(snap "$B" acme keep $(in_spec "$T/in/k2"))
    must cairn tier --store "$B" --tenant acme pro >/dev/null
    must cairn pin --store "$B" --snapshot "$K1" >/dev/null
    NOW_GC=$(( $(date +%s%3N) + 10 * DAY_MS ))
    GC_NOW=$(date -u -d "@$((NOW_GC / 1000))" +%Y-%m-%dT%H:%M:%SZ)
    # What a clean rebuild writes, to compare an interrupted one's output with.
    must cairn rebuild --store "$B" --sandbox box --template base --out "$T/rebuilt.ref" >/dev/null
}

# op_args OP STORE: the command line of an operation.
op_cmd() {
    local op=$1 S=$2
    case $op in
        ingest)  echo snapshot --store "$S" --tenant acme --sandbox box --template base \
                      --memory "$T/in/b3/memory" --disk "$T/in/b3/disk" --json ;;
        gc)      echo gc --store "$S" --now "$GC_NOW" --json ;;
        reindex) echo fsck --store "$S" --rebuild-index --json ;;
        rebuild) echo rebuild --store "$S" --sandbox box --template base --out "$W/rebuilt.img" --json ;;
    esac
}

# fresh STORE: a copy of the base store to interrupt.
fresh() { rm -rf "$1" "$W/rebuilt.img" "$W/rebuilt.img.tmp"; cp -a "$T/base" "$1"; }

# shim_run OUT ENV...: runs cairn with the shim and the given CAIRN_FAULT_* settings
# (cairn's arguments in $CMD); exit status in $RC, stdout/stderr in OUT.out/OUT.err.
shim_run() {
    local out=$1; shift
    RC=0
    # In a subshell whose stderr is dropped: bash reports a job killed by a signal there.
    # (exit $? keeps bash from exec'ing the command, so the report goes to /dev/null.)
    ( env LD_PRELOAD="$FAULT_LIB" CAIRN_FAULT_SKIP="${FAULT_SKIP:-}" CAIRN_FAULT_ONLY="${FAULT_ONLY:-}" "$@" timeout -k 5 "$CAIRN_TIMEOUT" "$CAIRN_BIN" $CMD \
        >"$out.out" 2>"$out.err"; exit $? ) 2>/dev/null || RC=$?
}

# run_op OP OUT ENV...: OP on a fresh copy of the base store, $W/s, under the shim with the
# given CAIRN_FAULT_* settings (shim_run: exit status in $RC, output in OUT.out, OUT.err).
run_op() {
    local op=$1; shift
    fresh "$W/s"
    CMD=$(op_cmd "$op" "$W/s")
    shim_run "$@"
}

# clean_count OP: how many counted calls a clean run of OP makes (the largest of 3 runs:
# RocksDB's background threads make the count vary by a few).
clean_count() {
    local op=$1 max=0 i n
    for i in 1 2 3; do
        run_op "$op" "$T/count" CAIRN_FAULT_COUNT="$T/count.n"
        [ "$RC" = 0 ] || { cat "$T/count.err" >&2; fail "clean $op failed (exit $RC)"; }
        n=$(cut -d' ' -f1 "$T/count.n")
        [ "$n" -gt "$max" ] && max=$n
    done
    echo "$max"
}

# restores_exact STORE ID DIR [DROPPABLE]: the snapshot restores to DIR's memory and disk,
# byte-exact. DROPPABLE: a snapshot gc was dropping (B1, O1) may instead be refused as
# dropped (the drop event is logged before the manifest goes; the next gc finishes it).
restores_exact() {
    # Restores run in parallel: a name from $RANDOM is not sure to be free (crashpoints.slow
    # once found two restores in one folder, the second refused as busy); mktemp makes it so.
    local o err
    o=$(mktemp -d "$W/r.XXXXXX") && err=$(mktemp "$W/restore.err.XXXXXX") || { echo "mktemp in $W failed"; return 1; }
    timeout -k 5 "$CAIRN_TIMEOUT" "$CAIRN_BIN" restore --store "$1" --snapshot "$2" --out "$o" \
        >/dev/null 2>"$err" || {
        [ "${4:-}" = droppable ] && grep -q 'was dropped by gc' "$err" && { rm -f "$err"; return 0; }
        echo "restore of $2 failed: $(head -c 300 "$err")"; rm -f "$err"; return 1; }
    rm -f "$err"
    cmp -s "$o/memory" "$3/memory" && cmp -s "$o/disk" "$3/disk" || { rm -rf "$o"; echo "restore of $2 differs from $3"; return 1; }
    rm -rf "$o"
}

# ids_kinds STORE SANDBOX: "ID:KIND" of each snapshot listed (no Python: this runs per point).
ids_kinds() {
    # Each record names its snapshot before its kind.
    timeout -k 5 "$CAIRN_TIMEOUT" "$CAIRN_BIN" snapshots --store "$1" --sandbox "$2" --json 2>"$W/list.err" |
        grep -o '"snapshot":"[0-9a-f]*"\|"kind":"[a-z]*"' | cut -d'"' -f4 | paste -d: - -
    return "${PIPESTATUS[0]}"
}

# check_store OP STORE: after an interrupted OP. Prints nothing and returns 0 when fsck is
# clean, the survivors restore byte-exact and nothing unexpected is listed; else says why.
# Restores run two at a time (they share the store's read lock).
check_store() {
    local op=$1 S=$2 sb x list=() dirs=()
    timeout -k 5 "$CAIRN_TIMEOUT" "$CAIRN_BIN" fsck --store "$S" --json >"$W/fsck.json" 2>"$W/fsck.err" ||
        { echo "fsck not clean: $(head -c 400 "$W/fsck.json") $(head -c 200 "$W/fsck.err")"; return 1; }
    list=()
    # Every snapshot listed is one we know (or the interrupted ingest's, complete).
    for sb in box keep old; do
        local got; got=$(ids_kinds "$S" "$sb") || { echo "snapshots --sandbox $sb failed: $(head -c 300 "$W/list.err")"; return 1; }
        for x in $got; do
            local id=${x%%:*} kind=${x#*:}
            case $id in
                "$B1") list+=("$id:b1:droppable") ;;
                "$O1") list+=("$id:o1:droppable") ;;
                "$B2") list+=("$id:b2") ;;
                "$K1") list+=("$id:k1") ;;
                "$K2") list+=("$id:k2") ;;
                *)  if [ "$sb" = box ] && [ "$op" = ingest ] && [ "$kind" = full ]; then
                        list+=("$id:b3")
                    elif [ "$sb" = old ] && [ "$kind" = files ]; then
                        timeout -k 5 "$CAIRN_TIMEOUT" "$CAIRN_BIN" cat --store "$S" --snapshot "$id" \
                            /home/ubuntu/output/report.md --actor test >"$W/cat.out" 2>"$W/cat.err" &&
                            cmp -s "$W/cat.out" "$T/in/o1/tree/home/ubuntu/output/report.md" ||
                            { echo "files-only $id of old: report.md wrong or unreadable: $(head -c 200 "$W/cat.err")"; return 1; }
                    else
                        echo "unexpected snapshot $id ($kind) of $sb after an interrupted $op"; return 1
                    fi ;;
            esac
        done
    done
    for sb in b2 k1 k2; do
        case " ${list[*]} " in *":$sb "*) ;; *) echo "snapshot $sb is gone"; return 1 ;; esac
    done
    local pids=() k=0 bad=0
    for x in "${list[@]}"; do
        local f=(${x//:/ })
        restores_exact "$S" "${f[0]}" "$T/in/${f[1]}" "${f[2]:-}" >"$W/rx.$k" &
        pids+=($!); k=$((k + 1))
        if [ ${#pids[@]} = 2 ]; then wait "${pids[0]}" || bad=1; pids=("${pids[1]}"); fi
    done
    for x in "${pids[@]}"; do wait "$x" || bad=1; done
    [ "$bad" = 0 ] || { cat "$W"/rx.*; rm -f "$W"/rx.*; return 1; }
    rm -f "$W"/rx.*
    if [ "$op" = rebuild ] && [ -e "$W/rebuilt.img" ]; then
        [ "$(size_of "$W/rebuilt.img")" = "$(size_of "$T/rebuilt.ref")" ] &&
            e2fsck -fn "$W/rebuilt.img" >"$W/e2fsck.log" 2>&1 ||
            { echo "an interrupted rebuild left a damaged $W/rebuilt.img: $(tail -3 "$W/e2fsck.log")"; return 1; }
    fi
    return 0
}

# works_again OP STORE: the operation, run again without faults, succeeds and fsck is clean.
works_again() {
    local op=$1 S=$2
    rm -f "$W/rebuilt.img"
    timeout -k 5 "$CAIRN_TIMEOUT" "$CAIRN_BIN" $(op_cmd "$op" "$S") >"$W/again.out" 2>"$W/again.err" ||
        { echo "$op without the fault failed: $(head -c 300 "$W/again.err")"; return 1; }
    timeout -k 5 "$CAIRN_TIMEOUT" "$CAIRN_BIN" fsck --store "$S" --json >"$W/fsck.json" 2>"$W/fsck.err" ||
        { echo "fsck after $op without the fault: $(head -c 400 "$W/fsck.json")"; return 1; }
    local latest; latest=$(ids_kinds "$S" box | head -1) || return 1
    latest=${latest%%:*}
    case $op in
        ingest) restores_exact "$S" "$latest" "$T/in/b3" || return 1 ;;
        *)      restores_exact "$S" "$latest" "$T/in/b2" || return 1 ;;
    esac
    if [ "$op" = rebuild ]; then
        e2fsck -fn "$W/rebuilt.img" >"$W/e2fsck.log" 2>&1 || { echo "rebuild output is damaged: $(tail -3 "$W/e2fsck.log")"; return 1; }
    fi
    return 0
}

# run_points JOBS FN K...: FN K for every K, split over JOBS workers side by side (each in
# its own scratch folder $W = $T/wN, with its own store $W/s). A point costs mostly waiting
# (fsyncs, process starts), so two workers take about half the time even on a busy machine.
# FN prints one word per point (its outcome); run_points prints them all, in any order,
# and fails the test with the first worker's failure.
run_points() {
    local jobs=$1 fn=$2; shift 2
    local pts=("$@") pids=() j
    for ((j = 0; j < jobs; j++)); do
        (
            W=$T/w$j
            rm -rf "$W"; mkdir -p "$W"
            for ((i = j; i < ${#pts[@]}; i += jobs)); do "$fn" "${pts[i]}"; done
        ) >"$T/w$j.out" &
        pids+=($!)
    done
    local bad=0
    for j in "${!pids[@]}"; do wait "${pids[j]}" || bad=1; done
    cat "$T"/w*.out
    [ "$bad" = 0 ] || fail "a worker failed (its FAIL line is above)"
    rm -rf "$T"/w*
}
