# Three bar panels (ingest, restore, stored bytes) for docs/bench.png.
# Called by report.py with: f1 t1 y1 .. f3 t3 y3 (data file, title, y label), out, sub,
# norm (1 when the values are relative to Cairn: draw the line at 1).
# Data lines: "label" value colour (1 cairn, 2 peer, 3 limit, 4 ideal).  Log scale: the peers span 100x.
set terminal pngcairo size 1500,560 font "DejaVu Sans,11"
set output out
set multiplot layout 1,3 title "Cairn (orange) beside its peers (purple) and the limits (green)\n".sub font ",13"
set logscale y
set style fill solid 0.85 border -1
set grid ytics lc rgb "#dddddd"
set xtics rotate by 35 right nomirror font ",10"
set ytics nomirror
set key off
set bmargin 7
set lmargin 9
set linetype 1 lc rgb "#d95f02"
set linetype 2 lc rgb "#7570b3"
set linetype 3 lc rgb "#66a61e"
set linetype 4 lc rgb "#999999"

do for [i=1:3] {
    f = value("f".i); t = value("t".i); y = value("y".i)
    set autoscale xy  # stats obeys the previous panel's ranges otherwise
    stats f using 2 nooutput
    lo = STATS_min / 2.5; hi = STATS_max * 3
    if (hi / lo < 20) { lo = hi / 20 }  # at least one labelled decade
    set yrange [lo:hi]
    set xrange [-0.6:STATS_records - 0.4]
    set title t font ",12"
    set ylabel y
    plot f using 0:2:($0 - 0.38):($0 + 0.38):(lo):2:3:xtic(1) with boxxyerror lc variable, \
         f using 0:2:(sprintf("%.3g", $2)) with labels offset 0,0.8 font ",9", \
         (norm ? 1 : NaN) with lines dt 2 lc rgb "#444444"
}
unset multiplot
