#!/usr/bin/env bash
# POST /v1/snapshots/{id}/wake over loopback HTTP: mode "file" answers the memory file's
# path in the FUSE view (its bytes are the snapshot's); mode "uffd" starts a page server
# that listens when the answer comes and serves a Firecracker-like client byte-exact, then
# exits with the VM; sockets outside the restore roots, taken paths and bad modes are
# refused; both modes count as activity.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

[ -e /dev/fuse ] && command -v fusermount3 >/dev/null || skip "no FUSE here"
if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/vm/unprivileged_userfaultfd 2>/dev/null)" != 1 ]; then
    skip "userfaultfd needs root here"
fi

C=$(std_corpus)
mem=$C/sb01/1/memory
S=$T/store
M=$T/mnt
SOCKS=$T/socks
mkdir -p "$M" "$SOCKS"
must cairn init --store "$S" >/dev/null
id=$(snap "$S" acme box1 memory="$mem" vmstate="$C/sb01/1/vmstate")
api_config - <<JSON
{"restore_roots": ["$SOCKS"], "mount": "$M"}
JSON
api_tokens ORCH=orchestrator:orch

timeout -k 5 300 "$CAIRN_BIN" mount --store "$S" --foreground "$M" 2>"$T/mount.err" &
mpid=$!
at_exit "fusermount3 -u '$M' 2>/dev/null; kill $mpid 2>/dev/null"
for _ in $(seq 100); do grep -q " $M fuse" /proc/mounts && break; sleep 0.05; done
grep -q " $M fuse" /proc/mounts || fail "cairn mount did not mount: $(cat "$T/mount.err")"
serve_start "$S"

log "mode file"
expect_status 200 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"file"}'
assert_json "j['memory'] == '$M/snapshots/$id/memory' and j['vmstate'] == '$M/snapshots/$id/vmstate'" "$T/body"
cmp "$M/snapshots/$id/memory" "$mem" || fail "the memory file the wake named differs from the snapshot's"

log "mode uffd"
expect_status 200 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$SOCKS'/vm.sock"}'
[ -S "$SOCKS/vm.sock" ] || fail "the page server does not listen when the wake answers"
pid=$(json 'j["pid"]' "$T/body")
expect_status 409 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$SOCKS'/vm.sock"}'
must "$BUILD/cairn-fc-uffd" --socket "$SOCKS/vm.sock" --expect "$mem" --threads 2 --touch 300 >"$T/fc.json"
assert_json 'j["mismatches"] == 0' "$T/fc.json" "pages served by the page server the API started"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
! kill -0 "$pid" 2>/dev/null || fail "the page server outlived its VM"
[ ! -e "$SOCKS/vm.sock" ] || fail "the socket outlived the page server"

log "refusals"
expect_status 403 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd","socket":"'$T'/elsewhere.sock"}'
expect_status 400 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"lazy"}'
expect_status 400 POST "/v1/snapshots/$id/wake" "$ORCH" '{"mode":"uffd"}'
expect_status 404 POST "/v1/snapshots/00000000000000000000/wake" "$ORCH" '{"mode":"file"}'
expect_status 401 POST "/v1/snapshots/$id/wake" "" '{"mode":"file"}'

[ "$(grep -c '"restore"' "$S/events.log")" -ge 2 ] || fail "the wakes are not activity: $(cat "$S/events.log")"
serve_stop
fusermount3 -u "$M"
wait "$mpid" || fail "cairn mount exited $?"
