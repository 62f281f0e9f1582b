#!/usr/bin/env bash
# Runs the unit test binaries ($BUILD/tests/*), the integration scripts
# (tests/integration/*.sh) and the real-VM tests (tests/e2e/*.slow.sh), each in its
# own temporary directory; one line per test.  Exit 77 means "skipped" (reason printed).
#   tests/run.sh              everything
#   tests/run.sh --fast       without the *.slow.sh scripts
#   tests/run.sh --slow-only  only the *.slow.sh scripts
#   tests/run.sh NAME...      only the tests whose name contains one of NAME
# KEEP=1 keeps the directories of failed tests.
# VALGRIND=1 runs every cairn a test starts through tests/lib.sh under valgrind (memcheck).
# CAIRN_TIME_SCALE=K multiplies every time limit (the runner's and tests/lib.sh's); it is
# 3 by default for a sanitizer build (build-asan, build-ubsan) and 20 under valgrind.
# A sanitizer's or valgrind's report fails the test whatever its exit status.
set -uo pipefail

mode=all
filters=()
for a in "$@"; do
    case $a in
        --fast) mode=fast ;;
        --slow-only) mode=slow ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $a" >&2; exit 2 ;;
        *) filters+=("$a") ;;
    esac
done

BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
export BUILD
REPO=$(cd "$(dirname "$0")/.." && pwd)

root=$(mktemp -d "${TMPDIR:-/tmp}/cairn-tests.XXXXXX")

# Sanitizers exit 1 by default, the status of a cairn that failed as a test expects, and a
# confined child's report dies with the child: so every report goes to a file of its own
# (log_path, one per process), and a test that leaves one fails. halt_on_error: UBSan stops
# at its first finding (the build has -fno-sanitize-recover too).
case ${VALGRIND:-0} in
    1) scale_default=20
       # --error-exitcode too: a test that checks a status sees the finding at once.
       valgrind_cmd="valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite"
       valgrind_cmd+=" --errors-for-leak-kinds=definite --num-callers=30 --suppressions=$REPO/tests/valgrind.supp" ;;
    *) case $(basename "$BUILD") in build-asan*|build-ubsan*) scale_default=3 ;; *) scale_default=1 ;; esac ;;
esac
export CAIRN_TIME_SCALE=${CAIRN_TIME_SCALE:-$scale_default}
san_opts=${SAN_OPTIONS_EXTRA:-}
export CAIRN_TEST_CACHE=$root/cache
mkdir -p "$CAIRN_TEST_CACHE"

# A test that mounts something (enospc) unmounts it itself; this is the net
# under it, so rm -rf never runs across a mount point.
unmount_under() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
}
rgw_dir=
cleanup() {
    [ -z "$rgw_dir" ] || "$REPO/tests/rgw.sh" stop "$rgw_dir"
    unmount_under "$root"; rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tests=()
if [ "$mode" != slow ]; then
    for f in "$BUILD"/tests/*; do
        [ -f "$f" ] && [ -x "$f" ] && tests+=("$f")
    done
fi
for f in "$REPO"/tests/integration/*.sh "$REPO"/tests/e2e/*.slow.sh; do
    [ -e "$f" ] || continue
    case $f in
        *.slow.sh) [ "$mode" = fast ] && continue ;;
        *) [ "$mode" = slow ] && continue ;;
    esac
    tests+=("$f")
done

selected() {
    [ ${#filters[@]} -eq 0 ] && return 0
    local p
    for p in "${filters[@]}"; do case $1 in *"$p"*) return 0 ;; esac; done
    return 1
}

# The S3 tests (named s3*) share one Ceph cluster + radosgw, started once here (~12 s)
# and stopped at the end; each test makes its own buckets. When Ceph cannot run, the
# tests see no endpoint and skip with the reason (tests/lib.sh: need_s3).
for t in "${tests[@]}"; do
    case $(basename "$t") in
        s3*) ;;
        *) continue ;;
    esac
    case $t in "$REPO"/tests/integration/*) n=integration/$(basename "$t" .sh) ;; *) n=$t ;; esac
    selected "$n" || continue
    rgw_dir=$root/rgw
    "$REPO/tests/rgw.sh" start "$rgw_dir" >"$root/rgw.log" 2>&1
    case $? in
        0)  # shellcheck disable=SC1091
            . "$rgw_dir/env"
            echo "rgw: Ceph RGW on $CAIRN_TEST_S3_ENDPOINT for the S3 tests" ;;
        77) export CAIRN_TEST_S3_SKIP="$(grep -m1 -o 'SKIP.*' "$root/rgw.log")"
            echo "rgw: $CAIRN_TEST_S3_SKIP" ;;
        *)  # installed but broken: the S3 tests fail (with this reason), never skip
            export CAIRN_TEST_S3_ERROR="$(tail -n 5 "$root/rgw.log" | tr '\n' ' ')"
            echo "rgw: could not start: $CAIRN_TEST_S3_ERROR" ;;
    esac
    break
done

pass=0 failed=() skipped=()
start=$EPOCHREALTIME
for t in "${tests[@]}"; do
    case $t in
        "$REPO"/tests/integration/*) name=integration/$(basename "$t" .sh); limit=600 ;;
        "$REPO"/tests/e2e/*) name=e2e/$(basename "$t" .sh); limit=600 ;;
        *) name=unit/$(basename "$t"); limit=300 ;;
    esac
    selected "$name" || continue
    limit=$((limit * CAIRN_TIME_SCALE))
    dir=$root/$(echo "$name" | tr / _)
    reports=$dir.reports
    mkdir -p "$dir" "$reports"
    t0=$EPOCHREALTIME
    # timeout kills the test's whole process group, background jobs included.
    ( cd "$dir" &&
      export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$reports/asan${san_opts:+:$san_opts}"
      export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan${san_opts:+:$san_opts}"
      [ -z "${valgrind_cmd:-}" ] || export CAIRN_WRAP="$valgrind_cmd --log-file=$reports/valgrind.%p"
      TEST_TMP=$dir exec timeout -k 10 "$limit" "$t" ) >"$dir.log" 2>&1
    rc=$?
    # A sanitizer writes a file only when it reports; valgrind writes one per process, with
    # its warnings (RocksDB's fcntl F_SET_RW_HINT, unknown to it) and its error count.
    found=$( { find "$reports" -type f -size +0 ! -name 'valgrind.*'
               grep -l -E 'ERROR SUMMARY: [1-9]' "$reports"/valgrind.* 2>/dev/null; } | sort)
    if [ -n "$found" ]; then
        { echo "sanitizer/valgrind reports (exit status was $rc):"; head -n 40 $found; } >>"$dir.log"
        rc=98
    fi
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
        0)  printf 'PASS  %-32s %6ss\n' "$name" "$secs"; pass=$((pass + 1)) ;;
        77) why=$(grep -m1 -o 'SKIP.*' "$dir.log" || true)
            printf 'SKIP  %-32s %6ss  %s\n' "$name" "$secs" "${why:-exit 77}"
            skipped+=("$name") ;;
        *)  case $rc in
                124) note="(timed out after ${limit}s)" ;;
                98)  note="(a sanitizer or valgrind report: $(echo "$found" | wc -l) process(es))" ;;
                *)   note="(exit $rc)" ;;
            esac
            printf 'FAIL  %-32s %6ss  %s\n' "$name" "$secs" "$note"
            tail -n 25 "$dir.log" | sed 's/^/    | /'
            failed+=("$name")
            if [ -n "${KEEP:-}" ]; then
                keep=$(mktemp -d "${TMPDIR:-/tmp}/cairn-failed.XXXXXX")
                unmount_under "$dir"
                cp -a "$dir" "$dir.log" "$reports" "$keep/" && echo "    kept in $keep"
            fi ;;
    esac
    unmount_under "$dir"
    rm -rf "$dir" "$reports"
done
total=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

ran=$((pass + ${#failed[@]} + ${#skipped[@]}))
[ "$ran" -gt 0 ] || { echo "run.sh: no test matched" >&2; exit 1; }
echo "----"
echo "$pass passed, ${#failed[@]} failed, ${#skipped[@]} skipped in ${total}s"
[ ${#skipped[@]} -eq 0 ] || echo "skipped: ${skipped[*]}"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
exit 0
