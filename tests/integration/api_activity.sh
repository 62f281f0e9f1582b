#!/usr/bin/env bash
# Hostile review suspicion: a restore, wake or rebuild answered 200 when its activity could
# not be recorded, so the orchestrator believed the sandbox safe from reclaim while gc saw
# it idle. Now the activity is recorded first: an EIO on events.log (the failio shim) makes
# each a 500 activity_failed with nothing written, and once the fault is lifted they work
# and the activity is there.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

SHIM=$BUILD/libcairn-failio.so
[ -f "$SHIM" ] || fail "$SHIM is missing (make builds it)"
api_store
mkdir -p "$IN/tree/home/ubuntu/output"
echo "artifact" >"$IN/tree/home/ubuntu/output/a.txt"
mkimg "$IN/tree" "$IN/disk.img" 8M
head -c 256K /dev/urandom >"$IN/mem"
api_config '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$OUT'"]}'
api_tokens ORCH=orchestrator:orch
FLAG=$T/fault-on
LD_PRELOAD=$SHIM FAILIO_WRITE=/events.log FAILIO_WRITE_WHILE=$FLAG FAILIO_LOG=1 serve_start "$S"

expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb1","memory":"'$IN'/mem","disk":"'$IN'/disk.img"}'
ID=$(json 'j["snapshot"]' "$T/body")
activity() { must cairn sandboxes --store "$S" --json | "$PY" -c 'import json,sys; print([s["last_activity"] for s in json.load(sys.stdin)["sandboxes"] if s["sandbox"] == "sb1"][0])'; }
before=$(activity)
sleep 1.1

touch "$FLAG"
expect_status 500 POST /v1/sandboxes/sb1/touch "$ORCH"
expect_status 500 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/r1"}'
assert_json 'j["error"]["code"] == "activity_failed"' "$T/body" "restore while events.log fails"
[ ! -e "$OUT/r1" ] || fail "a restore whose activity was not recorded wrote $OUT/r1"
expect_status 500 POST "/v1/snapshots/$ID/wake" "$ORCH" '{"mode":"file"}'
assert_json 'j["error"]["code"] == "activity_failed"' "$T/body" "wake while events.log fails"
expect_status 500 POST /v1/sandboxes/sb1/rebuild "$ORCH" '{"out":"'$OUT'/img"}'
assert_json 'j["error"]["code"] == "activity_failed"' "$T/body" "rebuild while events.log fails"
[ ! -e "$OUT/img" ] || fail "a rebuild whose activity was not recorded wrote $OUT/img"
assert_grep 'failio: write .*events.log' "$T/serve.log" "the write failure was injected"
assert_eq "$(activity)" "$before" "last activity while events.log fails"

rm "$FLAG"
expect_status 200 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/r1"}'
cmp "$IN/mem" "$OUT/r1/memory" || fail "the restore after the fault is not byte-exact"
[ "$(activity)" != "$before" ] || fail "the restore after the fault recorded no activity"
expect_status 409 POST "/v1/snapshots/$ID/wake" "$ORCH" '{"mode":"file"}'   # no mount: past the activity
expect_status 409 POST /v1/sandboxes/sb1/rebuild "$ORCH" '{"out":"'$OUT'/img"}'   # no template: past the activity
assert_json 'j["error"]["code"] == "cannot_rebuild"' "$T/body" "rebuild after the fault"
serve_stop
log "ok"
