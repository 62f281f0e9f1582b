#!/usr/bin/env bash
# Issue 9, defect 1: a secret is an inode, not a name. With hard links between secrets and
# artifacts (the walker meeting either name first), files below a folder whose own name is
# secret (output/.env/...), and a crafted image whose innocent-looking file's block points
# at a secret's block, no secret byte leaves through cat, extract (folder and tar), a
# reclaim's files-only snapshot or a rebuilt disk, under any name, unless --include-secrets
# (support reads only, audited). Secret bytes are unique markers, so "leaked" is a grep.
source "$(dirname "$0")/../lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
base_template "$S"
export CAIRN_ACTOR=support-bob

# Secret files: 6000 bytes of a marker each (not inline in the inode).
secret() { mkdir -p "$(dirname "$1")"; "$PY" -c 'import sys; open(sys.argv[1], "w").write((sys.argv[2] + "\n") * 600)' "$1" "$2"; }
R=$T/root
H=$R/home/ubuntu
mkdir -p "$H/output" "$H/upload" "$H/project" "$R/srv"
echo "the report" >"$H/output/report.md"
secret "$H/.ssh/id_rsa" LEAK_A_SSHKEY;        ln "$H/.ssh/id_rsa" "$H/output/a.txt"
secret "$R/root/.ssh/id_ed25519" LEAK_B_ROOT;  ln "$R/root/.ssh/id_ed25519" "$H/output/b.txt"
secret "$H/project/.env" LEAK_C_ENV;           ln "$H/project/.env" "$H/upload/c.bin"
secret "$H/output/d.txt" LEAK_D_LATER;         ln "$H/output/d.txt" "$R/srv/.env"
secret "$H/output/.env/token" LEAK_E_FOLDER
secret "$H/output/.env/deep/more.txt" LEAK_F_DEEP
secret "$H/upload/.aws-keys.pem/inner/x.bin" LEAK_G_PEMDIR
MARKERS='LEAK_[A-G]_'
ext4_image "$R" "$T/disk.img" 32M
id=$(snap "$S" acme box disk="$T/disk.img")

must cairn ls --store "$S" --snapshot "$id" / --recursive --json >"$T/ls.json"
# The scenario the defect needs: an artifact's name met first by the walker (a FILE entry).
assert_json 'any(e["type"] == "file" and e["path"] in ("/home/ubuntu/output/b.txt", "/home/ubuntu/output/d.txt") for e in j["entries"])' \
    "$T/ls.json" "the walker met an artifact's name of a secret inode first"
for p in /home/ubuntu/output/a.txt /home/ubuntu/output/b.txt /home/ubuntu/upload/c.bin \
         /home/ubuntu/output/d.txt /srv/.env /home/ubuntu/output/.env/token \
         /home/ubuntu/output/.env/deep /home/ubuntu/output/.env/deep/more.txt \
         /home/ubuntu/upload/.aws-keys.pem/inner/x.bin; do
    assert_json "[e['class'] for e in j['entries'] if e['path'] == '$p'] == ['secret']" "$T/ls.json" "class of $p"
done
assert_json "[e['class'] for e in j['entries'] if e['path'] == '/home/ubuntu/output/report.md'] == ['artifact']" \
    "$T/ls.json" "an artifact stays an artifact"

# ---- cat: every name refused; with --include-secrets the bytes, audited.
n_audit=0
for p in /home/ubuntu/output/a.txt /home/ubuntu/output/b.txt /home/ubuntu/upload/c.bin \
         /home/ubuntu/output/d.txt /srv/.env /root/.ssh/id_ed25519 /home/ubuntu/output/.env/token \
         /home/ubuntu/output/.env/deep/more.txt /home/ubuntu/upload/.aws-keys.pem/inner/x.bin; do
    expect 1 cairn cat --store "$S" --snapshot "$id" "$p" >/dev/null
    assert_grep 'secret' "$T/err" "cat $p says it is a secret"
    grep -qE "$MARKERS" "$T/out" && fail "cat $p printed secret bytes"
done
must cairn cat --store "$S" --snapshot "$id" --include-secrets /home/ubuntu/output/b.txt >"$T/b"
cmp -s "$T/b" "$R/root/.ssh/id_ed25519" || fail "cat --include-secrets gives the bytes"
must cairn audit --store "$S" --json >"$T/audit.json"
assert_json 'any(x["include_secrets"] and x["paths"] == ["/home/ubuntu/output/b.txt"] for x in j["entries"])' \
    "$T/audit.json" "the secret read is audited as one"
must cairn cat --store "$S" --snapshot "$id" /home/ubuntu/output/report.md >"$T/r"
cmp -s "$T/r" "$H/output/report.md" || fail "an artifact is still printed"

# ---- extract: folder and tar, the whole disk and the important folders.
for what in / /home/ubuntu/output /home/ubuntu/upload /srv; do
    rm -rf "$T/x"
    rc=0; cairn extract --store "$S" --snapshot "$id" "$what" --out "$T/x" >/dev/null 2>"$T/xerr" || rc=$?
    [ "$rc" -le 1 ] || fail "extract $what: exit $rc: $(cat "$T/xerr")"
    ! grep -rqE "$MARKERS" "$T/x" || fail "extract $what --out wrote secret bytes: $(grep -rlE "$MARKERS" "$T/x")"
    [ -e "$T/x/home/ubuntu/output/report.md" ] || [ "$what" != / ] || fail "extract / lost the artifact"
    rc=0; cairn extract --store "$S" --snapshot "$id" "$what" --tar - >"$T/x.tar" 2>"$T/xerr" || rc=$?
    [ "$rc" -le 1 ] || fail "extract $what --tar: exit $rc: $(cat "$T/xerr")"
    ! grep -qaE "$MARKERS" "$T/x.tar" || fail "extract $what --tar wrote secret bytes"
done
rm -rf "$T/x"
must cairn extract --store "$S" --snapshot "$id" /home/ubuntu/output --include-secrets --out "$T/x" >/dev/null
grep -rq LEAK_E_FOLDER "$T/x" || fail "extract --include-secrets gives the folder's secrets"
grep -rq LEAK_D_LATER "$T/x" || fail "extract --include-secrets gives the linked secret"

# ---- rebuild: the new disk holds none of them (it starts from a template without them).
no_leak_img() { ! grep -qaE "$MARKERS" "$1" || fail "$2: secret bytes in $1"; }
must cairn rebuild --store "$S" --sandbox box --template base --out "$T/new.img" >/dev/null
no_leak_img "$T/new.img" "rebuild"
debugfs -R "cat /home/ubuntu/output/report.md" "$T/new.img" 2>/dev/null | cmp -s - "$H/output/report.md" \
    || fail "rebuild lost the artifact"
for p in /home/ubuntu/output/a.txt /home/ubuntu/output/b.txt /home/ubuntu/output/d.txt /home/ubuntu/upload/c.bin \
         /home/ubuntu/output/.env/token; do
    debugfs -R "stat $p" "$T/new.img" 2>&1 | grep -q "not found\|File not found" || fail "rebuild wrote $p"
done

# ---- reclaim: gc far in the future reclaims; the files-only snapshot keeps no secret.
must cairn gc --store "$S" --now 2099-01-01T00:00:00Z >/dev/null
fo=$(must cairn snapshots --store "$S" --sandbox box --json | json 'j["snapshots"][0]["snapshot"]')
[ "$fo" != "$id" ] || fail "gc did not reclaim"
must cairn ls --store "$S" --snapshot "$fo" / --recursive --json >"$T/fo.json"
assert_json 'not any(e["class"] == "secret" for e in j["entries"])' "$T/fo.json" "the files-only snapshot lists no secret"
rm -rf "$T/x"
must cairn extract --store "$S" --snapshot "$fo" / --include-secrets --out "$T/x" >/dev/null
! grep -rqE "$MARKERS" "$T/x" || fail "the files-only snapshot kept secret bytes"
cmp -s "$T/x/home/ubuntu/output/report.md" "$H/output/report.md" || fail "the reclaim lost the artifact"
must cairn rebuild --store "$S" --sandbox box --template base --out "$T/new2.img" >/dev/null
no_leak_img "$T/new2.img" "rebuild after reclaim"

# ---- a crafted image: output/innocent.txt's block pointer aimed at a secret's block
# (block-mapped files, so debugfs can set the pointer).
R2=$T/root2
mkdir -p "$R2/home/ubuntu/output"
secret "$R2/home/ubuntu/.ssh/id_rsa" LEAK_A_CRAFTED
echo "nothing to see" >"$R2/home/ubuntu/output/innocent.txt"
ext4_image "$R2" "$T/crafted.img" 16M -O ^extent,^64bit
blk=$(debugfs -R "blocks /home/ubuntu/.ssh/id_rsa" "$T/crafted.img" 2>/dev/null | awk '{print $1}')
[ -n "$blk" ] || fail "no block for the secret"
debugfs -w -R "sif /home/ubuntu/output/innocent.txt block[0] $blk" "$T/crafted.img" >/dev/null 2>&1
debugfs -R "cat /home/ubuntu/output/innocent.txt" "$T/crafted.img" 2>/dev/null | grep -q LEAK_A_CRAFTED \
    || fail "the crafted file does not read the secret's block"
c=$(snap "$S" acme crafted disk="$T/crafted.img")
must cairn ls --store "$S" --snapshot "$c" /home/ubuntu/output/innocent.txt --json >"$T/c.json"
assert_json 'j["entries"][0]["class"] == "secret"' "$T/c.json" "a file sharing a secret's blocks is secret"
expect 1 cairn cat --store "$S" --snapshot "$c" /home/ubuntu/output/innocent.txt >/dev/null
rm -rf "$T/x"
rc=0; cairn extract --store "$S" --snapshot "$c" / --out "$T/x" >/dev/null 2>&1 || rc=$?
[ "$rc" -le 1 ] || fail "extract of the crafted image: exit $rc"
! grep -rqE "$MARKERS|LEAK_A_CRAFTED" "$T/x" || fail "extract of the crafted image leaked"
must cairn rebuild --store "$S" --sandbox crafted --template base --out "$T/c.img" >/dev/null
! grep -qa LEAK_A_CRAFTED "$T/c.img" || fail "rebuild of the crafted image leaked"
fsck_ok "$S"
log "ok"
