#!/usr/bin/env bash
# The API refuses what it cannot read exactly (hostile review items 9, 10, 12, 13, 17):
# unknown body fields on every route with a body (a misspelt "dry-run" must never run a
# real gc), gc's "now" with the CLI's limits, a malformed query string, a config that
# stops reading on reload (no token honoured: a revocation in it must not be lost), HEAD
# on GET routes and the Allow header of a 405.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

api_store
mkdir -p "$IN/tree/home/ubuntu/output"
echo "artifact" >"$IN/tree/home/ubuntu/output/a.txt"
echo "other" >"$IN/tree/home/ubuntu/b.txt"
mkimg "$IN/tree" "$IN/disk.img" 8M
head -c 1M /dev/urandom >"$IN/mem"
api_serve '{"snapshot_roots": ["'$IN'"], "restore_roots": ["'$OUT'"]}' ORCH=orchestrator:orch ORCH2=orchestrator:orch2 \
    SUP=support:sup GC=gc:gcbot ADMIN=admin:adm

expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb1","memory":"'$IN'/mem","disk":"'$IN'/disk.img"}'
ID=$(json 'j["snapshot"]' "$T/body")
expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"gone","memory":"'$IN'/mem"}'
expect_status 200 DELETE /v1/sandboxes/gone "$ORCH"

# --- 9: unknown body fields, one check for every route with a body -------------------
unknown() {   # METHOD PATH TOKEN BODY FIELD
    expect_status 400 "$1" "$2" "$3" "$4"
    assert_json 'j["error"]["code"] == "unknown_field" and "\"'"$5"'\"" in j["error"]["message"]' "$T/body" \
        "$1 $2 $4: the error names the field"
}
unknown POST /v1/gc "$GC" '{"dry-run":true}' dry-run
unknown POST /v1/gc "$GC" '{"dry_run":true,"x":1}' x
unknown POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb9","memory":"'$IN'/mem","bogus":1}' bogus
unknown POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/r1","bogus":true}' bogus
unknown POST "/v1/snapshots/$ID/wake" "$ORCH" '{"mode":"file","x":1}' x
unknown POST "/v1/snapshots/$ID/pin" "$ORCH" '{"until":1}' until
unknown POST /v1/sandboxes/sb1/shares "$ORCH" '{"expires":60}' expires
unknown PUT /v1/tenants/t1/tier "$ORCH" '{"tier":"pro","tenant":"B"}' tenant
unknown POST /v1/sandboxes/sb1/rebuild "$ORCH" '{"out":"'$OUT'/img","force":true}' force
unknown POST /v1/sandboxes/sb1/touch "$ORCH" '{"at":5}' at
unknown GET "/v1/snapshots/$ID" "$ORCH" '{"x":1}' x
[ ! -e "$OUT/r1" ] && [ ! -e "$OUT/img" ] || fail "a refused request wrote its output"
# None of the refused gc calls ran: the deleted sandbox's snapshot is still there.
must cairn snapshots --store "$S" --sandbox gone --json >"$T/gone.json"
assert_json 'len(j["snapshots"]) == 1' "$T/gone.json" "the deleted sandbox's snapshot after refused gc calls"
curl -sS "$U/metrics" | grep -q '^cairn_gc_runs_total 0$' || fail "a refused gc call counted as a run: $(curl -sS "$U/metrics" | grep gc_runs)"
expect_status 201 POST /v1/sandboxes/sb1/shares "$ORCH" '{"expires_in":60}'

# --- 10: gc "now" as the CLI reads it -------------------------------------------------
for now in -5 9223372036854775807 -9223372036854775808 253402300800 '"10000-01-01T00:00:00Z"' \
    '"1969-12-31T23:59:59Z"' '"-5"' '"12abc"' '""' '"2026-02-30T00:00:00Z"'; do
    expect_status 400 POST /v1/gc "$GC" '{"dry_run":true,"now":'"$now"'}'
    assert_json 'j["error"]["code"] == "invalid"' "$T/body" "gc now=$now"
done
"$CAIRN_BIN" gc --store "$S" --dry-run --now 9223372036854775807 >/dev/null 2>&1 && fail "the CLI took a now the API refuses"
expect_status 200 POST /v1/gc "$GC" '{"dry_run":true,"now":253402300799}'
expect_status 200 POST /v1/gc "$GC" '{"dry_run":true,"now":"2026-01-01T00:00:00Z"}'
expect_status 200 POST /v1/gc "$GC" '{"dry_run":true,"now":0}'

# --- 13: a malformed query string is a 400, never "no parameters" ----------------------
for q in 'path=/home/ubuntu/output&junk' 'path=/home&path=/' 'path=/home%00x' 'path=/home&&recursive=1' \
    '&path=/home' 'path=/home&' '=x&path=/home' 'path=/home&recursive=1&junk'; do
    for r in files archive; do
        expect_status 400 GET "/v1/snapshots/$ID/$r?$q" "$SUP"
        assert_json 'j["error"]["code"] == "bad_request"' "$T/body" "$r?$q"
    done
done
expect_status 400 GET "/v1/sandboxes?tenant=t1&tenant=t2" "$ORCH"
# An unknown parameter name is a 400 naming it on every route, with or without a query of
# its own (a misspelt recurse=1 must not silently list one level; tenants=t2 must not list all).
uq() {   # PATH TOKEN NAME
    expect_status 400 GET "$1" "$2"
    assert_json 'j["error"]["code"] == "unknown_parameter" and "\"'"$3"'\"" in j["error"]["message"]' "$T/body" "GET $1"
}
uq "/v1/snapshots/$ID/files?path=/home&recurse=1" "$SUP" recurse
uq "/v1/snapshots/$ID/content?path=/home/ubuntu/b.txt&reasons=x" "$SUP" reasons
uq "/v1/snapshots/$ID/archive?path=/home&format=zip" "$SUP" format
uq "/v1/sandboxes?tenants=t2" "$ORCH" tenants
uq "/v1/snapshots/$ID?verbose=1" "$ORCH" verbose
uq "/v1/sandboxes/sb1?x=1" "$ORCH" x
uq "/v1/audit?user=x" "$ADMIN" user
uq "/healthz?x=1" "" x
uq "/metrics?name=y" "" name
expect_status 400 POST "/v1/gc?dry_run=1" "$GC" '{"dry_run":true}'
assert_json 'j["error"]["code"] == "unknown_parameter"' "$T/body" "POST /v1/gc?dry_run=1"
expect_status 400 POST "/v1/snapshots/$ID/restore?out_dir=$OUT/r2" "$ORCH" '{"out_dir":"'$OUT'/r3"}'
[ ! -e "$OUT/r3" ] || fail "a restore with an unknown query parameter wrote its output"
# %00 in a name or a value, and a name given twice after decoding, are refused.
for q in 'path%00x=/home' 'path=%00' 'pa%74h=/home&path=/'; do
    expect_status 400 GET "/v1/snapshots/$ID/files?$q" "$SUP"
    assert_json 'j["error"]["code"] == "bad_request"' "$T/body" "files?$q"
done
# The names a route takes still work, the audit's filters included.
expect_status 200 GET "/v1/snapshots/$ID/files?path=/home&recursive=1" "$SUP"
expect_status 200 GET "/v1/snapshots/$ID/files?path=/home/ubuntu" "$SUP"
expect_status 200 GET "/v1/audit?actor=sup" "$ADMIN"
assert_json 'len(j["entries"]) == 2 and all(e["actor"] == "sup" for e in j["entries"])' "$T/body" "audit actor"
expect_status 200 GET "/v1/audit?actor=sup&limit=1" "$ADMIN"
assert_json '[e["paths"] for e in j["entries"]] == [["/home/ubuntu"]]' "$T/body" "audit limit: the newest"
expect_status 200 GET "/v1/audit?actor=nobody" "$ADMIN"
assert_json 'j["entries"] == []' "$T/body" "audit of an actor with no reads"
expect_status 200 GET "/v1/audit?sandbox=nosuch" "$ADMIN"
assert_json 'j["entries"] == []' "$T/body" "audit of a sandbox with no reads"
expect_status 400 GET "/v1/audit?limit=0" "$ADMIN"
expect_status 200 GET "/v1/snapshots/$ID/files?path=/home/ubuntu/output" "$SUP"
assert_json '[f["path"] for f in j["entries"]] == ["/home/ubuntu/output/a.txt"]' "$T/body" "files of one folder"

# --- 17: HEAD answers like GET without a body; 405 names the real methods ----------------
head_ok() {   # PATH TOKEN
    local args=()
    [ -n "$2" ] && args+=(-H "Authorization: Bearer $2")
    local got
    got=$(curl -sS -I -o "$T/hbody" -w '%{http_code} %{size_download}' --max-time 30 "${args[@]}" "$U$1") ||
        fail "HEAD $1: curl failed"
    assert_eq "$got" "200 0" "HEAD $1: status and body bytes"
    grep -qi '^x-request-id: ' "$T/hbody" || fail "HEAD $1: no X-Request-Id"
}
head_ok /healthz ""
head_ok "/v1/snapshots/$ID" "$ORCH"
head_ok "/v1/snapshots/$ID/files" "$SUP"
head_ok "/v1/snapshots/$ID/archive?path=/home" "$SUP"
head_ok /console/ ""
expect_status 200 GET /healthz ""
allow() {     # METHOD PATH WANT
    expect_status 405 "$1" "$2" "$ORCH"
    local got
    got=$(sed -n 's/^[Aa]llow: \(.*\)\r$/\1/p' "$T/hdr")
    assert_eq "$got" "$3" "Allow of $1 $2"
}
allow PATCH "/v1/snapshots/$ID/pin" "POST, DELETE"
allow PUT /v1/sandboxes/sb1 "GET, HEAD, DELETE"
allow GET /v1/gc "POST"
allow POST /healthz "GET, HEAD"

# --- 12: a config that cannot be read on reload honours no token -------------------------
cp "$S/serve.json" "$T/serve.good"
echo '{"snapshot_roots": [' >"$S/serve.json"
expect_status 503 GET /v1/sandboxes "$ORCH"
assert_json 'j["error"]["code"] == "config_error"' "$T/body" "a request while the config is broken"
expect_status 503 GET /v1/sandboxes "$ORCH2"
expect_status 200 GET /healthz ""
grep -q "ERROR: .*serve.json changed but cannot be read" "$T/serve.log" || fail "no loud log line for the broken config"
# The edit that broke it also revoked orch2: once the file reads again, orch2 is out.
cp "$T/serve.good" "$S/serve.json"
must cairn token revoke --store "$S" --name orch2 >/dev/null
expect_status 200 GET /v1/sandboxes "$ORCH"
expect_status 401 GET /v1/sandboxes "$ORCH2"
grep -q "reads again" "$T/serve.log" || fail "no log line when the config reads again"

serve_stop
log "ok"
