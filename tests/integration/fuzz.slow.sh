#!/usr/bin/env bash
# Issues 3 and 9: a short libFuzzer run (ASan + UBSan) of every parser of damageable or
# hostile bytes: the image reader, manifests, pack footers, file indexes, the policy and
# classes files, events.log (tests/fuzz/fuzz_*.c; tools/fuzz.sh builds and runs them, from
# the seed corpus in tests/fuzz/corpus/, where a crash found once stays as a regression
# input). A crash, leak, UB report, hang or memory blow-up fails it; the input is kept in
# build-fuzz/fuzz-work/TARGET/ (outside this test's folder) for a replay.
#   FUZZ_SECONDS   per target (default 4)
source "$(dirname "$0")/../lib.sh"

cd "$REPO"
t0=$EPOCHREALTIME
FUZZ_SECONDS=${FUZZ_SECONDS:-4} timeout -k 10 560 tools/fuzz.sh >"$T/fuzz.log" 2>&1 || {
    tail -n 40 "$T/fuzz.log" >&2; fail "tools/fuzz.sh failed (exit status above; replay: build-fuzz/fuzz_TARGET FILE)"; }
grep -q 'fuzz: no crash, leak or hang$' "$T/fuzz.log" || { cat "$T/fuzz.log" >&2; fail "tools/fuzz.sh exited 0 without finishing its run"; }
n=$(grep -c 'executions in .*, no crash, leak or hang$' "$T/fuzz.log")
want=$(ls tests/fuzz/fuzz_*.c | wc -l)
[ "$n" = "$want" ] || fail "only $n of $want targets ran"
grep -E 'executions in' "$T/fuzz.log" | sed "s/^/$TEST_NAME: /" >&2
log "$want targets in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')s"
