#!/usr/bin/env bash
# Lazy wake vs full restore, and the page server's fault rate (docs/lazy-wake.md).
#   tools/bench_lazy.sh [SIZE...]      guest memory sizes (default: 256M 1G)
# For each size: a corpus memory file, stored; then
#   full   `cairn restore` of the memory file, then the "guest" (build/cairn-fc-uffd's
#          work on a restored file costs nothing more) - the time until it could run;
#   lazy   `cairn uffd-serve` launched, its socket up, the handshake, and the first 1000
#          random pages touched (a small working set) - the time until the guest ran them;
#          with the bytes read from packs by then;
#   rate   every page touched by 4 threads, random order (cold groups) and in order
#          (each group decompressed once, the rest from the cache): faults per second.
# Needs root (userfaultfd). Prints one line per measurement; BUILD=build by default;
# LAZY_ONLY=1 skips the fault-rate runs (the wake figures alone, for side-by-side repeats).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$REPO/build}
B=$BUILD/cairn FC=$BUILD/cairn-fc-uffd
W=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench-lazy.XXXXXX")
trap 'rm -rf "$W"' EXIT
now() { date +%s.%N; }
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(256M 1G)

serve() {   # serve ID NAME: a page server, until its socket exists
    "$B" uffd-serve --store "$W/s" --snapshot "$1" --socket "$W/$2.sock" --record 0 --no-prefetch \
        --json >"$W/$2.json" 2>"$W/$2.err" &
    while [ ! -S "$W/$2.sock" ]; do sleep 0.002; done
}

for size in "${sizes[@]}"; do
    rm -rf "$W/c" "$W/s" "$W/r"
    "$BUILD/cairn-corpus" --out "$W/c" --sandboxes 1 --snapshots 1 --memory-size "$size" --no-disk \
        --seed 3 >/dev/null
    mem=$W/c/sb01/1/memory
    "$B" init --store "$W/s" >/dev/null
    id=$("$B" snapshot --store "$W/s" --tenant t --sandbox b --memory "$mem" 2>/dev/null | tail -n 1)
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true

    t0=$(now)
    "$B" restore --store "$W/s" --snapshot "$id" --out "$W/r" >/dev/null
    full=$(echo "$(now) - $t0" | bc)
    rm -rf "$W/r"
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true

    t0=$(now)
    serve "$id" lazy
    up=$(echo "$(now) - $t0" | bc)
    "$FC" --socket "$W/lazy.sock" --expect "$mem" --threads 1 --regions 1 \
        --touch $(( 1000 * 1000 / ($(stat -c %s "$mem") / 4096) + 1 )) >"$W/fc.json"
    # launch to listening, plus the guest's first pages (the client's own setup, reading
    # the expected file to compare with, is not the wake's cost)
    lazy=$(python3 -c 'import json,sys; print(float(sys.argv[1]) + json.load(open(sys.argv[2]))["seconds"])' "$up" "$W/fc.json")
    wait
    read -r bytes faults < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["bytes_read"], j["faults"])' "$W/lazy.json")
    printf '%-5s full restore %7.3f s   lazy wake + %s faults %7.3f s (%s bytes read from packs)\n' \
        "$size" "$full" "$faults" "$lazy" "$bytes"

    [ -n "${LAZY_ONLY:-}" ] && continue
    for order in random sequential; do
        serve "$id" rate
        args=(); [ $order = sequential ] && args=(--sequential)
        "$FC" --socket "$W/rate.sock" --expect "$mem" --threads 4 --regions 1 "${args[@]}" >"$W/fc.json"
        wait
        python3 - "$W/fc.json" "$W/rate.json" "$size" "$order" <<'EOF'
import json, sys
c, s = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print("%-5s %-10s %7d faults (%d zero) in %.3f s: %8.0f faults/s; %d groups decompressed, %d cache hits"
      % (sys.argv[3], sys.argv[4], s["faults"], s["faults_zero"], c["seconds"], s["faults"] / c["seconds"],
         s["groups_read"], s["cache_hits"]))
EOF
    done
done
