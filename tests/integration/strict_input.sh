#!/usr/bin/env bash
# Issue 9, defect 6: inputs that used to be taken silently are refused. Times that do not
# exist or do not fit (gc --now, touch --at) are usage errors; an option given twice is a
# usage error that stores nothing; a /proc or /sys file (size 0 or 4096 with other content)
# is refused, never stored as 0 bytes with exit 0; and the audit's text output escapes an
# actor or a path holding a newline, so no line of it can be forged.
source "$(dirname "$0")/../lib.sh"

S=$T/store
must cairn init --store "$S" >/dev/null
gen "$T/mem" 65536 1
gen "$T/mem2" 65536 2
id=$(snap "$S" acme box memory="$T/mem")

# ---- times
for bad in 2030-02-30T00:00:00Z 2031-02-29T00:00:00Z 2030-04-31T12:00:00Z 2030-13-01T00:00:00Z \
           2030-00-10T00:00:00Z 2030-01-01T24:00:00Z 2030-01-01T23:60:00Z 2030-01-01T00:00:61Z \
           2030-01-01T00:00:00+25:00 2030-01-01T00:00:00+01:60 2030-1-01T00:00:00Z \
           2030-01-01T00:00:00 2030-01-01T00:00:00.Z 2030-01-01 1969-12-31T23:59:59Z \
           10000-01-01T00:00:00Z 99999999999999999999 9223372036854775807 18446744073709551617 \
           253402300800 -1 ""; do
    expect 2 cairn gc --store "$S" --dry-run --now "$bad" >/dev/null
    assert_grep 'not a time' "$T/err" "gc --now '$bad' says why"
    expect 2 cairn touch --store "$S" --sandbox box --at "$bad" >/dev/null
done
# The ones that exist still work, and mean what they say.
for good in 2028-02-29T00:00:00Z 2000-02-29T12:00:00.5Z 2030-01-01T00:00:00+02:00 \
            2030-12-31T23:59:59-05:30 1700000000 253402300799; do
    must cairn gc --store "$S" --dry-run --now "$good" >/dev/null
done
must cairn touch --store "$S" --sandbox box --at 2030-01-01T02:00:00+02:00 --json >"$T/t.json"
assert_json 'j["at"] == "2030-01-01T00:00:00Z"' "$T/t.json" "an offset is applied"
must cairn touch --store "$S" --sandbox box --at 1893456000 --json >"$T/t.json"
assert_json 'j["at"] == "2030-01-01T00:00:00Z"' "$T/t.json" "unix seconds"

# ---- an option given twice
fp=$(store_fp "$S")
expect 2 cairn snapshot --store "$S" --tenant acme --sandbox twice --memory "$T/mem" --memory "$T/mem2" >/dev/null
assert_grep "'--memory' given twice" "$T/err" "the usage error names the option"
expect 2 cairn snapshot --store "$S" --tenant acme --sandbox twice --memory="$T/mem" --memory "$T/mem2" >/dev/null
expect 2 cairn snapshot --store "$S" --tenant acme --tenant evil --sandbox twice --memory "$T/mem" >/dev/null
expect 2 cairn snapshot --store "$S" --store "$T/other" --tenant acme --sandbox twice --memory "$T/mem" >/dev/null
expect 2 cairn snapshots --store "$S" --sandbox box --json --json >/dev/null
expect 2 cairn gc --store "$S" --now 1700000000 --now 1800000000 --dry-run >/dev/null
assert_eq "$(store_fp "$S")" "$fp" "a usage error stored nothing"
assert_eq "$(count_snapshots "$S" twice)" 0 "snapshots of a refused command"

# ---- pseudo files
for f in /proc/self/status /proc/self/maps /proc/cpuinfo /sys/kernel/mm/transparent_hugepage/enabled \
         /sys/devices/system/cpu/online; do
    [ -r "$f" ] || continue
    for what in memory vmstate disk; do
        expect 1 cairn snapshot --store "$S" --tenant acme --sandbox pseudo --$what "$f" >/dev/null
        assert_grep 'proc|sys|pseudo' "$T/err" "--$what $f: the message says why"
    done
done
assert_eq "$(count_snapshots "$S" pseudo)" 0 "snapshots of pseudo files"
assert_eq "$(store_fp "$S")" "$fp" "a refused pseudo file stored nothing"
# An empty regular file is still an empty file.
: >"$T/empty"
e=$(snap "$S" acme empty vmstate="$T/empty")
verify "$S" "$e" vmstate="$T/empty"

# ---- the audit's text output
sandbox_tree "$T/root" 1
printf 'x' >"$T/root/home/ubuntu/output/a
b.txt"
ext4_image "$T/root" "$T/disk.img"
d=$(snap "$S" acme files disk="$T/disk.img")
forged=$'eve\n2030-01-01T00:00:00Z  root     cat      acme/files '"$d"' /etc/shadow'
must cairn cat --store "$S" --actor "$forged" --snapshot "$d" /home/ubuntu/output/report.md >/dev/null
must cairn cat --store "$S" --actor bob --snapshot "$d" $'/home/ubuntu/output/a\nb.txt' >"$T/ab"
assert_eq "$(cat "$T/ab")" x "cat of a name with a newline"
must cairn audit --store "$S" >"$T/audit.txt"
assert_eq "$(wc -l <"$T/audit.txt")" 2 "one text line per audited read"
grep -q '^2030' "$T/audit.txt" && fail "the actor's newline forged a line: $(cat "$T/audit.txt")"
assert_grep '^[^ ]+  eve\\x0a2030' "$T/audit.txt" "the actor is shown escaped"
assert_grep 'output/a\\x0ab\.txt$' "$T/audit.txt" "the path is shown escaped"
must cairn audit --store "$S" --json >"$T/audit.json"
assert_json "j['entries'][0]['actor'] == '''$forged'''" "$T/audit.json" "JSON keeps the exact actor"
# a torn last line (a crash mid-append: that read never ran) is not an entry; a damaged
# line with entries after it is an error naming the line, never skipped in silence
cp "$S/audit.log" "$T/audit.keep"
printf '{"time":"2030-01-01T00:00:00Z","act' >>"$S/audit.log"
must cairn audit --store "$S" --json >"$T/audit.json"
assert_json 'len(j["entries"]) == 2' "$T/audit.json" "a torn last line is not an entry"
{ head -n 1 "$T/audit.keep"; echo 'garbage'; tail -n 1 "$T/audit.keep"; } >"$S/audit.log"
expect 1 cairn audit --store "$S" --json >/dev/null
assert_grep 'audit.log line 2: not a JSON object \(damaged\)' "$T/err" "a damaged line is named"
cp "$T/audit.keep" "$S/audit.log"
# ---- names: every --tenant/--sandbox is checked with the store's rule, never looked up
for bad in '../../etc' 's1@latest' '../x' '.hidden' 'a/b' '' "$(printf 'x%.0s' $(seq 129))"; do
    expect 2 cairn snapshots --store "$S" --sandbox "$bad" >/dev/null
    assert_grep 'not a sandbox name' "$T/err" "snapshots --sandbox '$bad' says why"
    expect 2 cairn sandboxes --store "$S" --tenant "$bad" >/dev/null
    assert_grep 'not a tenant name' "$T/err" "sandboxes --tenant '$bad' says why"
    expect 2 cairn touch --store "$S" --sandbox "$bad" >/dev/null
done
must cairn snapshots --store "$S" --sandbox box --json >"$T/s.json"
assert_json 'len(j["snapshots"]) >= 1' "$T/s.json" "a valid name still lists"

# ---- numbers of uffd-serve and mount: decimal integers in each option's own bounds
for a in "--cache-mib nan" "--cache-mib 0x40" "--cache-mib 0" "--cache-mib 1048577" "--cache-mib 64k" \
         "--cache-mib -1" "--cache-mib 1e3" "--record nan" "--record 0x10" "--record 86401" "--record 1.5" \
         "--record inf" "--fault-around 0x10" "--fault-around 65" "--fault-around 8.0" \
         "--accept-timeout -1" "--accept-timeout 5s" "--accept-timeout 86401" "--accept-timeout nan"; do
    expect 2 cairn uffd-serve --store "$S" --snapshot "$id" --socket "$T/never.sock" $a >/dev/null
    assert_grep "${a%% *} takes" "$T/err" "uffd-serve $a says why"
done
for v in " 5" "5 " "+5"; do
    expect 2 cairn uffd-serve --store "$S" --snapshot "$id" --socket "$T/never.sock" --cache-mib "$v" >/dev/null
done
[ ! -e "$T/never.sock" ] || fail "a refused uffd-serve made its socket"
mkdir -p "$T/mnt"
for v in nan 0x40 0 1048577 1.5 ""; do
    expect 2 cairn mount --store "$S" --cache-mib "$v" "$T/mnt" >/dev/null
    assert_grep '--cache-mib takes' "$T/err" "mount --cache-mib '$v' says why"
done
log "ok"
