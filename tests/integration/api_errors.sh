#!/usr/bin/env bash
# Issue 10, the API's edges over real loopback HTTP: the role x endpoint matrix, tenant
# isolation (404, not 403), path confinement, every error status with its JSON, malformed
# and mistyped bodies, huge bodies and headers, unknown routes, clients that stop
# mid-request or read slowly, 429 when the long-job slots are full, revoked tokens,
# SIGTERM finishing an ingest in flight, and no token in logs.
source "$(dirname "$0")/../lib.sh"
source "$REPO/tests/api_lib.sh"

api_store
mkdir -p "$IN/tree/home/ubuntu/output" "$T/elsewhere"
echo "artifact" >"$IN/tree/home/ubuntu/output/a.txt"
mkimg "$IN/tree" "$IN/disk.img" 8M
head -c 1M /dev/urandom >"$IN/mem"
head -c 64M /dev/urandom >"$IN/big"
echo secret >"$T/elsewhere/x"
ln -s "$T/elsewhere/x" "$IN/link-out"
ln -s "$T/elsewhere" "$OUT/link-dir"

api_serve - ORCH=orchestrator:orch SUP=support:sup GC=gc:gcbot ADM=admin:root ORCH2=orchestrator:orch-t2:t2 \
    SUP2=support:sup-t2:t2 <<JSON
{"snapshot_roots": ["$IN"], "restore_roots": ["$OUT"],
 "limits": {"max_body_bytes": 4096, "max_header_bytes": 8192, "request_timeout_s": 2, "max_long_jobs": 1}}
JSON

expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sb1","memory":"'$IN'/mem","disk":"'$IN'/disk.img"}'
ID=$(json 'j["snapshot"]' "$T/body")
expect_status 201 POST /v1/snapshots "$ORCH2" '{"tenant":"t2","sandbox":"sb2","memory":"'$IN'/mem"}'
expect_status 201 POST /v1/sandboxes/sb1/shares "$ORCH" '{}'
SH=$(json 'j["token"]' "$T/body")

log "role x endpoint matrix"
# route | allowed roles ; bodies are chosen so an allowed call fails cheaply after auth
while IFS='|' read -r m p body allowed; do
    for who in orch gc sup adm share none bad; do
        case $who in
            orch) tok=$ORCH ;; gc) tok=$GC ;; sup) tok=$SUP ;; adm) tok=$ADM ;; share) tok=$SH ;;
            none) tok= ;; bad) tok=cairn_0000000000000000000000000000000000000000000000000000000000000000 ;;
        esac
        if [ -n "$body" ]; then got=$(req "$m" "$p" "$tok" "$body"); else got=$(req "$m" "$p" "$tok"); fi
        if [ "$who" = none ] || [ "$who" = bad ]; then want=401
        elif [[ " $allowed " == *" $who "* ]]; then want=ok
        else want=403; fi
        if [ "$want" = ok ]; then
            [ "$got" != 401 ] && [ "$got" != 403 ] || fail "$who on $m $p: $got, expected to be let in: $(cat "$T/body")"
        else
            [ "$got" = "$want" ] || fail "$who on $m $p: $got, expected $want: $(cat "$T/body")"
            assert_json 'j["error"]["code"] in ("unauthorized", "forbidden")' "$T/body"
        fi
    done
done <<ROUTES
GET|/v1/snapshots/$ID||orch sup adm
POST|/v1/snapshots|{}|orch adm
POST|/v1/snapshots/$ID/restore|{}|orch adm
POST|/v1/snapshots/$ID/pin||orch adm
DELETE|/v1/snapshots/$ID/pin||orch adm
GET|/v1/snapshots/$ID/files?path=/nonexistent||sup adm
GET|/v1/snapshots/$ID/content||sup adm
GET|/v1/snapshots/$ID/archive?path=/nonexistent||sup adm
GET|/v1/sandboxes||orch sup adm
GET|/v1/sandboxes/sb1||orch sup adm
DELETE|/v1/sandboxes/nosuch||orch adm
POST|/v1/sandboxes/sb1/touch||orch adm
POST|/v1/sandboxes/sb1/rebuild|{}|orch adm
POST|/v1/sandboxes/sb1/shares|{"expires_in": 1}|orch adm
PUT|/v1/tenants/t1/tier|{}|orch adm
GET|/v1/shared/files||share
GET|/v1/shared/content||share
POST|/v1/gc|{"dry_run": "yes"}|gc adm
GET|/v1/audit||adm
ROUTES
expect_status 200 GET /healthz ""
expect_status 200 GET /metrics ""

log "tenant-bound tokens see only their tenant (others are 404)"
expect_status 404 GET "/v1/snapshots/$ID" "$ORCH2"
expect_status 404 GET "/v1/snapshots/sb1@latest" "$SUP2"
expect_status 404 POST "/v1/snapshots/$ID/restore" "$ORCH2" '{"out_dir":"'$OUT'/x"}'
expect_status 404 POST "/v1/snapshots/$ID/pin" "$ORCH2"
expect_status 404 GET "/v1/snapshots/$ID/files" "$SUP2"
expect_status 404 GET "/v1/snapshots/$ID/content?path=/home/ubuntu/output/a.txt" "$SUP2"
expect_status 404 GET /v1/sandboxes/sb1 "$ORCH2"
expect_status 404 POST /v1/sandboxes/sb1/touch "$ORCH2"
expect_status 404 DELETE /v1/sandboxes/sb1 "$ORCH2"
expect_status 404 POST /v1/sandboxes/sb1/shares "$ORCH2" '{}'
expect_status 404 PUT /v1/tenants/t1/tier "$ORCH2" '{"tier":"pro"}'
expect_status 404 POST /v1/snapshots "$ORCH2" '{"tenant":"t1","sandbox":"sbx","memory":"'$IN'/mem"}'
expect_status 404 GET "/v1/sandboxes?tenant=t1" "$ORCH2"
expect_status 200 GET /v1/sandboxes "$ORCH2"
assert_json '[s["sandbox"] for s in j["sandboxes"]] == ["sb2"]' "$T/body"
expect_status 200 GET /v1/sandboxes/sb2 "$SUP2"
grep -q '"sb1"' "$T/body" && fail "another tenant's sandbox leaked"
[ "$(ls "$OUT")" = link-dir ] || fail "a refused restore wrote something"

log "paths are confined to the roots"
snap() { echo '{"tenant":"t1","sandbox":"sbp","memory":"'"$1"'"}'; }
expect_status 403 POST /v1/snapshots "$ORCH" "$(snap /etc/passwd)"
expect_status 403 POST /v1/snapshots "$ORCH" "$(snap "$IN/../elsewhere/x")"
expect_status 403 POST /v1/snapshots "$ORCH" "$(snap "$IN/link-out")"
expect_status 404 POST /v1/snapshots "$ORCH" "$(snap "$IN/missing")"
expect_status 400 POST /v1/snapshots "$ORCH" "$(snap relative/path)"
expect_status 400 POST /v1/snapshots "$ORCH" "$(snap "$IN/tree")"
expect_status 403 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"/tmp/cairn-api-outside"}'
expect_status 403 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/../elsewhere/r"}'
expect_status 403 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/link-dir"}'
expect_status 403 POST "/v1/snapshots/$ID/restore" "$ORCH" '{"out_dir":"'$OUT'/link-dir/r"}'
expect_status 403 POST /v1/sandboxes/sb1/rebuild "$ORCH" '{"out":"'$T'/elsewhere/img"}'
[ ! -e /tmp/cairn-api-outside ] || fail "a restore wrote outside the roots"
[ "$(ls "$T/elsewhere")" = x ] || fail "something was written through a symlink"

log "malformed bodies, wrong types, unknown things"
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1",'
assert_json 'j["error"]["code"] == "bad_json"' "$T/body"
expect_status 400 POST /v1/snapshots "$ORCH" '[1, 2]'
expect_status 400 POST /v1/snapshots "$ORCH" '"text"'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": 5, "sandbox": "x", "memory": "'$IN'/mem"}'
assert_json 'j["error"]["code"] == "wrong_type"' "$T/body"
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "x", "memory": ["a"]}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "x"}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "../x", "memory": "'$IN'/mem"}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "_x", "memory": "'$IN'/mem"}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "x", "memory": "'$IN'/mem", "tier": "gold"}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "x", "memory": "'$IN'/mem", "colour": 1}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "x", "disk": "'$IN'/disk.img", "classes": {"/a": "gold"}}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "sandbox": "x", "disk": "'$IN'/disk.img", "classes": ["/a"]}'
expect_status 400 POST /v1/snapshots "$ORCH" '{"tenant": "t1", "tenant": "t2", "sandbox": "x", "memory": "'$IN'/mem"}'
expect_status 400 POST /v1/gc "$GC" '{"now": "yesterday"}'
expect_status 400 POST /v1/gc "$GC" '{"now": "2030-02-30T00:00:00Z"}'
expect_status 400 POST /v1/gc "$GC" '{"now": [1]}'
expect_status 400 PUT /v1/tenants/t1/tier "$ORCH" '{"tier": "gold"}'
expect_status 400 PUT /v1/tenants/t1/tier "$ORCH" '{"tier": true}'
expect_status 400 POST /v1/sandboxes/sb1/shares "$ORCH" '{"expires_in": "soon"}'
expect_status 400 POST /v1/sandboxes/sb1/shares "$ORCH" '{"expires_in": 99999999999}'
expect_status 400 GET "/v1/snapshots/$ID/files?recursive=maybe" "$SUP"
expect_status 400 GET "/v1/snapshots/$ID/content?path=/home/ubuntu/output" "$SUP"
assert_json 'j["error"]["code"] == "not_a_file"' "$T/body"
expect_status 404 GET "/v1/snapshots/$ID/content?path=/nope" "$SUP"
expect_status 404 GET /v1/snapshots/00000000000000000000 "$ORCH"
expect_status 404 GET /v1/snapshots/not-an-id "$ORCH"
expect_status 404 GET /v1/snapshots/nosuch@latest "$ORCH"
expect_status 404 POST /v1/sandboxes/nosuch/touch "$ORCH"
expect_status 404 GET /v1/nothing "$ORCH"
expect_status 404 GET /v1/snapshots/$ID/extra/parts "$ORCH"
expect_status 404 GET / ""
expect_status 405 PATCH "/v1/snapshots/$ID" "$ORCH"
expect_status 405 DELETE /v1/audit "$ADM"
expect_status 409 POST /v1/sandboxes/sb1/rebuild "$ORCH" '{"out":"'$OUT'/rb.img"}'   # no template recorded

log "huge bodies and headers"
head -c 100000 /dev/zero | tr '\0' ' ' >"$T/huge"
got=$(curl -sS -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $ORCH" -H "Content-Type: application/json" \
    --data-binary @"$T/huge" "$U/v1/snapshots") || true
assert_eq "$got" 413 "a body over max_body_bytes"
got=$(curl -sS -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' a)" "$U/healthz") || true
[ "$got" -ge 400 ] || [ "$got" = 000 ] || fail "a header over max_header_bytes was taken ($got)"
expect_status 200 GET /healthz ""

log "a client that stops mid-request, a slow client, a half-open one"
port=${U##*:}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'POST /v1/snapshots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 500\r\n\r\n{"tena' "$ORCH" >&3
exec 3>&-
exec 4<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /healthz HTTP/1.1\r\nHo' >&4          # and then nothing: half-open
t0=$(date +%s%N)
for i in $(seq 20); do expect_status 200 GET /healthz ""; done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
assert_cmp "$ms" -lt 2000 "20 health checks beside a stalled client took $ms ms"
# request_timeout_s (2 s) closes the half-open connection.
if timeout 6 cat <&4 >/dev/null; then :; else fail "the half-open connection was not closed by the server"; fi
exec 4<&-
# A download dropped halfway: the stream stops, the store's lock is released.
expect_status 201 POST /v1/snapshots "$ORCH" '{"tenant":"t1","sandbox":"sbig","memory":"'$IN'/big"}'
BIG=$(json 'j["snapshot"]' "$T/body")
must cairn template add --store "$S" --name base --disk "$IN/disk.img" >/dev/null
timeout 3 curl -sS --limit-rate 100k -o /dev/null -H "Authorization: Bearer $SUP" \
    "$U/v1/snapshots/sb1@latest/content?path=/home/ubuntu/output/a.txt" || true
expect_status 200 GET /healthz ""
timeout 60 "$CAIRN_BIN" snapshot --store "$S" --tenant t1 --sandbox cli1 --memory "$IN/mem" >/dev/null 2>&1 \
    || fail "a CLI snapshot could not take the store's lock after a client dropped"

log "429 when the long-job slots are full"
# New random pages (nothing to dedup against), so the ingest holds the only slot for
# seconds even on an idle machine; the restores ask for as long as it runs. (It used
# the already-stored big file: deduplicated, it could finish before the first ask.)
head -c 384M /dev/urandom >"$IN/slot"
curl -sS -o "$T/first" -w '%{http_code}' -H "Authorization: Bearer $ORCH" -X POST \
    --data-binary '{"tenant":"t1","sandbox":"slot","memory":"'$IN'/slot"}' "$U/v1/snapshots" >"$T/first.code" &
cpid=$!
sleep 0.4           # the ingest takes the only slot
saw=
while kill -0 "$cpid" 2>/dev/null; do
    got=$(req POST "/v1/snapshots/$BIG/restore" "$ORCH" '{"out_dir":"'$OUT'/big1"}')
    if [ "$got" = 429 ]; then saw=1; break; fi
done
wait $cpid
rm -f "$IN/slot"
[ -n "$saw" ] || fail "no 429 while the only long-job slot was busy"
grep -qi '^retry-after: [0-9]' "$T/hdr" || fail "429 without Retry-After"
assert_json 'j["error"]["code"] == "busy"' "$T/body"
assert_eq "$(cat "$T/first.code")" 201 "the running snapshot"
expect_status 200 POST "/v1/snapshots/$BIG/restore" "$ORCH" '{"out_dir":"'$OUT'/big1"}'
cmp "$OUT/big1/memory" "$IN/big" || fail "the big restore differs"

log "a revoked token is refused at once"
expect_status 200 GET /v1/sandboxes "$SUP"
must cairn token revoke --store "$S" --name sup >/dev/null
expect_status 401 GET /v1/sandboxes "$SUP"
NEW=$(token support sup-new)
expect_status 200 GET /v1/sandboxes "$NEW"

log "SIGTERM: the ingest in flight finishes, then exit 0"
curl -sS -o "$T/last" -w '%{http_code}' -H "Authorization: Bearer $ORCH" -X POST \
    --data-binary '{"tenant":"t1","sandbox":"late","memory":"'$IN'/big"}' "$U/v1/snapshots" >"$T/last.code" &
cpid=$!
for i in $(seq 100); do grep -q 'POST /v1/snapshots' "$T/serve.log" && break; sleep 0.02; done
sleep 0.3
serve_stop
wait $cpid || true
assert_eq "$(cat "$T/last.code")" 201 "the snapshot in flight at SIGTERM"
must cairn snapshots --store "$S" --sandbox late --json >"$T/cli.json"
assert_json 'len(j["snapshots"]) == 1' "$T/cli.json"

for t in "$ORCH" "$SUP" "$GC" "$ADM" "$ORCH2" "$SUP2" "$SH" "$NEW"; do
    grep -qF "$t" "$T/serve.log" && fail "a token in the server's log"
    grep -qF "$t" "$S/serve.json" && fail "a token in clear in the config"
done
must cairn fsck --store "$S" >/dev/null
log "ok"
