package hub

import (
	"fmt"
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/hub/series"
)

// Plots are drawn on the server as inline SVG: no script and no library
// reach the browser for them (the page works with scripts off and under a
// strict Content-Security-Policy), a plot costs a few kilobytes, and the
// same code draws the public page. Lines differ in dash pattern and carry
// their name at their end, so a plot reads without colour.

// plotDef is one plot: the series it draws.
type plotDef struct {
	ID, Title, Unit string
	// series returns the names to draw, given every series' name.
	series func(all []string) []string
}

// plots are the page's plots, in order.
var plots = []plotDef{
	{ID: "vms", Title: "VMs by state", Unit: "VMs", series: func(all []string) []string {
		var out []string
		for _, s := range DisplayStates {
			if slices.Contains(all, "vms."+s) {
				out = append(out, "vms."+s)
			}
		}
		return out
	}},
	{ID: "jobs", Title: "Idle and running jobs per group", Unit: "jobs", series: prefixed("jobs.")},
	{ID: "cores", Title: "Cores in use per site", Unit: "cores", series: prefixed("cores.")},
	{ID: "boots", Title: "Boots and failures", Unit: "per slot", series: func(all []string) []string {
		var out []string
		for _, s := range []string{"boots", "failures"} {
			if slices.Contains(all, s) {
				out = append(out, s)
			}
		}
		return out
	}},
}

func prefixed(p string) func([]string) []string {
	return func(all []string) []string {
		var out []string
		for _, s := range all {
			if strings.HasPrefix(s, p) {
				out = append(out, s)
			}
		}
		return out
	}
}

func plotByID(id string) (plotDef, bool) {
	for _, p := range plots {
		if p.ID == id {
			return p, true
		}
	}
	return plotDef{}, false
}

// maxPlotLines is how many lines one plot draws: the largest by their
// last value; the rest are summed into one "others" line.
const maxPlotLines = 8

// maxPlotPoints is how many points a line has at most on the page
// (neighbouring slots are averaged); the CSV has every slot.
const maxPlotPoints = 180

// dashes tell lines apart without colour.
var dashes = []string{"", "6 3", "2 2", "8 3 2 3", "1 3", "10 4", "4 2 1 2", "12 2 2 2 2 2", "3 6"}

// colours add to the dashes for those who see them.
var colours = []string{"#1b6ac9", "#c0392b", "#2e8b57", "#8e44ad", "#d35400", "#555", "#16a085", "#7f6000", "#b03a79"}

// plotView is one plot drawn.
type plotView struct {
	ID, Title, Unit, Tier string
	SVG                   template.HTML
	Points                int
	Empty                 bool
}

type line struct {
	name string
	pts  []series.Point
}

// drawPlot draws a plot's series in one tier as inline SVG.
func drawPlot(s *series.Set, p plotDef, tier int, now time.Time) plotView {
	t := series.Tiers[tier]
	pv := plotView{ID: p.ID, Title: p.Title, Unit: p.Unit, Tier: t.Name}
	var lines []line
	for _, n := range p.series(s.Names()) {
		if pts := s.Points(n, tier); len(pts) > 0 {
			lines = append(lines, line{name: n, pts: pts})
		}
	}
	if len(lines) > maxPlotLines {
		last := func(l line) float64 { return l.pts[len(l.pts)-1].V }
		slices.SortStableFunc(lines, func(a, b line) int { return cmpFloat(last(b), last(a)) })
		lines = append(lines[:maxPlotLines-1], sumLines("others", lines[maxPlotLines-1:]))
	}
	if len(lines) == 0 {
		pv.Empty = true
		return pv
	}
	const w, h, left, right, top, bottom = 640.0, 200.0, 48.0, 130.0, 10.0, 22.0
	end := now.Truncate(t.Step)
	start := end.Add(-t.Span())
	ymax := 1.0
	for _, l := range lines {
		for _, pt := range l.pts {
			ymax = max(ymax, pt.V)
		}
	}
	ymax = niceCeil(ymax)
	x := func(at time.Time) float64 {
		return left + (w-left-right)*float64(at.Sub(start))/float64(end.Sub(start))
	}
	y := func(v float64) float64 { return top + (h-top-bottom)*(1-v/ymax) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="plot" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s, last %s">`, w, h, template.HTMLEscapeString(p.Title), t.Name)
	// Axes and grid: 0, half, max; start and end times.
	for _, v := range []float64{0, ymax / 2, ymax} {
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" class="grid"/><text x="%.0f" y="%.1f" class="ax" text-anchor="end">%s</text>`,
			left, w-right, y(v), y(v), left-4, y(v)+4, fmtNum(v))
	}
	layout := "15:04"
	if t.Span() > 24*time.Hour {
		layout = "Jan 2"
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="ax">%s</text><text x="%.0f" y="%.0f" class="ax" text-anchor="end">%s UTC</text>`,
		left, h-6, start.UTC().Format(layout), w-right, h-6, end.UTC().Format(layout))
	for i, l := range lines {
		pts := thin(l.pts, maxPlotPoints)
		var coords strings.Builder
		for _, pt := range pts {
			if pt.T.Before(start) {
				continue
			}
			fmt.Fprintf(&coords, "%.1f,%.1f ", x(pt.T), y(pt.V))
			pv.Points++
		}
		dash := ""
		if d := dashes[i%len(dashes)]; d != "" {
			dash = ` stroke-dasharray="` + d + `"`
		}
		lastPt := pts[len(pts)-1]
		label := l.name[strings.LastIndexByte(l.name, '.')+1:]
		if strings.HasPrefix(l.name, "jobs.") {
			label = strings.TrimPrefix(l.name, "jobs.")
		}
		fmt.Fprintf(&b, `<polyline class="series" data-series="%s" fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`,
			template.HTMLEscapeString(l.name), colours[i%len(colours)], dash, strings.TrimSpace(coords.String()))
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="1.6"%s/><text x="%.0f" y="%.1f" class="lab">%s %s</text>`,
			w-right+4, w-right+22, top+12*float64(i)+4, top+12*float64(i)+4, colours[i%len(colours)], dash,
			w-right+25, top+12*float64(i)+8, template.HTMLEscapeString(label), fmtNum(lastPt.V))
	}
	b.WriteString(`</svg>`)
	pv.SVG = template.HTML(b.String()) //nolint:gosec // every value written is a number or escaped
	return pv
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sumLines adds lines slot by slot.
func sumLines(name string, ls []line) line {
	sum := map[int64]float64{}
	for _, l := range ls {
		for _, p := range l.pts {
			sum[p.T.Unix()] += p.V
		}
	}
	keys := make([]int64, 0, len(sum))
	for k := range sum {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := line{name: name}
	for _, k := range keys {
		out.pts = append(out.pts, series.Point{T: time.Unix(k, 0).UTC(), V: sum[k]})
	}
	return out
}

// thin averages neighbouring points down to at most n.
func thin(pts []series.Point, n int) []series.Point {
	if len(pts) <= n {
		return pts
	}
	k := (len(pts) + n - 1) / n
	out := make([]series.Point, 0, n)
	for i := 0; i < len(pts); i += k {
		j := min(i+k, len(pts))
		sum := 0.0
		for _, p := range pts[i:j] {
			sum += p.V
		}
		out = append(out, series.Point{T: pts[j-1].T, V: sum / float64(j-i)})
	}
	return out
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}
