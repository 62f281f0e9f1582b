#!/usr/bin/env bash
# Issue 8: `make install` with PREFIX and DESTDIR puts cairn, its man page and the systemd
# units under DESTDIR/PREFIX, the units naming the installed binary; `make uninstall`
# takes them away again. The installed cairn runs.
source "$(dirname "$0")/../lib.sh"
R=$T/root
P=/opt/cairn
make -s -C "$REPO" BUILD="$BUILD" DESTDIR="$R" PREFIX="$P" install >"$T/make.log" 2>&1 \
    || { cat "$T/make.log" >&2; fail "make install"; }
[ -x "$R$P/bin/cairn" ] || fail "no $P/bin/cairn"
"$R$P/bin/cairn" --help >"$T/help" || fail "the installed cairn does not run"
assert_grep '^usage: cairn' "$T/help" "installed cairn --help"
[ -f "$R$P/share/man/man1/cairn.1" ] || fail "no man page"
groff -man -Tutf8 -ww -z "$R$P/share/man/man1/cairn.1" 2>"$T/groff.err" || fail "man page: $(cat "$T/groff.err")"
[ ! -s "$T/groff.err" ] || fail "man page warnings: $(cat "$T/groff.err")"
for u in cairn-gc.service cairn-gc.timer cairn-serve.service; do
    [ -f "$R$P/lib/systemd/system/$u" ] || fail "no unit $u"
done
for u in cairn-gc.service cairn-serve.service; do
    assert_grep "^ExecStart=$P/bin/cairn " "$R$P/lib/systemd/system/$u" "$u names the installed cairn"
    ! grep -q /usr/local/bin "$R$P/lib/systemd/system/$u" || fail "$u still names /usr/local/bin"
done
assert_grep "$P/bin/cairn gc" "$R$P/share/cairn/cairn-gc.cron" "the cron example names the installed cairn"
# Every command of `cairn --help` has its line in the man page.
for c in $(sed -n '/^commands:/,/^$/p' "$T/help" | awk 'NF > 1 {print $1}'); do
    grep -q "^\.B.*$c" "$R$P/share/man/man1/cairn.1" || fail "the man page does not name command $c"
done
make -s -C "$REPO" BUILD="$BUILD" DESTDIR="$R" PREFIX="$P" uninstall >"$T/make.log" 2>&1 \
    || { cat "$T/make.log" >&2; fail "make uninstall"; }
left=$(find "$R" -type f)
[ -z "$left" ] || fail "make uninstall left: $left"
