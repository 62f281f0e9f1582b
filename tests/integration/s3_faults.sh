#!/usr/bin/env bash
# The store on S3 when things are wrong (a real Ceph RGW): no keys, a wrong secret key (both
# transports), a missing bucket, a bucket that is not a Cairn store, gc, and RGW
# stopped in the middle of a snapshot: the snapshot fails cleanly (nothing acknowledged),
# and after RGW is back the same snapshot succeeds, restores byte-exact, fsck is clean.
. "$(dirname "$0")/../lib.sh"
need_s3

B=$(s3_bucket)
s3_init "$T/a" "$B" v4
gen "$T/small" $((2 << 20)) 1 20
id=$(snap "$T/a" acme s1 memory="$T/small")

# No keys: said plainly, before any request.
( unset CAIRN_S3_ACCESS_KEY CAIRN_S3_SECRET_KEY; expect 1 cairn snapshots --store "$T/a" --sandbox s1 >/dev/null )
assert_grep 'CAIRN_S3_ACCESS_KEY' "$T/err" "missing keys"

# A wrong secret key: refused, naming endpoint and bucket, with either transport.
for sig in v4 v2; do
    s3_init "$T/w$sig" "$B" $sig
    CAIRN_S3_SECRET_KEY=wrong-$CAIRN_S3_SECRET_KEY expect 1 cairn snapshots --store "$T/w$sig" --sandbox s1 >/dev/null
    assert_grep "s3://$B at $S3_EP" "$T/err" "wrong secret ($sig) names the bucket and endpoint"
    assert_grep 'refused|SignatureDoesNotMatch|AccessDenied' "$T/err" "wrong secret ($sig) says it was refused"
    ! grep -qF "$CAIRN_S3_SECRET_KEY" "$T/err" || fail "the secret key is in an error message"
done
CAIRN_S3_SECRET_KEY=wrong expect 1 cairn init --store "$T/never" --backend s3 --s3-endpoint "$S3_EP" \
    --s3-bucket "$B" --s3-http >/dev/null
[ ! -e "$T/never/cairn.conf" ] || fail "a refused init left a store"

# A missing bucket (the node's bucket was deleted, or its config names another).
cp -a "$T/a" "$T/gone"
sed -i "s/^s3_bucket=.*/s3_bucket=$B-gone/" "$T/gone/cairn.conf"
expect 1 cairn snapshots --store "$T/gone" --sandbox s1 >/dev/null
assert_grep "s3://$B-gone at $S3_EP: the bucket does not exist" "$T/err" "missing bucket"

# A bucket that is not a Cairn store: init refuses it; a node pointed at it is refused too.
F=$(s3_bucket)
[ "$(s3_curl PUT "$F")" = 200 ] || fail "could not make bucket $F"
[ "$(s3_curl PUT "$F/report.csv" --data-binary 'a,b')" = 200 ] || fail "could not put into $F"
expect 1 cairn init --store "$T/f" --backend s3 --s3-endpoint "$S3_EP" --s3-bucket "$F" --s3-http >/dev/null
assert_grep "not a Cairn store.*report.csv" "$T/err" "init on a foreign bucket"
[ "$(s3_curl GET "$F/cairn.conf")" = 404 ] || fail "init wrote into a foreign bucket"
cp -a "$T/a" "$T/foreign"
sed -i "s/^s3_bucket=.*/s3_bucket=$F/" "$T/foreign/cairn.conf"
expect 1 cairn snapshots --store "$T/foreign" --sandbox s1 >/dev/null
assert_grep "s3://$F at $S3_EP is not a Cairn store" "$T/err" "a node on a foreign bucket"

# gc on S3 (its protocol: s3_gc.sh) and its --dry-run run on this store.
must cairn gc --store "$T/a" --dry-run >/dev/null
must cairn gc --store "$T/a" >/dev/null

# RGW stopped in the middle of a snapshot (after its first 64 MiB pack was sealed).
if [ -n "${CAIRN_TEST_S3_DIR:-}" ]; then
    RGW=$CAIRN_TEST_S3_DIR
else
    RGW=$T/rgw
fi
at_exit '"$REPO/tests/rgw.sh" start-rgw "$RGW" >/dev/null 2>&1'
gen "$T/big" $((200 << 20)) 2
before=$(count_snapshots "$T/a" s2)
export CAIRN_S3_RETRIES=2 CAIRN_S3_BACKOFF_MS=50
npacks=$(find "$T/a/packs" -name '*.pack' | wc -l)
( rc=0; cairn snapshot --store "$T/a" --tenant acme --sandbox s2 --memory "$T/big" >"$T/cut.out" 2>"$T/cut.err" || rc=$?
  echo $rc >"$T/cut.rc" ) &
pid=$!
for _ in $(seq 1 600); do
    [ "$(find "$T/a/packs" -name '*.pack' | wc -l)" -gt "$npacks" ] && break
    [ -e "$T/cut.rc" ] && break
    sleep 0.05
done
"$REPO/tests/rgw.sh" stop-rgw "$RGW" || fail "could not stop radosgw"
wait $pid || true
[ "$(cat "$T/cut.rc")" = 1 ] || fail "a snapshot with RGW stopped did not fail (exit $(cat "$T/cut.rc")): $(cat "$T/cut.err")"
assert_grep "s3://$B at $S3_EP: .*failed 3 times" "$T/cut.err" "the failure names the bucket and the retries"
[ ! -s "$T/cut.out" ] || fail "a failed snapshot printed an id: $(cat "$T/cut.out")"
"$REPO/tests/rgw.sh" start-rgw "$RGW" || fail "could not restart radosgw"
unset CAIRN_S3_RETRIES CAIRN_S3_BACKOFF_MS
assert_eq "$(count_snapshots "$T/a" s2)" "$before" "snapshots of s2 after the failed one"
id2=$(snap "$T/a" acme s2 memory="$T/big")
verify "$T/a" "$id2" memory="$T/big"
fsck_ok "$T/a"
# A fresh node sees exactly the acknowledged snapshots.
s3_init "$T/n" "$B" v2
fsck_ok "$T/n" --rebuild-index
assert_eq "$(count_snapshots "$T/n" s2)" 1 "node B's snapshots of s2"
verify "$T/n" "$id2" memory="$T/big"
verify "$T/n" "$id" memory="$T/small"
log "ok"
