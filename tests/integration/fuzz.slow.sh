#!/usr/bin/env bash
# Issue 3: a short libFuzzer run (ASan) of the image reader on mutated ext4 images. A crash,
# leak, hang or memory blow-up fails it; the input is kept in build-fuzz/fuzz-work/ (see
# tools/fuzz.sh), outside this test's folder, so it survives the test for a replay.
source "$(dirname "$0")/../lib.sh"

cd "$REPO"
t0=$EPOCHREALTIME
FUZZ_SECONDS=${FUZZ_SECONDS:-45} timeout -k 10 480 tools/fuzz.sh >"$T/fuzz.log" 2>&1 || {
    tail -n 40 "$T/fuzz.log" >&2; fail "tools/fuzz.sh failed (exit status above; replay: build-fuzz/fuzz_image FILE)"; }
grep -q 'no crash, leak or hang' "$T/fuzz.log" || { cat "$T/fuzz.log" >&2; fail "tools/fuzz.sh exited 0 without finishing its run"; }
log "$(grep -E 'number_of_executed_units|peak_rss' "$T/fuzz.log" | tr -s ' \n' ' ')in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')s"
