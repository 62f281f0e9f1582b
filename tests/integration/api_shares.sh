#!/usr/bin/env bash
# HOSTILE.md items 1, 7, 14: a share link is bound to its tenant and to the sandbox as it
# was when the link was made (a delete revokes it, and a sandbox made again under the same
# name, by another tenant or the same one, does not revive it); an ingest into another
# tenant's sandbox name is 404 for a tenant-bound token and 409 for an unbound one, never
# naming the owner; a share's errors name no snapshot id, store path or audit log.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

api_store
mkdir -p "$IN/b/home/ubuntu/output" "$IN/a/home/ubuntu/output"
echo "bee data" >"$IN/b/home/ubuntu/output/b.txt"
echo "ay data" >"$IN/a/home/ubuntu/output/a.txt"
mkimg "$IN/b" "$IN/b.img" 8M
mkimg "$IN/a" "$IN/a.img" 8M
head -c 64K /dev/urandom >"$IN/mem"

api_serve '{"snapshot_roots": ["'"$IN"'"], "restore_roots": []}' ORCH=orchestrator:orch \
    OB=orchestrator:orch-bee:tenant-bee OA=orchestrator:orch-ay:tenant-ay GC=gc:gcbot

IDS=   # every snapshot id made, none of which a share's error may name
snap() {   # snap TOKEN TENANT SANDBOX IMG
    expect_status 201 POST /v1/snapshots "$1" '{"tenant":"'"$2"'","sandbox":"'"$3"'","memory":"'"$IN"'/mem","disk":"'"$IN/$4"'"}'
    IDS="$IDS $(json 'j["snapshot"]' "$T/body")"
}
share() {  # share TOKEN SANDBOX: the token in $SHARE
    expect_status 201 POST "/v1/sandboxes/$2/shares" "$1" '{}'
    SHARE=$(json 'j["token"]' "$T/body")
}
# no_internals: the last reply names no snapshot id, store path, audit log or owner.
no_internals() {
    local w
    for w in "$S" audit.log tenant-bee tenant-ay $IDS; do
        ! grep -qF -- "$w" "$T/body" || fail "the reply names $w: $(cat "$T/body")"
    done
}

log "a share of sbB reads B's artifact"
snap "$OB" tenant-bee sbB b.img
share "$OB" sbB
SH1=$SHARE
expect_status 200 GET "/v1/shared/content?path=/home/ubuntu/output/b.txt" "$SH1"
assert_eq "$(cat "$T/body")" "bee data" "shared content"

log "item 7: ingest into another tenant's sandbox name: 404 bound, 409 unbound, owner never named"
expect_status 404 POST /v1/snapshots "$OA" '{"tenant":"tenant-ay","sandbox":"sbB","memory":"'"$IN"'/mem"}'
assert_json 'j["error"]["code"] == "not_found"' "$T/body"
no_internals
expect_status 409 POST /v1/snapshots "$ORCH" '{"tenant":"tenant-ay","sandbox":"sbB","memory":"'"$IN"'/mem"}'
assert_json 'j["error"]["code"] == "conflict"' "$T/body"
no_internals
must cairn snapshots --store "$S" --sandbox sbB --json >"$T/list.json"
assert_json 'len(j["snapshots"]) == 1' "$T/list.json" "nothing stored by the refused ingests"

# The deletes here are the CLI's, which cannot revoke the server's shares (an API delete
# does: api_share_revoke.sh): a share checks its sandbox at each use, so it is 404 anyway.
log "item 1: a deleted sandbox's share is 404 at once (before gc), and no new share of it"
must cairn delete --store "$S" --sandbox sbB >/dev/null
expect_status 404 GET /v1/shared/files "$SH1"
no_internals
expect_status 404 GET "/v1/shared/content?path=/home/ubuntu/output/b.txt" "$SH1"
no_internals
grep -q "deleted" "$T/serve.log" || fail "the server log does not say why the share is gone"
expect_status 404 POST /v1/sandboxes/sbB/shares "$OB" '{}'

log "item 1: the reused-name attack: after gc, A's new sbB is not B's share's"
expect_status 200 POST /v1/gc "$GC" '{}'
snap "$OA" tenant-ay sbB a.img
expect_status 404 GET /v1/shared/files "$SH1"
no_internals
expect_status 404 GET "/v1/shared/content?path=/home/ubuntu/output/a.txt" "$SH1"
no_internals

log "item 1: the same tenant making a deleted name again does not revive the old share"
snap "$OB" tenant-bee sbC b.img
share "$OB" sbC
SH2=$SHARE
expect_status 200 GET /v1/shared/files "$SH2"
must cairn delete --store "$S" --sandbox sbC >/dev/null
expect_status 200 POST /v1/gc "$GC" '{}'
snap "$OB" tenant-bee sbC b.img
expect_status 404 GET /v1/shared/files "$SH2"
no_internals
share "$OB" sbC
expect_status 200 GET "/v1/shared/content?path=/home/ubuntu/output/b.txt" "$SHARE"
assert_eq "$(cat "$T/body")" "bee data" "a share made after the new sbC"

log "item 1: the binding survives a restart (shares.log)"
serve_stop
serve_start "$S"
expect_status 404 GET /v1/shared/files "$SH1"
expect_status 404 GET /v1/shared/files "$SH2"
expect_status 200 GET /v1/shared/files "$SHARE"

log "item 14: no file index, audit failure: generic errors with the request id"
expect_status 201 POST /v1/snapshots "$OB" '{"tenant":"tenant-bee","sandbox":"sbM","memory":"'"$IN"'/mem"}'
IDS="$IDS $(json 'j["snapshot"]' "$T/body")"
share "$OB" sbM
expect_status 404 GET /v1/shared/files "$SHARE"
no_internals
rid=$(sed -n 's/^x-request-id: *//Ip' "$T/hdr" | tr -d '\r')
grep -qF "$rid" "$T/body" || fail "the reply does not give the request id $rid: $(cat "$T/body")"
grep -F "rid=$rid" "$T/serve.log" | grep -q "file index" || fail "the server log lacks the detail for $rid"
share "$OB" sbC
AUD=$(ls "$S"/audit.log 2>/dev/null || true)
[ -n "$AUD" ] || skip "no audit.log at the store's top (backend layout changed)"
mv "$S/audit.log" "$T/audit.saved"
mkdir "$S/audit.log"
expect_status 500 GET /v1/shared/files "$SHARE"
no_internals
rmdir "$S/audit.log"
mv "$T/audit.saved" "$S/audit.log"
expect_status 200 GET /v1/shared/files "$SHARE"
serve_stop
