#!/usr/bin/env bash
# Shares are listed (never their tokens), revoked one by one (by id or by token hash), and
# die with their sandbox; shares.log keeps only live shares (revoked, expired and deleted
# sandboxes' lines are rewritten out, temp + fsync + rename), so a revocation survives a
# restart and the file does not grow without bound.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

S=$T/store
IN=$T/in
mkdir -p "$IN/t/home/ubuntu/output"
echo "shared data" >"$IN/t/home/ubuntu/output/a.txt"
mkimg "$IN/t" "$IN/a.img" 8M
head -c 64K /dev/urandom >"$IN/mem"
must cairn init --store "$S" >/dev/null
api_serve '{"snapshot_roots": ["'"$IN"'"], "restore_roots": []}' ORCH=orchestrator:orch OTHER=orchestrator:orch-other:tenant-2
for sb in sb1 sb2; do
    expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"'$sb'","memory":"'"$IN"'/mem","disk":"'"$IN"'/a.img"}'
done
share() {  # share SANDBOX: the token in $SHARE, its id in $SID
    expect_status 201 POST "/v1/sandboxes/$1/shares" "$ORCH" '{}'
    SHARE=$(json 'j["token"]' "$T/body")
    SID=$(json 'j["id"]' "$T/body")
}
hash_of() { printf %s "$1" | sha256sum | cut -c1-64; }
share sb1; S1=$SHARE; I1=$SID
share sb1; S2=$SHARE; I2=$SID
share sb2; S3=$SHARE
[ "$I1" = "$(hash_of "$S1" | cut -c1-16)" ] || fail "a share's id is not the start of its token's hash"

log "list: both shares of sb1, with ids, never a token"
expect_status 200 GET /v1/sandboxes/sb1/shares "$ORCH"
assert_json 'sorted(s["id"] for s in j["shares"]) == sorted(["'$I1'", "'$I2'"]) and all(s["by"] == "orch" for s in j["shares"])' "$T/body" "the list of shares"
for t in "$S1" "$S2" "$S3" "$(hash_of "$S1")"; do ! grep -qF "$t" "$T/body" || fail "the list shows a token or its whole hash"; done
expect_status 404 GET /v1/sandboxes/sb1/shares "$OTHER"
expect_status 404 DELETE "/v1/sandboxes/sb1/shares/$I1" "$OTHER"
expect_status 200 GET /v1/shared/files "$S1"

log "revoke by id: that share is 401 at once, the other still works, its line is gone"
expect_status 200 DELETE "/v1/sandboxes/sb1/shares/$I1" "$ORCH"
expect_status 401 GET /v1/shared/files "$S1"
expect_status 200 GET /v1/shared/files "$S2"
! grep -q "$(hash_of "$S1")" "$S/shares.log" || fail "a revoked share is still in shares.log"
grep -q "$(hash_of "$S2")" "$S/shares.log" || fail "a live share left shares.log"
expect_status 404 DELETE "/v1/sandboxes/sb1/shares/$I1" "$ORCH"
assert_json 'j["error"]["code"] == "not_found"' "$T/body" "revoking a revoked share"
expect_status 404 DELETE "/v1/sandboxes/sb2/shares/$I2" "$ORCH"     # another sandbox's share
expect_status 200 GET /v1/shared/files "$S2"

log "revoke by the token's SHA-256"
expect_status 200 DELETE "/v1/sandboxes/sb1/shares/$(hash_of "$S2")" "$ORCH"
expect_status 401 GET /v1/shared/files "$S2"
expect_status 200 GET /v1/sandboxes/sb1/shares "$ORCH"
assert_json 'j["shares"] == []' "$T/body" "no shares left of sb1"

log "a deleted sandbox's shares are revoked with it"
expect_status 200 GET /v1/shared/files "$S3"
expect_status 200 DELETE /v1/sandboxes/sb2 "$ORCH"
assert_json 'j["shares_revoked"] == 1' "$T/body" "the delete's count of revoked shares"
expect_status 401 GET /v1/shared/files "$S3"
! grep -q "$(hash_of "$S3")" "$S/shares.log" || fail "a deleted sandbox's share is still in shares.log"

log "a restart: revocations hold, expired lines are dropped from the file"
share sb1; S4=$SHARE
serve_stop
printf '{"sha256":"%s","tenant":"t1","sandbox":"sb1","expires":1000,"by":"orch"}\n' "$(printf x | sha256sum | cut -c1-64)" >>"$S/shares.log"
serve_start "$S"
assert_eq "$(wc -l <"$S/shares.log")" 1 "lines of shares.log after a restart (one live share)"
grep -q "$(hash_of "$S4")" "$S/shares.log" || fail "the live share left shares.log at the restart"
for t in "$S1" "$S2" "$S3"; do expect_status 401 GET /v1/shared/files "$t"; done
expect_status 200 GET /v1/shared/files "$S4"
[ -z "$(ls "$S" | grep 'shares.*tmp')" ] || fail "a temp file of shares.log was left: $(ls "$S")"
[ "$(stat -c %a "$S/shares.log")" = 600 ] || fail "shares.log is not 0600"
serve_stop

log "a tenant's live shares are capped (limits.max_shares_per_tenant): each costs memory, a line and time at every check"
# (HOSTILE2.md 3) There was no bound: one tenant could grow shares.log and the list every
# share request scans without end.
"$PY" - "$S/serve.json" <<'EOF2'
import json, sys
c = json.load(open(sys.argv[1])); c["limits"] = {"max_shares_per_tenant": 3}
json.dump(c, open(sys.argv[1], "w"))
EOF2
serve_start "$S"
share sb1; share sb1; C3=$SID                 # with S4: three live shares of t1
expect_status 409 POST /v1/sandboxes/sb1/shares "$ORCH" '{}'
assert_json 'j["error"]["code"] == "too_many_shares"' "$T/body" "the fourth share of a tenant"
assert_eq "$(grep -c . "$S/shares.log")" 3 "lines of shares.log after a refused share"
expect_status 200 DELETE "/v1/sandboxes/sb1/shares/$C3" "$ORCH"
expect_status 201 POST /v1/sandboxes/sb1/shares "$ORCH" '{}'
expect_status 200 GET /v1/shared/files "$S4"
serve_stop

log "a share refused on a full disk leaves no torn line: the server restarts, later shares work"
# (HOSTILE2.md 1) A short append used to stay in shares.log; the next share was glued to it
# and the server no longer started ("line N is not a share record").
M=$T/mnt
mkdir -p "$M"
if mount -t tmpfs -o size=40m cairn-shares "$M" 2>"$T/mount.err"; then
    at_exit "umount -l '$M' 2>/dev/null"
    S=$M/store
    must cairn init --store "$S" >/dev/null
    api_serve '{"snapshot_roots": ["'"$IN"'"], "restore_roots": []}' ORCH=orchestrator:orch
    expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb1","memory":"'"$IN"'/mem","disk":"'"$IN"'/a.img"}'
    share sb1; F1=$SHARE
    dd if=/dev/zero of="$M/filler" bs=4k 2>/dev/null || true     # the disk is full now
    refused=0
    for i in $(seq 40); do
        code=$(req POST /v1/sandboxes/sb1/shares "$ORCH" '{}')
        [ "$code" = 201 ] && continue
        assert_eq "$code" 500 "status of a share on a full disk"
        assert_grep 'space' "$T/body" "the refusal says the disk is full"
        refused=1
        break
    done
    [ "$refused" = 1 ] || fail "40 shares fitted on a full 40 MiB disk"
    [ -z "$(tail -c 1 "$S/shares.log" | tr -d '\n')" ] || fail "shares.log ends in a torn line after a refused share"
    rm -f "$M/filler"
    share sb1; F2=$SHARE
    serve_stop
    serve_start "$S"
    expect_status 200 GET /v1/shared/files "$F1"
    expect_status 200 GET /v1/shared/files "$F2"
    serve_stop
else
    log "skipped: cannot mount a tmpfs ($(cat "$T/mount.err"))"
fi
log "ok"
