#!/usr/bin/env bash
# make reliability: the whole issue-9 harness at full strength, one table at the end, kept
# in docs/reliability.md.
#   crash points   every N of an ingest, a gc, an index rebuild and a rebuild (kill -9)
#   faults         EIO, ENOSPC (sticky) and short writes at every I/O point of the same four
#   fuzz           every libFuzzer target for RELIABILITY_FUZZ_SECONDS (default 30) each
#   collisions     the 16-bit chunk id build
#   sanitizers     the fast suite (tests/run.sh --fast) built with ASan and with UBSan;
#                  RELIABILITY_SAN_TESTS="NAME..." runs only those tests
#   valgrind       `make valgrind`: the CLI tests with cairn under memcheck (the Makefile's
#                  VALGRIND_TESTS or RELIABILITY_VALGRIND_TESTS); RELIABILITY_VALGRIND=0 leaves it out
# A sanitizer's or valgrind's report fails its test whatever the exit status (tests/run.sh).
# RELIABILITY_CRASH_STRIDE=K and RELIABILITY_FAULT_POINTS=P make a lighter run (the table
# says "every N" only for K=1).
# Takes about an hour on 2 cores (~600 crash points and ~1 500 faults, two at a time, ~35 min;
# the fast suite under ASan and UBSan and the CLI tests under valgrind the rest; not yet timed
# as one run); docs/reliability.md has the parts' times.
# Exit 1 if any part failed; the table says which.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUILD=${BUILD:-build}
FUZZ_SECS=${RELIABILITY_FUZZ_SECONDS:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-reliability.XXXXXX")
trap 'rm -rf "$work"' EXIT
rows=() failed=0 t_all=$EPOCHREALTIME
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }'; }
row() { rows+=("$(printf '| %-34s | %-44s | %6ss |' "$1" "$2" "$3")"); }
kv() { grep -o "$1=[0-9]*" "$2" 2>/dev/null | cut -d= -f2; }

# run_script NAME ENV...: one integration script directly (no 600 s cap of tests/run.sh).
run_script() {
    local name=$1; shift
    mkdir -p "$work/$name"
    ( cd "$work/$name" && env "$@" BUILD="$REPO/$BUILD" TEST_TMP="$work/$name" RELIABILITY_OUT="$work/$name.out" \
        timeout -k 10 3600 "$REPO/tests/integration/$name.slow.sh" ) >"$work/$name.log" 2>&1
}

# script_row NAME LABEL SUMMARY ENV...: run_script NAME ENV..., then its row: SUMMARY with
# each {KEY} in it replaced by the count KEY=N of NAME.out, or FAILED and its first FAIL line.
script_row() {
    local name=$1 label=$2 res=$3 t0=$EPOCHREALTIME key; shift 3
    if run_script "$name" "$@"; then
        while [[ $res =~ \{([a-z]+)\} ]]; do
            key=${BASH_REMATCH[1]}
            res=${res//"{$key}"/$(kv "$key" "$work/$name.out")}
        done
    else
        failed=1; res="FAILED: $(grep -m1 FAIL "$work/$name.log" | cut -c1-120)"
    fi
    row "$label" "$res" "$(secs "$t0")"
}

echo "reliability: building" >&2
make -s -j2 BUILD="$BUILD" all >/dev/null || { echo "reliability: make failed" >&2; exit 1; }

echo "reliability: crash points" >&2
cstride=${RELIABILITY_CRASH_STRIDE:-1}
every="every point"; [ "$cstride" = 1 ] || every="every ${cstride}th point"
script_row crashpoints "crash points (kill -9, $every)" "{tried} tried, {survived} survived" CRASH_STRIDE="$cstride"
grep -E '^crashpoints.slow: (ingest|gc|reindex|rebuild):' "$work/crashpoints.log" | sed 's/^crashpoints.slow: /    /' >"$work/crash.detail"

echo "reliability: faults (every point)" >&2
script_row faults "faults (EIO, ENOSPC, short write)" "{injected} injected, {survived} survived" \
    FAULT_POINTS="${RELIABILITY_FAULT_POINTS:-0}"
grep -E '^faults.slow: [a-z]+/' "$work/faults.log" | sed 's/^faults.slow: /    /' >"$work/faults.detail"

echo "reliability: fuzzing (${FUZZ_SECS}s per target)" >&2
t0=$EPOCHREALTIME
FUZZ_SECONDS=$FUZZ_SECS FUZZ_DIR="$REPO/build-fuzz/reliability" tools/fuzz.sh >"$work/fuzz.log" 2>&1 || failed=1
while read -r t n c s; do
    row "fuzz: $t" "$n executions, $c crashes" "$s"
    [ "$c" = 0 ] || failed=1
done <"$REPO/build-fuzz/reliability/summary"

echo "reliability: collisions" >&2
script_row collisions "collisions (16-bit chunk ids)" "{restores} restores verified, {detected} collisions refused"

SAN_TESTS=${RELIABILITY_SAN_TESTS:---fast}
# summary LOG: tests/run.sh's count line in LOG, and which tests failed.
summary() {
    local res fails
    res=$(tail -n 4 "$1" | grep -E '^[0-9]+ passed' || echo "no summary")
    fails=$(sed -n 's/^failed: //p' "$1")
    echo "$res${fails:+; failed: $fails}"
}
for san in address undefined; do
    echo "reliability: $san sanitizer ($SAN_TESTS)" >&2
    t0=$EPOCHREALTIME
    b=build-asan; [ "$san" = undefined ] && b=build-ubsan
    if make -s -j2 BUILD="$b" SAN=$san OPT=-O1 all >"$work/$san.make" 2>&1; then
        # shellcheck disable=SC2086
        BUILD=$b tests/run.sh $SAN_TESTS >"$work/$san.log" 2>&1 || failed=1
        res=$(summary "$work/$san.log")
    else
        res="build failed"; failed=1
    fi
    row "sanitizer: $san ($( [ "$SAN_TESTS" = --fast ] && echo 'fast suite' || echo "$SAN_TESTS"))" "$res" "$(secs "$t0")"
done

if [ "${RELIABILITY_VALGRIND:-1}" = 1 ]; then
    echo "reliability: valgrind (make valgrind)" >&2
    t0=$EPOCHREALTIME
    make -s BUILD="$BUILD" valgrind ${RELIABILITY_VALGRIND_TESTS:+VALGRIND_TESTS="$RELIABILITY_VALGRIND_TESTS"} \
        >"$work/valgrind.log" 2>&1 || failed=1
    res=$(summary "$work/valgrind.log")
    row "valgrind memcheck: CLI tests (make valgrind)" "$res" "$(secs "$t0")"
fi

total=$(secs "$t_all")
{
    echo "# Reliability: the last \`make reliability\`"
    echo
    echo "Written by tools/reliability.sh on $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'),"
    echo "$(nproc) cores, in ${total}s. What each row checks is in the header of its script:"
    echo "tests/integration/crashpoints.slow.sh, faults.slow.sh, collisions.slow.sh, tools/fuzz.sh."
    echo "\`make test\` runs the same scripts lighter (every 8th crash point from a random first one,"
    echo "3 faults per operation and mode and 2 more on index/ alone, 4 s of fuzzing per target)."
    echo
    echo "How it works. tests/fault/fault.c is an LD_PRELOAD shim that counts the calls of a cairn"
    echo "process that change files (write family, fsync, fdatasync, rename, unlink, truncate,"
    echo "fallocate, link, mkdir; RocksDB's included) and fails the N-th one (EIO; ENOSPC from then"
    echo "on; a short write) or SIGKILLs the process before it. A clean run is counted first, then"
    echo "every N is tried on a fresh copy of a small store (templates, pins, a pro and a free"
    echo "tenant), and each time: fsck is clean, every acknowledged snapshot restores byte-exact,"
    echo "nothing unknown is listed, a killed rebuild leaves no damaged image; after a fault, the"
    echo "same operation without it succeeds."
    echo
    echo "RocksDB's own files (index/) are faulted too. A failed write or sync there comes back"
    echo "as a clean error, or is absorbed (a flush at close: the WAL keeps the data), except in"
    echo "its info LOG, whose writer (Debian's RocksDB 7.8, assertions compiled in) asserts on"
    echo "the line after a failed write: tools/cli_assert.c makes that one assertion an exit 1"
    echo "with a message, a stop the crash points prove safe. Reads are not faulted here"
    echo "(tests/fault/failio.c does readdir/pread). Points run two at a time (CRASH_JOBS,"
    echo "FAULT_JOBS), each on its own copy of the store: a point mostly waits on fsyncs."
    echo
    echo "Sanitizers. tests/run.sh sends every ASan, LeakSanitizer and UBSan report to a file of its"
    echo "own (log_path) and fails a test that leaves one, whatever its exit status (ASan exits 1, as"
    echo "a cairn refusing bad input does; a confined parser's stderr is /dev/null). Under valgrind"
    echo "a process's log counts when its error summary is not 0 (definite leaks are errors). Time"
    echo "limits are stretched by CAIRN_TIME_SCALE (3 under a sanitizer, 20 under valgrind), never"
    echo "the assertions. Third-party suppressions, each with its reason: tests/valgrind.supp."
    echo
    echo "| what | result | time |"
    echo "|---|---|---|"
    for r in "${rows[@]}"; do echo "$r"; done
    echo
    echo "Per operation (crash points):"
    echo
    sed 's/^    /- /' "$work/crash.detail"
    echo
    echo "Per operation and fault (faults):"
    echo
    sed 's/^    /- /' "$work/faults.detail"
    # What follows the marker in the old file (findings, known limits) is kept.
    sed -n '/^<!-- kept by tools\/reliability.sh -->$/,$p' docs/reliability.md
} >"$work/reliability.md"
cp "$work/reliability.md" docs/reliability.md
printf '%s\n' "| what | result | time |" "${rows[@]}"
echo "total ${total}s; written to docs/reliability.md"
[ "$failed" = 0 ] || { echo "reliability: FAILED (see the table)" >&2; exit 1; }
