#!/usr/bin/env bash
# cairn-corpus delivers what the benchmarks and tests rely on: real sparse memory files whose pages
# look like real VMs' (measured here, independently of the generator's own counts), ext4 disks that
# e2fsck accepts and that hold the sandbox's files, the same bytes for the same seed, and reuse.
. "$(dirname "$0")/../lib.sh"
GEN=$CORPUS_BIN
[ -x "$GEN" ] || fail "no $GEN (run make first)"
in_range() { awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v >= lo && v <= hi) }'; }
ARGS=(--sandboxes 2 --snapshots 3 --memory-size 64M --disk-size 64M --seed 7)
MiB=$((1 << 20))

"$GEN" "${ARGS[@]}" --out "$T/a" --json >"$T/a.json" || fail "generation failed"
cmp -s "$T/a.json" "$T/a/corpus.json" || fail "--json output differs from corpus.json"
[ ! -e "$T/a.tmp" ] || fail "a.tmp left behind"

# --- the files, their sizes, sparseness
[ -f "$T/a/template/disk" ] || fail "no template/disk"
for sb in sb01 sb02; do
    for k in 1 2 3; do
        d=$T/a/$sb/$k
        for f in memory vmstate disk; do [ -f "$d/$f" ] || fail "missing $sb/$k/$f"; done
        [ "$(stat -c %s "$d/memory")" -eq $((64 * MiB)) ] || fail "$sb/$k/memory is not 64 MiB"
        [ "$(stat -c %s "$d/disk")" -eq $((64 * MiB)) ] || fail "$sb/$k/disk is not 64 MiB"
        alloc=$(($(stat -c %b "$d/memory") * 512))
        [ "$alloc" -lt $((64 * MiB / 2)) ] || fail "$sb/$k/memory is not sparse ($alloc bytes allocated)"
        vs=$(stat -c %s "$d/vmstate")
        { [ "$vs" -gt 100000 ] && [ "$vs" -lt $((2 * MiB)) ] && [ $((vs % 4096)) -ne 0 ]; } ||
            fail "$sb/$k/vmstate has size $vs"
        grep -q "\"path\": \"$sb/$k/memory\", \"kind\": \"memory\", \"bytes\": $((64 * MiB))" "$T/a.json" ||
            fail "corpus.json does not list $sb/$k/memory"
    done
done
cmp -s "$T/a/sb01/1/vmstate" "$T/a/sb01/2/vmstate" && fail "vmstate did not change between snapshots"

# --- disks: real ext4, the template's blocks kept, the sandbox's files in it
for d in "$T"/a/template/disk "$T"/a/sb0*/*/disk; do
    e2fsck -fn "$d" >"$T/fsck.out" 2>&1 || fail "e2fsck -fn ${d#$T/}: $(tail -3 "$T/fsck.out")"
done
used=$(dumpe2fs -h "$T/a/template/disk" 2>/dev/null | awk -F: '/^Block count/ {n=$2} /^Free blocks/ {f=$2} END {print 100*(n-f)/n}')
in_range "$used" 45 70 || fail "template disk is $used% full, want 45-70%"
# a sandbox disk is the template disk with files written in, as a VM's disk is: most blocks stay put
kept=$(perl -e 'open(my $t, "<:raw", $ARGV[0]) or die; open(my $s, "<:raw", $ARGV[1]) or die;
    my ($n, $same, $a, $b) = (0, 0); my $Z = "\0" x 4096;
    while (read($t, $a, 4096)) { read($s, $b, 4096); next if $a eq $Z; $n++; $same++ if $a eq $b }
    printf "%.1f", 100 * $same / $n' "$T/a/template/disk" "$T/a/sb01/1/disk")
in_range "$kept" 90 100 || fail "only $kept% of the template's blocks are unchanged in sb01/1/disk"
dstat() { debugfs -R "stat $2" "$T/a/$1/disk" 2>/dev/null; }
dstat sb02/3 /home/ubuntu/upload/sales.csv | grep -q 'Links: 2' || fail "hard link sales.csv: links != 2"
debugfs -R "ls /home/ubuntu/upload" "$T/a/sb02/3/disk" 2>/dev/null | grep -q sales-latest.csv || fail "no hard link"
dstat sb02/3 /home/ubuntu/latest-report | grep -q 'Type: symlink' || fail "latest-report is not a symlink"
dstat sb02/3 /home/ubuntu/output/.done | grep -q 'Size: 0$' || fail "output/.done is not empty"
dstat sb02/3 /home/ubuntu/.ssh/id_ed25519 | grep -q 'Mode:  0600' || fail "ssh key is not 0600"
dstat sb02/3 /home/ubuntu/.env | grep -q 'User:  1000' || fail ".env is not owned by ubuntu"
sp=$(dstat sb02/3 /tmp/vector-cache.bin)
grep -q 'Size: 16777216' <<<"$sp" || fail "sparse file has the wrong size"
bc=$(sed -n 's/.*Blockcount: \([0-9]*\).*/\1/p' <<<"$sp")
[ "$bc" -lt 1024 ] || fail "sparse file is not sparse in the image ($bc sectors)"
dstat sb02/1 /tmp/scratch-1.txt | grep -q 'Type: regular' || fail "snapshot 1 lacks /tmp/scratch-1.txt"
dstat sb02/3 /tmp/scratch-1.txt | grep -q 'Type: regular' && fail "snapshot 3 still has /tmp/scratch-1.txt"
dstat sb02/3 /home/ubuntu/output/report-v3.md | grep -q 'Type: regular' || fail "snapshot 3 lacks report-v3.md"
dstat sb01/2 /home/ubuntu/project/node_modules | grep -q 'Type: directory' || fail "no node_modules"
debugfs -R "dump /home/ubuntu/output/report.md $T/report.md" "$T/a/sb01/1/disk" 2>/dev/null
grep -q '^# ' "$T/report.md" || fail "report.md does not read back as markdown"

# --- pages, measured here: zero share, sharing across sandboxes, change between snapshots
perl -e '
use strict; use Digest::MD5 qw(md5);
my ($dir, $nzout) = @ARGV; my $Z = "\0" x 4096;
sub pages { open(my $f, "<:raw", $_[0]) or die; local $/; my $d = <$f>; return [unpack("(a4096)*", $d)]; }
my ($tot, $zero, $holes) = (0, 0, 0);
for my $m (glob "$dir/sb*/*/memory") {
    my $p = pages($m); $tot += @$p; $zero += grep { $_ eq $Z } @$p;
    $holes += @$p - (stat $m)[12] * 512 / 4096;
}
my ($a1, $a2, $b1) = map { pages("$dir/$_/memory") } qw(sb01/1 sb01/2 sb02/1);
my (%in_a, $nz, $shared, $same, $changed);
$in_a{md5 $_} = 1 for grep { $_ ne $Z } @$a1;
open(my $out, ">:raw", $nzout) or die;
for my $i (0 .. $#$b1) {
    my $p = $b1->[$i]; next if $p eq $Z;
    $nz++; print $out $p;
    $shared++ if $in_a{md5 $p}; $same++ if $p eq $a1->[$i];
}
$changed += $a1->[$_] ne $a2->[$_] for 0 .. $#$a1;
printf "%.2f %.2f %.2f %.2f %.2f %.2f\n", 100 * $zero / $tot, 100 * $holes / $tot, 100 * ($zero - $holes) / $tot,
    100 * $shared / $nz, 100 * $same / $nz, 100 * $changed / @$a1;
' "$T/a" "$T/nz.bin" >"$T/stats"
read -r zero holes wzero shared same change <"$T/stats"
in_range "$zero" 65 75 || fail "memory is $zero% zero pages, want 65-75%"
in_range "$holes" 50 75 || fail "memory is $holes% holes, want 50-75%"
in_range "$wzero" 2 10 || fail "$wzero% of pages are written zeros, want 2-10% (readers must test pages, not only skip holes)"
in_range "$shared" 45 65 || fail "$shared% of a sandbox's non-zero pages occur in another, want 45-65%"
in_range "$same" 20 35 || fail "$same% of non-zero pages match another sandbox at the same offset, want 20-35%"
in_range "$change" 1 2 || fail "$change% of pages changed between snapshots, want 1-2%"
ratio=$(awk -v a="$(stat -c %s "$T/nz.bin")" -v b="$(zstd -3 -c "$T/nz.bin" | wc -c)" 'BEGIN { printf "%.2f", a / b }')
in_range "$ratio" 2 4 || fail "non-zero pages compress ${ratio}x with zstd -3, want 2-4x"
json_zero=$(sed -n 's/.*"memory": {[^}]*"zero_pct": \([0-9.]*\).*/\1/p' "$T/a.json")
in_range "$json_zero" "$(awk -v z="$zero" 'BEGIN{print z - 0.1}')" "$(awk -v z="$zero" 'BEGIN{print z + 0.1}')" ||
    fail "corpus.json says $json_zero% zero, measured $zero%"

# --- same seed, same bytes; another seed, other bytes
"$GEN" "${ARGS[@]}" --out "$T/b" >/dev/null || fail "second generation failed"
(cd "$T/a" && find . -type f | sort) >"$T/list"
[ "$(wc -l <"$T/list")" -eq 20 ] || fail "expected 20 files, got $(wc -l <"$T/list")"
while read -r f; do cmp -s "$T/a/$f" "$T/b/$f" || fail "same seed, different bytes: $f"; done <"$T/list"
"$GEN" --sandboxes 1 --snapshots 1 --memory-size 8M --no-disk --seed 8 --out "$T/c" >/dev/null
"$GEN" --sandboxes 1 --snapshots 1 --memory-size 8M --no-disk --seed 9 --out "$T/d" >/dev/null
cmp -s "$T/c/sb01/1/memory" "$T/d/sb01/1/memory" && fail "seeds 8 and 9 gave the same memory"

# --- reuse: same parameters reuse DIR untouched; other parameters replace it
before=$(stat -c %Y.%i "$T/a/sb01/1/memory")
out=$("$GEN" "${ARGS[@]}" --out "$T/a") || fail "reuse run failed"
[ "$out" = "reusing $T/a" ] || fail "expected 'reusing $T/a', got '$out'"
[ "$(stat -c %Y.%i "$T/a/sb01/1/memory")" = "$before" ] || fail "reuse rewrote files"
"$GEN" --sandboxes 1 --snapshots 1 --memory-size 8M --no-disk --seed 9 --out "$T/c" | grep -q '^wrote' ||
    fail "other parameters did not regenerate"
cmp -s "$T/c/sb01/1/memory" "$T/d/sb01/1/memory" || fail "regenerated corpus differs from a fresh one"

# --- an interrupted run is never reused
"$GEN" --sandboxes 2 --snapshots 2 --memory-size 512M --no-disk --out "$T/e" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 200); do [ -e "$T/e.tmp/sb01/1/memory" ] && break; sleep 0.05; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[ ! -e "$T/e/corpus.json" ] || fail "a killed run left a corpus.json"
"$GEN" --sandboxes 2 --snapshots 2 --memory-size 512M --no-disk --out "$T/e" | grep -q '^wrote' || fail "rerun after kill"
[ ! -e "$T/e.tmp" ] && [ -f "$T/e/corpus.json" ] || fail "rerun after kill left no clean corpus"

# --- usage and refusals
set +e
"$GEN" --out "$T/x" --memory-size 12345 2>/dev/null; [ $? -eq 2 ] || fail "bad size: exit != 2"
"$GEN" 2>/dev/null; [ $? -eq 2 ] || fail "no --out: exit != 2"
"$GEN" --help | grep -q -- '--memory-size' || fail "--help"
mkdir "$T/mine" && echo precious >"$T/mine/notes"
"$GEN" --out "$T/mine" --no-disk 2>/dev/null; [ $? -eq 1 ] || fail "foreign DIR: exit != 1"
set -e
[ "$(cat "$T/mine/notes")" = precious ] || fail "touched a foreign directory"
log "ok: zero $zero%, holes $holes%, written zeros $wzero%, shared $shared%, same offset $same%, change $change%, zstd -3 ${ratio}x"
