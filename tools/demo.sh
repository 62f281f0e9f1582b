#!/usr/bin/env bash
# `make demo`: generate a small set of microVM snapshots (2 sandboxes of one
# template x 2 snapshots: 256 MiB guest memory, device state, ext4 root disk),
# store them all in ./cairn-data, restore one into ./demo-data/restored, check
# it byte for byte, and say what it cost.  Safe to run again: the corpus is
# reused and the store keeps growing by (almost) nothing for the same files.
set -euo pipefail

BUILD=${BUILD:-build}
CAIRN=$BUILD/cairn
CORPUS_BIN=$BUILD/cairn-corpus
STORE=$PWD/cairn-data
DATA=$PWD/demo-data
PY=$(command -v /usr/bin/python3 || command -v python3)
for b in "$CAIRN" "$CORPUS_BIN"; do
    [ -x "$b" ] || { echo "demo: $b is missing; run make first" >&2; exit 1; }
done

human() { numfmt --to=iec-i --suffix=B --round=nearest --format='%.1f' "$1"; }
jget() { "$PY" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
step() { printf '\n== %s\n' "$*"; }
t_start=$EPOCHREALTIME

step "Sample VM snapshots in $DATA/corpus"
"$CORPUS_BIN" --out "$DATA/corpus" --sandboxes 2 --snapshots 2 --memory-size 256M --seed 1
du -sh --apparent-size "$DATA/corpus" | awk '{ print "apparent size: " $1 }'
du -sh "$DATA/corpus" | awk '{ print "on disk (sparse): " $1 }'

step "Store in $STORE"
if [ -f "$STORE/cairn.conf" ]; then
    echo "reusing the existing store"
else
    "$CAIRN" init --store "$STORE"
fi

step "Snapshots"
printf '%-8s %-3s %-34s %10s %10s %8s\n' sandbox n snapshot size new seconds
run_logical=0 run_new=0 last=
for sbdir in "$DATA"/corpus/sb*/; do
    sb=$(basename "$sbdir")
    for kdir in $(ls -d "$sbdir"*/ | sort -V); do
        k=$(basename "$kdir")
        args=()
        for f in memory vmstate disk; do
            [ -f "$kdir$f" ] && args+=("--$f" "$kdir$f")
        done
        out=$("$CAIRN" snapshot --store "$STORE" --tenant demo --sandbox "$sb" "${args[@]}" --json)
        id=$(jget snapshot <<<"$out"); logical=$(jget logical_bytes <<<"$out")
        new=$(jget new_bytes <<<"$out"); secs=$(jget seconds <<<"$out")
        printf '%-8s %-3s %-34s %10s %10s %8.2f\n' "$sb" "$k" "$id" "$(human "$logical")" "$(human "$new")" "$secs"
        run_logical=$((run_logical + logical)); run_new=$((run_new + new))
        last=$id; last_dir=$kdir
    done
done

step "Restore $last into $DATA/restored"
rm -rf "$DATA/restored"
t0=$EPOCHREALTIME
"$CAIRN" restore --store "$STORE" --snapshot "$last" --out "$DATA/restored"
restore_secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
for f in memory vmstate disk; do
    [ -f "$last_dir$f" ] || continue
    if cmp -s "$last_dir$f" "$DATA/restored/$f"; then
        echo "$f: identical to $last_dir$f"
    else
        echo "demo: restored $f differs from $last_dir$f" >&2; exit 1
    fi
done

step "cairn stats"
"$CAIRN" stats --store "$STORE"
stats=$("$CAIRN" stats --store "$STORE" --json)
logical=$(jget logical_bytes <<<"$stats"); stored=$(jget stored_bytes <<<"$stats")

step "Summary"
total=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
echo "This run stored $(human "$run_logical") of VM snapshots as $(human "$run_new") of new data."
echo "The store holds $(human "$logical") of snapshots in $(human "$stored") of packs:" \
     "$(awk -v l="$logical" -v s="$stored" 'BEGIN { if (s > 0) printf "%.1fx", l / s; else print "n/a" }') smaller."
echo "Restored $last byte-exact in ${restore_secs}s; the whole demo took ${total}s."
echo "Store: $STORE   restored files: $DATA/restored"
