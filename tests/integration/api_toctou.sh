#!/usr/bin/env bash
# HOSTILE.md #4 and the out-path suspicion: a request path checked by name and opened by
# name later could be swapped for a symlink out of the root in between. The race is made
# deterministic: the test holds the store's lock, so the server has checked (and, now,
# opened) the path and then waits for the lock ("waiting for another cairn process"); the
# path is swapped for a symlink to a file or folder outside the roots; the lock is let go.
# What is stored is the checked file's bytes, and what is written goes into the checked
# folder (a uffd wake's socket too: the page server binds it through the folder's
# descriptor): nothing is read from or written outside the roots.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"
command -v flock >/dev/null || skip "flock is not installed (util-linux)"

api_store
OUTSIDE=$T/outside
mkdir -p "$IN/tree/home/ubuntu/output" "$OUT/sub" "$OUT/img" "$OUTSIDE"
echo "artifact" >"$IN/tree/home/ubuntu/output/a.txt"
echo "base" >"$IN/tree/etc-release"
mkimg "$IN/tree" "$IN/disk.img" 8M
head -c 300K /dev/urandom >"$IN/mem"
head -c 300K /dev/urandom >"$OUTSIDE/secret"
must cairn template add --store "$S" --name base --disk "$IN/disk.img" >/dev/null
api_serve '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$OUT'"]}' ORCH=orchestrator:orch

# race REQ-ARGS... : runs `req` in the background while the test holds the store's lock,
# waits until the server waits for it, runs the command in $SWAP, lets the lock go.
race() {
    local n0
    n0=$(grep -c 'waiting for another cairn process' "$T/serve.log" || true)
    exec 9<>"$S/lock"
    flock -x -w 30 9 || fail "cannot take the store's lock"
    req "$@" >"$T/status" 9>&- &   # the lock stays with this shell only
    local pid=$! i
    for i in $(seq 300); do
        [ "$(grep -c 'waiting for another cairn process' "$T/serve.log")" -gt "$n0" ] && break
        sleep 0.05
    done
    [ "$i" -lt 300 ] || fail "the server never waited for the store's lock"
    eval "$SWAP"
    exec 9>&-
    wait "$pid" || fail "curl failed: $*"
}

log "snapshot: memory checked, then a symlink to a file outside is put at its path"
SWAP='mv "$IN/mem" "$IN/mem.checked" && ln -s "$OUTSIDE/secret" "$IN/mem"'
race POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb1","template":"base","memory":"'$IN'/mem","disk":"'$IN'/disk.img"}'
assert_eq "$(cat "$T/status")" 201 "status of the raced snapshot: $(cat "$T/body")"
ID=$(json 'j["snapshot"]' "$T/body")
must cairn restore --store "$S" --snapshot "$ID" --out "$T/check" >/dev/null
cmp -s "$T/check/memory" "$IN/mem.checked" || fail "the snapshot did not store the file that was checked"
! cmp -s "$T/check/memory" "$OUTSIDE/secret" || fail "the snapshot stored the file outside the roots"
rm -f "$IN/mem"
mv "$IN/mem.checked" "$IN/mem"

log "restore: out_dir's folder checked, then swapped for a symlink to a folder outside"
SWAP='mv "$OUT/sub" "$OUT/sub.checked" && ln -s "$OUTSIDE" "$OUT/sub"'
race POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/sub/r1"}'
assert_eq "$(cat "$T/status")" 200 "status of the raced restore: $(cat "$T/body")"
[ ! -e "$OUTSIDE/r1" ] || fail "the restore wrote outside the restore_roots: $(ls -R "$OUTSIDE")"
cmp -s "$OUT/sub.checked/r1/memory" "$IN/mem" || fail "the restore is not in the folder that was checked"

log "restore: a symlink planted at out_dir itself after the check is not followed"
mkdir -p "$OUT/sub2"
SWAP='ln -s "$OUTSIDE" "$OUT/sub2/r2"'
race POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/sub2/r2"}'
assert_eq "$(cat "$T/status")" 500 "status of a restore into a symlink planted after the check: $(cat "$T/body")"
[ ! -e "$OUTSIDE/memory" ] || fail "the restore wrote through the planted symlink"

log "rebuild: out's folder checked, then swapped for a symlink to a folder outside"
SWAP='mv "$OUT/img" "$OUT/img.checked" && ln -s "$OUTSIDE" "$OUT/img"'
race POST /v1/sandboxes/sb1/rebuild "$ORCH" '{"out":"'$OUT'/img/rebuilt.img"}'
assert_eq "$(cat "$T/status")" 200 "status of the raced rebuild: $(cat "$T/body")"
[ -z "$(ls -A "$OUTSIDE" | grep -v '^secret$')" ] || fail "the rebuild wrote outside the restore_roots: $(ls -A "$OUTSIDE")"
[ -s "$OUT/img.checked/rebuilt.img" ] || fail "the rebuild is not in the folder that was checked"
assert_json 'j["out"] == "'$OUT'/img/rebuilt.img" or j["out"].endswith("/img.checked/rebuilt.img")' "$T/body" "the reply's out"

log "wake (uffd): the socket's folder checked, then swapped for a symlink to a folder outside"
mkdir -p "$OUT/socks"
SWAP='mv "$OUT/socks" "$OUT/socks.checked" && ln -s "$OUTSIDE" "$OUT/socks"'
race POST "/v1/snapshots/$ID/wake" "$ORCH" '{"mode":"uffd","socket":"'$OUT'/socks/vm.sock"}'
assert_eq "$(cat "$T/status")" 200 "status of the raced wake: $(cat "$T/body")"
PS=$(json 'j["pid"]' "$T/body")
at_exit "kill $PS 2>/dev/null"
[ -S "$OUT/socks.checked/vm.sock" ] || fail "the page server does not listen in the folder that was checked"
[ -z "$(ls -A "$OUTSIDE" | grep -v '^secret$')" ] || fail "the wake bound a socket outside the restore_roots: $(ls -A "$OUTSIDE")"
assert_json 'j["socket"] == "'$OUT'/socks.checked/vm.sock"' "$T/body" "the reply names the socket where it is"
kill "$PS"
for _ in $(seq 100); do [ -e "$OUT/socks.checked/vm.sock" ] || break; sleep 0.05; done
[ ! -e "$OUT/socks.checked/vm.sock" ] || fail "the stopped page server left its socket"
log "wake (uffd): a symlink out of the root at check time, or at the socket's name, is 403"
expect_status 403 POST "/v1/snapshots/$ID/wake" "$ORCH" '{"mode":"uffd","socket":"'$OUT'/socks/vm2.sock"}'
ln -s "$OUTSIDE/elsewhere.sock" "$OUT/socks.checked/vm3.sock"
expect_status 403 POST "/v1/snapshots/$ID/wake" "$ORCH" '{"mode":"uffd","socket":"'$OUT'/socks.checked/vm3.sock"}'
[ -z "$(ls -A "$OUTSIDE" | grep -v '^secret$')" ] || fail "a refused wake bound a socket outside: $(ls -A "$OUTSIDE")"

log "a symlink out of the root at check time is still 403"
ln -s "$OUTSIDE/secret" "$IN/link"
expect_status 403 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb2","memory":"'$IN'/link"}'
ln -s "$OUTSIDE" "$OUT/out-link"
expect_status 403 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/out-link/r3"}'
serve_stop
log "ok"
