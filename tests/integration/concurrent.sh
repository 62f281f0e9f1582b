#!/usr/bin/env bash
# Commands run at the same time on one store all succeed (one may wait for the
# other) and nothing is lost: the orchestrator hibernates many VMs at once.
. "$(dirname "$0")/../lib.sh"

C=$(std_corpus)
S=$T/store
must cairn init --store "$S" >/dev/null
read -ra a1 <<<"$(set_of "$C" sb01 1)"
read -ra b1 <<<"$(set_of "$C" sb02 1)"
read -ra b2 <<<"$(set_of "$C" sb02 2)"

# start NAME CMD...: start CMD in the background, output in $T/NAME.{out,err}.
declare -A pids
start() { local n=$1; shift; "$@" >"$T/$n.out" 2>"$T/$n.err" & pids[$n]=$!; }
# finish NAME: wait for it; it must exit 0.  Prints its stdout.
finish() {
    local rc=0; wait "${pids[$1]}" || rc=$?
    [ "$rc" = 0 ] || fail "$1 exited $rc while running concurrently: $(tail -c 400 "$T/$1.err")"
    cat "$T/$1.out"
}
snapjob() {      # snapjob NAME SANDBOX SPEC...
    local n=$1 sb=$2; shift 2
    local args; mapfile -t args < <(spec_args "$@")
    start "$n" cairn snapshot --store "$S" --tenant acme --sandbox "$sb" "${args[@]}" --json
}
id_of() { json 'j["snapshot"]' "$T/$1.out"; }

# Two sandboxes at once.
snapjob x sb01 "${a1[@]}"; snapjob y sb02 "${b1[@]}"
finish x >/dev/null; finish y >/dev/null
ida1=$(id_of x); idb1=$(id_of y)
verify "$S" "$ida1" "${a1[@]}"
verify "$S" "$idb1" "${b1[@]}"
fsck_ok "$S"

# A restore while a snapshot is being written.
start r cairn restore --store "$S" --snapshot "$ida1" --out "$T/rr"
snapjob z sb02 "${b2[@]}"
finish r >/dev/null; finish z >/dev/null
for f in memory vmstate disk; do
    cmp -s "$C/sb01/1/$f" "$T/rr/$f" || fail "restore during an ingest: $f differs"
done
rm -rf "$T/rr"
idb2=$(id_of z)

# The same sandbox twice at once, with fresh pages in both so that both write
# packs; rounds to make the overlap likely, and at least one round must show it: one
# job said it waited for the other's lock (so they did run at the same time).
waited=0
for r in 1 2 3; do
    gen "$T/m$r.1" $((16 << 20)) $((10 * r + 1)) 30
    gen "$T/m$r.2" $((16 << 20)) $((10 * r + 2)) 30
    snapjob p sb01 memory="$T/m$r.1" vmstate="$C/sb01/2/vmstate"
    snapjob q sb01 memory="$T/m$r.2" vmstate="$C/sb01/2/vmstate"
    start v cairn restore --store "$S" --snapshot "$idb2" --out "$T/rv"
    finish p >/dev/null; finish q >/dev/null; finish v >/dev/null
    if grep -q 'waiting for another cairn process' "$T/p.err" "$T/q.err"; then waited=$((waited + 1)); fi
    idp=$(id_of p); idq=$(id_of q)
    [ "$idp" != "$idq" ] || fail "two concurrent snapshots got the same id $idp"
    verify "$S" "$idp" memory="$T/m$r.1" vmstate="$C/sb01/2/vmstate"
    verify "$S" "$idq" memory="$T/m$r.2" vmstate="$C/sb01/2/vmstate"
    for f in memory vmstate disk; do
        cmp -s "$C/sb02/2/$f" "$T/rv/$f" || fail "restore during two ingests: $f differs"
    done
    rm -rf "$T/rv"
done

log "rounds in which one snapshot waited for the other: $waited of 3"
assert_cmp "$waited" -ge 1 "two snapshots started together never overlapped (neither waited)"
assert_eq "$(count_snapshots "$S" sb01)" 7 "snapshots of sb01 (1 + 3 rounds x 2)"
assert_eq "$(count_snapshots "$S" sb02)" 2 "snapshots of sb02"
verify "$S" "$ida1" "${a1[@]}"
verify "$S" "$idb2" "${b2[@]}"
fsck_ok "$S" --verify-data
log "ok"
