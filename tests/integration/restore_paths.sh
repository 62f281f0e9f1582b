#!/usr/bin/env bash
# Hostile review 2, 3, 5: restore and rebuild write where they are told and nowhere else.
# Symlinks planted in the out folder (at the temp names the old code used, and at the final
# names) never lead a write outside; two restores into one folder never both report success
# over a mix of files; a rebuild whose "out" is a restore root itself is refused (403)
# before anything is written beside the root. CLI and API share the code; both are driven.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

S=$T/store
OUT=$T/roots/wake
mkdir -p "$OUT" "$T/outside" "$T/in"
must cairn init --store "$S" >/dev/null
sandbox_tree "$T/root" 1
ext4_image "$T/root" "$T/in/disk.img"
gen "$T/in/memA" $((48 << 20)) 1
gen "$T/in/memB" $((48 << 20)) 2
base_template "$S"
A=$(snap "$S" t1 sbA memory="$T/in/memA" disk="$T/in/disk.img")
B=$(snap "$S" t1 sbB memory="$T/in/memB")
echo "precious" >"$T/outside/victim"
victim_ok() { [ "$(cat "$T/outside/victim")" = precious ] || fail "$1: the victim outside was overwritten"; }
no_tmp() { [ -z "$(find "$1" -name '*cairn-tmp*' ! -type l)" ] || fail "$2: temp files left: $(find "$1" -name '*cairn-tmp*')"; }
same_as_A() {
    cmp -s "$1/memory" "$T/in/memA" && cmp -s "$1/disk" "$T/in/disk.img"
}

log "CLI restore: planted symlinks at the old temp names and at the final names"
R=$OUT/r1
mkdir -p "$R"
ln -s "$T/outside/victim" "$R/.memory.cairn-tmp"
ln -s "$T/outside/victim" "$R/.disk.cairn-tmp"
ln -s "$T/outside/victim" "$R/memory"
must cairn restore --store "$S" --snapshot "$A" --out "$R" >/dev/null
victim_ok "CLI restore"
[ -f "$R/memory" ] && [ ! -L "$R/memory" ] || fail "memory is not a regular file after the restore"
same_as_A "$R" || fail "the CLI restore differs from snapshot A"
[ -L "$R/.memory.cairn-tmp" ] || fail "the planted symlink was replaced or followed"
no_tmp "$R" "CLI restore"

log "CLI rebuild: planted symlink at OUT.tmp"
ln -s "$T/outside/victim" "$OUT/rb.img.tmp"
must cairn rebuild --store "$S" --sandbox sbA --template base --out "$OUT/rb.img" >/dev/null
victim_ok "CLI rebuild"
[ -f "$OUT/rb.img" ] && [ ! -L "$OUT/rb.img" ] || fail "rb.img is not a regular file"
e2fsck -fn "$OUT/rb.img" >/dev/null 2>&1 || fail "the rebuilt image does not pass e2fsck"
ln -s "$T/outside/victim" "$OUT/rb2.img"
must cairn rebuild --store "$S" --sandbox sbA --template base --out "$OUT/rb2.img" >/dev/null
victim_ok "CLI rebuild over a symlink"
[ ! -L "$OUT/rb2.img" ] || fail "the symlink at the rebuild's out was followed, not replaced"
no_tmp "$OUT" "CLI rebuild"

log "CLI: two restores of different snapshots into one folder"
for round in 1 2 3; do
    R=$OUT/c$round
    rcA=0 rcB=0
    cairn restore --store "$S" --snapshot "$A" --out "$R" >"$T/cA.out" 2>"$T/cA.err" & pa=$!
    cairn restore --store "$S" --snapshot "$B" --out "$R" >"$T/cB.out" 2>"$T/cB.err" & pb=$!
    wait $pa || rcA=$?
    wait $pb || rcB=$?
    [ "$rcA" = 0 ] || [ "$rcB" = 0 ] || fail "round $round: both restores failed: $(cat "$T/cA.err" "$T/cB.err")"
    for x in A B; do
        eval "rc=\$rc$x"
        [ "$rc" = 0 ] || [ "$rc" = 1 ] || fail "round $round: restore $x exit $rc"
        [ "$rc" = 0 ] || assert_grep 'another restore' "$T/c$x.err" "round $round: restore $x's error"
    done
    # Whichever succeeded last owns the folder whole: never memory of one, disk of the other.
    if same_as_A "$R"; then :
    elif cmp -s "$R/memory" "$T/in/memB" && [ ! -e "$R/disk" ]; then
        [ "$rcB" = 0 ] || fail "round $round: B's files but B failed"
    elif cmp -s "$R/memory" "$T/in/memB" && [ "$rcA" = 0 ] && [ "$rcB" = 0 ]; then
        cmp -s "$R/disk" "$T/in/disk.img" || fail "round $round: the disk is damaged"
    else
        fail "round $round: the folder holds a mix (A exit $rcA, B exit $rcB)"
    fi
    [ "$rcA" != 0 ] || [ "$rcB" = 0 ] || same_as_A "$R" || fail "round $round: A succeeded, B failed, A's files are not there"
    no_tmp "$R" "round $round"
done

log "API: the same through cairn serve"
api_serve - ORCH=orchestrator:orch <<JSON
{"snapshot_roots": ["$T/in"], "restore_roots": ["$OUT"]}
JSON
R=$OUT/a1
mkdir -p "$R"
ln -s "$T/outside/victim" "$R/.memory.cairn-tmp"
ln -s "$T/outside/victim" "$R/disk"
expect_status 200 POST "/v1/snapshots/$A/restore" "$ORCH" '{"out_dir":"'$R'"}'
victim_ok "API restore"
same_as_A "$R" || fail "the API restore differs from snapshot A"
[ ! -L "$R/disk" ] || fail "disk is still a symlink"
no_tmp "$R" "API restore"
ln -s "$T/outside/victim" "$OUT/arb.img.tmp"
expect_status 200 POST /v1/sandboxes/sbA/rebuild "$ORCH" '{"out":"'$OUT'/arb.img","template":"base"}'
victim_ok "API rebuild"
e2fsck -fn "$OUT/arb.img" >/dev/null 2>&1 || fail "the API rebuilt image does not pass e2fsck"
no_tmp "$OUT" "API rebuild"

log "API: two restores into one folder: each 200 is byte-exact"
for round in 1 2 3; do
    R=$OUT/ac$round
    curl -sS -o "$T/bA" -w '%{http_code}' -H "Authorization: Bearer $ORCH" -X POST \
        --data-binary '{"out_dir":"'$R'"}' "$U/v1/snapshots/$A/restore" >"$T/sA" & pa=$!
    curl -sS -o "$T/bB" -w '%{http_code}' -H "Authorization: Bearer $ORCH" -X POST \
        --data-binary '{"out_dir":"'$R'"}' "$U/v1/snapshots/$B/restore" >"$T/sB" & pb=$!
    wait $pa; wait $pb
    sA=$(cat "$T/sA") sB=$(cat "$T/sB")
    for s in "$sA" "$sB"; do
        case $s in 200|409|429) ;; *) fail "round $round: status $s: $(cat "$T/bA" "$T/bB")" ;; esac
    done
    [ "$sA" = 200 ] || [ "$sB" = 200 ] || fail "round $round: neither restore succeeded ($sA, $sB)"
    if [ "$sA" = 200 ] && [ "$sB" != 200 ]; then same_as_A "$R" || fail "round $round: A's 200 over other bytes"; fi
    if [ "$sB" = 200 ] && [ "$sA" != 200 ]; then
        cmp -s "$R/memory" "$T/in/memB" && [ ! -e "$R/disk" ] || fail "round $round: B's 200 over other bytes"
    fi
    if [ "$sA" = 200 ] && [ "$sB" = 200 ]; then
        same_as_A "$R" || cmp -s "$R/memory" "$T/in/memB" || fail "round $round: two 200s over a mix"
    fi
    no_tmp "$R" "API round $round"
done

log "API: rebuild into a restore root itself is 403, nothing written beside it"
before=$(ls -A "$T/roots")
expect_status 403 POST /v1/sandboxes/sbA/rebuild "$ORCH" '{"out":"'$OUT'","template":"base"}'
expect_status 403 POST /v1/sandboxes/sbA/rebuild "$ORCH" '{"out":"'$OUT'/","template":"base"}'
expect_status 403 POST "/v1/snapshots/$A/restore" "$ORCH" '{"out_dir":"'$OUT'"}'
assert_eq "$(ls -A "$T/roots")" "$before" "beside the root after refused rebuilds"
victim_ok "refused rebuild"
serve_stop
