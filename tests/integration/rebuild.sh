#!/usr/bin/env bash
# Issue 3, rebuild: a fresh VM disk = the sandbox's template + its important files (artifact,
# upload, project) from its latest snapshot. Checked with e2fsck -fn and by reading every
# file back out of the new image with debugfs; then timed with a 2 GiB template holding
# ~1 GiB of real files from /usr and 100 MiB of important files.
source "$(dirname "$0")/../lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null


# rebuild.py gen: the template tree, the sandbox tree (the template plus the sandbox's own
# files) and what the rebuilt disk must hold for each path: the sandbox's version
# ("sandbox": important), the template's ("template"), or nothing ("absent").
# rebuild.py check IMG: reads each path back with debugfs and compares.
cat >"$T/rebuild.py" <<'EOF'
import json, os, random, re, shutil, stat, subprocess, sys

def gen(t, version):
    r = random.Random(11)
    tm, sb = t + b"/tmpl", t + b"/sb"
    exp = {}
    def put(root, p, data, mode=0o644, uid=0):
        os.makedirs(os.path.dirname(root + p), exist_ok=True)
        with open(root + p, "wb") as f:
            f.write(data)
        os.chmod(root + p, mode); os.lchown(root + p, uid, uid)
    def mk(root, p, mode=0o755, uid=0):
        os.makedirs(root + p, exist_ok=True); os.chmod(root + p, mode); os.lchown(root + p, uid, uid)
    H, U = b"/home/ubuntu", 1000
    # the template: an OS, a home with a project folder
    if not os.path.exists(tm):
        put(tm, b"/etc/hostname", b"template\n")
        put(tm, b"/usr/bin/tool", r.randbytes(40000), 0o755)
        os.symlink(b"usr/bin", tm + b"/bin")
        mk(tm, b"/home"); mk(tm, H, 0o750, U)
        put(tm, H + b"/.bashrc", b"# template bashrc\n", uid=U)
        mk(tm, H + b"/project", uid=U); mk(tm, H + b"/output", uid=U)
        put(tm, H + b"/project/README.md", b"template readme\n", uid=U)
        put(tm, H + b"/project/keep.txt", b"from the template\n", uid=U)
        for p in (b"/home", H, H + b"/project", H + b"/output", H + b"/project/README.md",
                  H + b"/project/keep.txt", H + b"/.bashrc"):
            os.utime(tm + p, (1500000000, 1500000000))
    shutil.rmtree(sb, ignore_errors=True)
    subprocess.run(["cp", "-a", tm, sb], check=True)
    r = random.Random(version)
    def s(p, kind, data=None, size=None, mode=0o644, uid=U):
        put(sb, p, r.randbytes(size) if data is None else data, mode, uid)
        exp[p] = kind
    O, P, UP = H + b"/output", H + b"/project", H + b"/upload"
    s(O + b"/report.md", "sandbox", b"# report v%d\n" % version)
    os.link(sb + O + b"/report.md", sb + O + b"/report-hard.md"); exp[O + b"/report-hard.md"] = "sandbox"
    os.symlink(b"report.md", sb + O + b"/report-link"); exp[O + b"/report-link"] = "sandbox"
    s(O + b"/deep/a/b/c/data.bin", "sandbox", size=300000)
    for d in (b"/deep", b"/deep/a", b"/deep/a/b"):
        os.chmod(sb + O + d, 0o750); exp[O + d] = "sandbox"
    exp[O + b"/deep/a/b/c"] = "sandbox"
    with open(sb + O + b"/sparse.img", "wb") as f:
        f.truncate(8 << 20); f.write(r.randbytes(4096)); f.seek(5 << 20); f.write(r.randbytes(9000))
    exp[O + b"/sparse.img"] = "sparse"
    s(O + b"/xattr.txt", "sandbox", b"with xattrs\n")
    os.setxattr(sb + O + b"/xattr.txt", "user.note", b"hello")
    os.setxattr(sb + O + b"/xattr.txt", "user.bin", bytes(range(256)))
    s(O + b"/run.sh", "sandbox", b"#!/bin/sh\necho hi\n", 0o755)
    s(O + b"/private.txt", "sandbox", b"0600\n", 0o600)
    s(O + b"/empty", "sandbox", b"")
    s(O + b"/bad\xff\xfe.bin", "sandbox", b"not utf-8\n")
    s(O + b"/big.bin", "sandbox", size=2 * 1048576 + 77)
    s(O + b"/draft.md.swp", "absent", b"swap\n")                     # temp, even in output
    s(UP + b"/data.csv", "sandbox", size=100000)
    s(UP + b"/photo.jpg", "sandbox", size=1048576)
    s(P + b"/README.md", "sandbox", b"sandbox readme v%d\n" % version)  # replaces the template's
    exp[P + b"/keep.txt"] = "sandbox"         # the template's file, unchanged: still there
    s(P + b"/app.js", "sandbox", b"console.log(1)\n", 0o755)
    s(P + b"/.env", "absent", b"TOKEN=hunter2\n", 0o600)
    s(P + b"/node_modules/pkg/index.js", "absent", b"module.exports = 1\n")
    s(P + b"/__pycache__/m.pyc", "absent", size=500)
    s(H + b"/.ssh/id_ed25519", "absent", b"-----BEGIN OPENSSH PRIVATE KEY-----\n", 0o600)
    os.link(sb + H + b"/.ssh/id_ed25519", sb + O + b"/key-copy"); exp[O + b"/key-copy"] = "absent"
    s(H + b"/.cache/pip/wheel.whl", "absent", size=3000)
    s(H + b"/deck.pptx", "sandbox", size=7000)
    s(H + b"/notes.txt", "absent", b"runtime\n")
    s(b"/tmp/scratch.txt", "absent", b"scratch\n", uid=0)
    s(b"/usr/local/bin/newtool", "absent", size=5000, mode=0o755, uid=0)
    s(b"/etc/hostname", "template", b"sandbox-%d\n" % version, uid=0)   # runtime: not copied
    exp[H + b"/.bashrc"] = "template"
    for i, p in enumerate(sorted(exp, key=lambda p: -p.count(b"/"))):
        os.utime(sb + p, (1600000000 + i * 100, 1600000000 + i * 100), follow_symlinks=False)
    json.dump({p.hex(): k for p, k in exp.items()}, open(t + b"/expect.json", "w"))

def debugfs(img, cmd):
    return subprocess.run([b"debugfs", b"-R", cmd, img], capture_output=True).stdout

def stat_of(img, p):
    out = debugfs(img, b"stat " + p).decode("latin-1")
    if "Inode:" not in out:
        return None
    f = lambda rx: re.search(rx, out).group(1)
    return dict(ino=int(f(r"Inode: (\d+)")), type=f(r"Type: (\w+)"), mode=int(f(r"Mode:\s+(\d+)"), 8),
                uid=int(f(r"User:\s+(\d+)")), gid=int(f(r"Group:\s+(\d+)")), size=int(f(r"Size: (\d+)")),
                blocks=int(f(r"Blockcount: (\d+)")), mtime=f(r" mtime: (0x[0-9a-f]+):"),
                link=(re.search(r'Fast link dest: "(.*)"', out) or [None, None])[1], raw=out)

def check(t, img, tmp):
    exp = {bytes.fromhex(k): v for k, v in json.load(open(t + b"/expect.json")).items()}
    bad, seen = [], {}
    for p, kind in sorted(exp.items()):
        st = stat_of(img, p)
        if kind == "absent":
            if st is not None:
                bad.append("%r: must not be in the rebuilt disk" % p)
            continue
        if st is None:
            bad.append("%r: missing from the rebuilt disk" % p); continue
        src = (t + b"/tmpl" if kind == "template" else t + b"/sb") + p
        ls = os.lstat(src)
        if st["mode"] != stat.S_IMODE(ls.st_mode) or (st["uid"], st["gid"]) != (ls.st_uid, ls.st_gid):
            bad.append("%r: mode/owner %o %d:%d, expected %o %d:%d" % (p, st["mode"], st["uid"], st["gid"],
                       stat.S_IMODE(ls.st_mode), ls.st_uid, ls.st_gid))
        if int(st["mtime"], 16) != int(ls.st_mtime):
            bad.append("%r: mtime %d, expected %d" % (p, int(st["mtime"], 16), int(ls.st_mtime)))
        if stat.S_ISLNK(ls.st_mode):
            if st["type"] != "symlink" or st["link"] != os.readlink(src).decode():
                bad.append("%r: not the symlink -> %r" % (p, os.readlink(src)))
            continue
        if stat.S_ISDIR(ls.st_mode):
            if st["type"] != "directory":
                bad.append("%r: not a directory" % p)
            continue
        out = tmp + b"/dump"
        if os.path.exists(out): os.unlink(out)
        debugfs(img, b"dump " + p + b" " + out)
        if not os.path.exists(out) or open(out, "rb").read() != open(src, "rb").read():
            bad.append("%r: bytes differ from the %s's" % (p, "template" if kind == "template" else "sandbox"))
        if kind == "sparse" and st["blocks"] * 512 >= st["size"] // 2:
            bad.append("%r: holes filled (%d bytes allocated of %d)" % (p, st["blocks"] * 512, st["size"]))
        seen.setdefault(ls.st_ino, set()).add(st["ino"])
        for name in os.listxattr(src):
            if not name.startswith("user."): continue
            if os.path.exists(out): os.unlink(out)
            debugfs(img, b"ea_get -f " + out + b" " + p + b" " + name.encode())
            if not os.path.exists(out) or open(out, "rb").read() != os.getxattr(src, name):
                bad.append("%r: xattr %s lost or changed" % (p, name))
    for src_ino, inos in seen.items():
        if len(inos) != 1:
            bad.append("names of one source inode are %d inodes in the rebuilt disk" % len(inos))
    if bad:
        sys.exit("\n".join(bad[:30]))

if sys.argv[1] == "gen": gen(sys.argv[2].encode(), int(sys.argv[3]))
else: check(sys.argv[2].encode(), sys.argv[3].encode(), sys.argv[4].encode())
EOF

# e2fsck_ok IMG: a VM can boot from it
e2fsck_ok() { e2fsck -fn "$1" >"$T/fsck.log" 2>&1 || { tail -20 "$T/fsck.log" >&2; fail "e2fsck -fn $1"; }; }

# ---- correctness --------------------------------------------------------------------
log "template, two snapshots of the sandbox, rebuild"
must "$PY" "$T/rebuild.py" gen "$T" 1 >/dev/null
ext4_image "$T/sb" "$T/sb1.img" 64M
must "$PY" "$T/rebuild.py" gen "$T" 2 >/dev/null
ext4_image "$T/tmpl" "$T/tmpl.img" 64M
ext4_image "$T/sb" "$T/sb2.img" 64M
# a second template: its /etc/hostname tells which one a rebuild used
mkdir -p "$T/other/etc"; echo other >"$T/other/etc/hostname"
ext4_image "$T/other" "$T/other.img" 64M

must cairn template add --store "$S" --name base --disk "$T/tmpl.img" >/dev/null
must cairn template add --store "$S" --name other --disk "$T/other.img" >/dev/null
must cairn snapshot --store "$S" --tenant acme --sandbox sb --disk "$T/sb1.img" --template base >/dev/null
must cairn snapshot --store "$S" --tenant acme --sandbox sb --disk "$T/sb2.img" --template base >/dev/null

must cairn rebuild --store "$S" --sandbox sb --out "$T/new.img" --json >"$T/rebuild.json"
is_json_object "$T/rebuild.json" || fail "rebuild --json is not one JSON object"
assert_json 'j["template"] == "base"' "$T/rebuild.json" "rebuild uses the recorded template"
e2fsck_ok "$T/new.img"
mkdir -p "$T/chk"
"$PY" "$T/rebuild.py" check "$T" "$T/new.img" "$T/chk" || fail "the rebuilt disk differs (see above)"
# the template's own content is there: its symlink, its binary
debugfs -R "stat /bin" "$T/new.img" 2>/dev/null | grep -q 'Fast link dest: "usr/bin"' || fail "template symlink /bin lost"
rm -f "$T/chk/tool"; debugfs -R "dump /usr/bin/tool $T/chk/tool" "$T/new.img" >/dev/null 2>&1
cmp -s "$T/chk/tool" "$T/tmpl/usr/bin/tool" || fail "template file /usr/bin/tool differs"

# --template overrides the recorded one
must cairn rebuild --store "$S" --sandbox sb --template other --out "$T/new2.img" >/dev/null
e2fsck_ok "$T/new2.img"
rm -f "$T/chk/h"; debugfs -R "dump /etc/hostname $T/chk/h" "$T/new2.img" >/dev/null 2>&1
assert_eq "$(cat "$T/chk/h" 2>/dev/null)" other "/etc/hostname of a rebuild with --template other"
rm -f "$T/chk/r"; debugfs -R "dump /home/ubuntu/output/report.md $T/chk/r" "$T/new2.img" >/dev/null 2>&1
assert_eq "$(cat "$T/chk/r" 2>/dev/null)" "# report v2" "important file of a rebuild with --template other"

# ---- unknown templates ----------------------------------------------------------------
must cairn snapshot --store "$S" --tenant acme --sandbox orphan --disk "$T/sb1.img" --template nosuch >/dev/null
must cairn snapshot --store "$S" --tenant acme --sandbox plain --disk "$T/sb1.img" >/dev/null
expect 1 cairn rebuild --store "$S" --sandbox orphan --out "$T/x1.img" >/dev/null
assert_grep 'nosuch' "$T/err" "rebuild with an unknown recorded template must name it"
expect 1 cairn rebuild --store "$S" --sandbox sb --template nosuch --out "$T/x2.img" >/dev/null
assert_grep 'nosuch' "$T/err" "rebuild --template of an unknown template must name it"
expect 1 cairn rebuild --store "$S" --sandbox plain --out "$T/x3.img" >/dev/null
assert_grep 'template' "$T/err" "rebuild of a sandbox without a template must say so"
expect 1 cairn rebuild --store "$S" --sandbox nobody --template base --out "$T/x4.img" >/dev/null
for f in x1 x2 x3 x4; do
    [ -z "$(ls "$T/$f".img* 2>/dev/null)" ] || fail "a failed rebuild left $(ls "$T/$f".img*)"
done

# ---- time: 2 GiB template with ~1 GiB of real files, 100 MiB of important files -------
SRC=/usr/lib/x86_64-linux-gnu
[ -d "$SRC" ] || SRC=/usr/lib
log "timing: template of $SRC ($(du -sm "$SRC" | cut -f1) MiB) in a 2 GiB image"
rm -rf "$T/tmpl" "$T/sb" "$T/other" "$T"/sb1.img "$T"/sb2.img "$T"/new*.img
t0=$EPOCHREALTIME
ext4_image "$SRC" "$T/big-tmpl.img" 2G
log "mke2fs -d: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
t0=$EPOCHREALTIME
must cairn template add --store "$S" --name big --disk "$T/big-tmpl.img" >/dev/null
log "template add: $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
# the sandbox's disk: the template's blocks plus 100 files of 1 MiB written in
cp --sparse=always "$T/big-tmpl.img" "$T/big-sb.img"
mkdir -p "$T/imp"
"$PY" -c '
import random, sys
r = random.Random(5)
for i in range(100):
    open("%s/f%03d.bin" % (sys.argv[1], i), "wb").write(r.randbytes(1 << 20))' "$T/imp"
{ echo "mkdir /home"; echo "mkdir /home/ubuntu"; echo "mkdir /home/ubuntu/output"
  for f in "$T"/imp/*.bin; do echo "write $f /home/ubuntu/output/$(basename "$f")"; done; } >"$T/debugfs.cmds"
debugfs -w -f "$T/debugfs.cmds" "$T/big-sb.img" >"$T/debugfs.log" 2>&1
[ "$(grep -c '^Allocated inode' "$T/debugfs.log")" = 100 ] || fail "debugfs -w: $(tail -5 "$T/debugfs.log")"
must cairn snapshot --store "$S" --tenant acme --sandbox big --disk "$T/big-sb.img" --template big >/dev/null
rm -f "$T/big-sb.img"
t0=$EPOCHREALTIME
must cairn rebuild --store "$S" --sandbox big --out "$T/big-new.img" --json >"$T/rebuild.json"
secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
log "rebuild of a 2 GiB template + 100 MiB of important files: ${secs}s (the issue's target: < 2 s; load $(cut -d' ' -f1 /proc/loadavg))"
assert_json 'j["bytes"] == 100 << 20' "$T/rebuild.json" "rebuild --json bytes"
e2fsck_ok "$T/big-new.img"
mkdir "$T/back"
debugfs -R "rdump /home/ubuntu/output $T/back" "$T/big-new.img" >/dev/null 2>&1
diff -r "$T/imp" "$T/back/output" >/dev/null || fail "important files read back from the rebuilt 2 GiB disk differ"
# a few of the template's biggest files are intact
while read -r f; do
    rel=${f#"$SRC"}
    rm -f "$T/back/t"; debugfs -R "dump $rel $T/back/t" "$T/big-new.img" >/dev/null 2>&1
    cmp -s "$T/back/t" "$f" || fail "template file $rel differs in the rebuilt disk"
done < <(find "$SRC" -type f -printf '%s %p\n' | sort -rn | head -3 | cut -d' ' -f2-)
# Speed is the benchmark's business (no timed test passes or fails on a loaded machine);
# this bound only catches a rebuild that hangs or goes quadratic.
awk -v s="$secs" 'BEGIN { exit !(s < 120) }' || fail "rebuild took ${secs}s: hung or quadratic"
log "ok"
