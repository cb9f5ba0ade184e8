# gnuplot script of bench/overload.sh: one PNG per scenario, from the
# per-second data analyze.py writes. Variables (gnuplot -e):
#   datafile  columns: t rps goodput non2xx timeouts p50 p95 p99 hit% pool_waiting lag_p99 db_xact/s
#   outfile   the PNG
#   plottitle
#   events    "t|label;t|label" (vertical lines)
#   duration  seconds
if (!exists("datafile") || !exists("outfile")) { print "plot.gp: datafile and outfile are required"; exit }
if (!exists("plottitle")) plottitle = ""
if (!exists("events")) events = ""
if (!exists("duration")) duration = 60
# 0 when a column has no value at all (gnuplot refuses an axis without points)
if (!exists("hashit")) hashit = 1
if (!exists("haspool")) haspool = 1
if (!exists("haslag")) haslag = 1
if (!exists("hasdb")) hasdb = 1

set terminal pngcairo noenhanced size 1100,1250 font "DejaVu Sans,10"
set output outfile
set datafile missing "NaN"
set grid xtics ytics lc rgb "#dddddd"
set key top left horizontal font ",9" samplen 2
set xrange [0:duration]
set lmargin 11
set rmargin 11

# vertical event lines with labels
evs = system("echo '".events."' | tr ';' '\\n' | cut -d'|' -f1 | paste -sd' '")
evl = system("echo '".events."' | tr ';' '\\n' | cut -d'|' -f2 | tr ' ' '_' | paste -sd' '")
set_events(i) = sprintf("set arrow %d from %s, graph 0 to %s, graph 1 nohead lc rgb '#cc0000' dt 2 lw 1.5", i, word(evs, i), word(evs, i))

set multiplot layout 4,1 title plottitle font ",13"

do for [i=1:words(evs)] {
    eval set_events(i)
    eval sprintf("set label %d '%s' at %s, graph 0.04 left offset 0.5,0 tc rgb '#cc0000' font ',8'", i, word(evl, i), word(evs, i))
}

set ylabel "per second"
set format x ""
plot datafile using 1:2 with lines lw 1.5 lc rgb "#1f77b4" title "requests/s (sent)", \
     ''       using 1:3 with lines lw 1.5 lc rgb "#2ca02c" title "2xx/s", \
     ''       using 1:4 with impulses lw 3 lc rgb "#ff7f0e" title "non-2xx/s", \
     ''       using 1:5 with impulses lw 3 lc rgb "#d62728" title "timeouts + conn errors/s"

set ylabel "latency (ms)"
set logscale y
set yrange [0.1:*]
plot datafile using 1:6 with lines lw 1.2 lc rgb "#2ca02c" title "p50", \
     ''       using 1:7 with lines lw 1.2 lc rgb "#ff7f0e" title "p95", \
     ''       using 1:8 with lines lw 1.5 lc rgb "#d62728" title "p99", \
     100 with lines dt 3 lc rgb "#888888" title "100 ms", \
     500 with lines dt 2 lc rgb "#888888" title "500 ms"
unset logscale y
set yrange [*:*]

set ylabel "cache hit %"
set yrange [0:105]
if (haspool) {
    set y2range [0:*]
    set y2label "pool waiting (max)"
    set y2tics
    set ytics nomirror
}
if (hashit && haspool) {
    plot datafile using 1:9 with lines lw 1.5 lc rgb "#9467bd" title "cache hit % (/metrics)", \
         ''       using 1:10 axes x1y2 with steps lw 1.2 lc rgb "#8c564b" title "marketd_db_pool_waiting"
} else {
    if (hashit) {
        plot datafile using 1:9 with lines lw 1.5 lc rgb "#9467bd" title "cache hit % (/metrics)"
    } else {
        if (haspool) {
            plot datafile using 1:10 axes x1y2 with steps lw 1.2 lc rgb "#8c564b" title "marketd_db_pool_waiting"
        } else {
            set label 99 "no /metrics samples" at graph 0.5, graph 0.5 center
            plot NaN notitle
            unset label 99
        }
    }
}
unset y2tics
unset y2label
set ytics mirror
set yrange [*:*]

set format x "%g"
set xlabel "seconds since t = 0"
set ylabel "DB transactions/s"
set yrange [0:*]
set y2range [0:*]
if (haslag) {
    set y2label "loop lag p99 (ms)"
    set y2tics
    set ytics nomirror
}
if (hasdb && haslag) {
    plot datafile using 1:12 with lines lw 1.5 lc rgb "#17becf" title "DB xact/s (pg_stat_database)", \
         ''       using 1:11 axes x1y2 with steps lw 1.2 lc rgb "#e377c2" title "event-loop lag p99"
} else {
    if (hasdb) {
        plot datafile using 1:12 with lines lw 1.5 lc rgb "#17becf" title "DB xact/s (pg_stat_database); no event-loop lag metric"
    } else {
        if (haslag) {
            plot datafile using 1:11 axes x1y2 with steps lw 1.2 lc rgb "#e377c2" title "event-loop lag p99"
        } else {
            set label 99 "no DB or loop-lag samples" at graph 0.5, graph 0.5 center
            plot NaN notitle
        }
    }
}
unset multiplot
