package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// ErrNoResults is returned by Plot when dir holds no result a plot can use.
var ErrNoResults = errors.New("no results to plot")

// result is the part of a herald-bench JSON document the plots read.
type result struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Lost     int64  `json:"lost"`
	Params   struct {
		Conns int     `json:"conns"`
		Rate  float64 `json:"rate"`
		Keys  bool    `json:"keys"`
	} `json:"params"`
	Figures  map[string]float64 `json:"figures"`
	Profiles []string           `json:"profiles"`
}

// Load reads every *.json result under dir, subdirectories included.
// Files that are not results are skipped, and so are profiled runs (the
// profiler's cost is not the server's); unreadable files are an error.
func Load(dir string) ([]result, error) {
	var out []result
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var r result
		if err := json.Unmarshal(b, &r); err != nil || r.Scenario == "" || r.Figures == nil || len(r.Profiles) > 0 {
			return nil
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read results in %s: %w", dir, err)
	}
	return out, nil
}

// median is the middle value (the mean of the two middle ones for an even
// count) of vs, which it sorts.
func median(vs []float64) float64 {
	sort.Float64s(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// series is one line of a plot: points sorted by x.
type series struct {
	name string
	pts  plotter.XYs
}

func (s *series) add(x, y float64) { s.pts = append(s.pts, plotter.XY{X: x, Y: y}) }

// byTarget groups results of one scenario into one series per target:
// x is the connection count, y the median of fig (scaled) over the runs
// at that count.
func byTarget(rs []result, scenario, fig string, scale float64) []series {
	type key struct {
		target string
		conns  int
	}
	vals := map[key][]float64{}
	for _, r := range rs {
		if v, ok := r.Figures[fig]; ok && r.Scenario == scenario {
			k := key{r.Target, r.Params.Conns}
			vals[k] = append(vals[k], v*scale)
		}
	}
	lines := map[string]*series{}
	for k, vs := range vals {
		s := lines[k.target]
		if s == nil {
			s = &series{name: k.target}
			lines[k.target] = s
		}
		s.add(float64(k.conns), median(vs))
	}
	return sorted(lines)
}

// sorted orders series by name, Herald first, and each series by x.
func sorted(lines map[string]*series) []series {
	var out []series
	for _, s := range lines {
		sort.Slice(s.pts, func(i, j int) bool { return s.pts[i].X < s.pts[j].X })
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].name == "herald") != (out[j].name == "herald") {
			return out[i].name == "herald"
		}
		return out[i].name < out[j].name
	})
	return out
}

// Plot reads every result under dir and writes plots to out, as SVG or PNG
// (format "svg" or "png"):
// memory per connection and broadcast time against connection count for
// Herald and the baselines, and unicast latency percentiles against the
// message rate. It returns the files written; a plot without data is
// skipped, and ErrNoResults says that none had any.
func Plot(dir, out, format string) ([]string, error) {
	if format != "svg" && format != "png" {
		return nil, fmt.Errorf("plots: format %q: want svg or png", format)
	}
	rs, err := Load(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("plots: %w", err)
	}
	type chart struct {
		file, title, x, y string
		logY              bool
		lines             []series
	}
	charts := []chart{
		{"memory-per-conn", "Server memory per idle connection (RSS delta / N)", "connections", "KB per connection (log scale)", true,
			byTarget(rs, "idle", "rss_per_conn_bytes", 1.0/1024)},
		{"broadcast-time", "Broadcast: time to last delivery (median of runs)", "connections", "ms", false,
			byTarget(rs, "broadcast", "last_delivery_p50_ms", 1)},
		{"unicast-latency", "Unicast: end-to-end latency, from the POST to the client's receipt", "messages per second", "ms (log scale)", true,
			unicastLatency(rs)},
	}
	var files []string
	for _, c := range charts {
		if len(c.lines) == 0 {
			continue
		}
		path := filepath.Join(out, c.file+"."+format)
		if err := draw(path, c.title, c.x, c.y, c.logY, c.lines); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("plots from %s: %w", dir, ErrNoResults)
	}
	return files, nil
}

// unicastLatency is p50, p99 and p99.9 of single-node Herald unicast runs
// against their rate (the median over runs at a rate), at the most common
// connection count; runs with idempotency keys (--keys) make a p99 line of
// their own.
func unicastLatency(rs []result) []series {
	count := map[int]int{}
	for _, r := range rs {
		if r.Scenario == "unicast" && r.Target == "herald" {
			count[r.Params.Conns]++
		}
	}
	conns, most := 0, 0
	for c, n := range count {
		if n > most || (n == most && c > conns) {
			conns, most = c, n
		}
	}
	lines := map[string]*series{}
	for _, q := range []string{"p50", "p99", "p999", "p99 keyed"} {
		fig, keyed := "latency_"+q+"_ms", false
		if q == "p99 keyed" {
			fig, keyed = "latency_p99_ms", true
		}
		byRate := map[float64][]float64{}
		for _, r := range rs {
			if v, ok := r.Figures[fig]; ok && v > 0 && r.Scenario == "unicast" && r.Target == "herald" &&
				r.Params.Conns == conns && r.Params.Keys == keyed {
				byRate[r.Params.Rate] = append(byRate[r.Params.Rate], v)
			}
		}
		name := fmt.Sprintf("%s, %d conns", q, conns)
		if keyed {
			name = fmt.Sprintf("p99 with idempotency keys, %d conns", conns)
		}
		s := &series{name: name}
		for rate, vs := range byRate {
			s.add(rate, median(vs))
		}
		if len(s.pts) > 0 {
			lines[q] = s
		}
	}
	return sorted(lines)
}

// draw writes one line chart with points to path, in the format its
// extension names.
func draw(path, title, xlabel, ylabel string, logY bool, lines []series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	p.X.Tick.Marker = plainTicks{}
	p.Y.Tick.Marker = plainTicks{}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = ticks125{}
	}
	p.Legend.Top = true
	p.Legend.Left = true
	for i, s := range lines {
		l, pts, err := plotter.NewLinePoints(s.pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.name, err)
		}
		c := plotutil.Color(i)
		if s.name == "herald" {
			c = color.RGBA{R: 200, G: 30, B: 30, A: 255}
			l.Width = vg.Points(2.5)
		}
		l.Color, pts.Color = c, c
		pts.Shape = plotutil.Shape(i)
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	pad(&p.X, 0.05, false)
	pad(&p.Y, 0.08, logY)
	if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// pad widens an axis so that points do not sit on its edges, and starts a
// linear axis at zero when its data are all positive.
func pad(a *plot.Axis, share float64, log bool) {
	if log {
		a.Min, a.Max = a.Min/(1+4*share), a.Max*(1+4*share)
		return
	}
	if a.Min > 0 {
		a.Min = 0
	}
	span := a.Max - a.Min
	if span == 0 {
		span = math.Max(math.Abs(a.Max), 1)
	}
	a.Min, a.Max = a.Min-share*span, a.Max+share*span
}

// ticks125 marks a log axis at 1, 2 and 5 times each power of ten, so a
// reader can tell 20 ms from 50 ms without counting minor ticks.
type ticks125 struct{}

// Ticks returns the marks between min and max.
func (ticks125) Ticks(min, max float64) []plot.Tick {
	var ts []plot.Tick
	if min <= 0 {
		min = max / 1000
	}
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= min && v <= max {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ts
}

// plainTicks are gonum's default marks with labels in plain notation
// (5000, not 5000.00).
type plainTicks struct{}

// Ticks returns the marks between min and max.
func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', -1, 64)
		}
	}
	return ts
}
