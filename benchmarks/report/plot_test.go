package report

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeResult(t *testing.T, dir, name string, v map[string]any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func res(scenario, target string, conns int, rate float64, figs map[string]float64) map[string]any {
	return map[string]any{"scenario": scenario, "target": target,
		"params": map[string]any{"conns": conns, "rate": rate}, "figures": figs}
}

func TestPlotDrawsEveryChart(t *testing.T) {
	in := t.TempDir()
	sub := filepath.Join(in, "compare")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{5000, 15000} {
		for _, target := range []string{"herald", "gorilla"} {
			writeResult(t, sub, target+"-idle-"+string(rune('a'+i))+".json", res("idle", target, n, 0, map[string]float64{"rss_per_conn_bytes": 1200}))
			writeResult(t, sub, target+"-bc-"+string(rune('a'+i))+".json", res("broadcast", target, n, 0, map[string]float64{"last_delivery_p50_ms": 100}))
		}
	}
	for _, rate := range []float64{1000, 5000} {
		writeResult(t, in, "u.json"+string(rune('0'+int(rate/1000))), res("unicast", "herald", 15000, rate, nil)) // not .json: skipped
		writeResult(t, in, "u"+string(rune('0'+int(rate/1000)))+".json", res("unicast", "herald", 15000, rate,
			map[string]float64{"latency_p50_ms": 2, "latency_p99_ms": 20, "latency_p999_ms": 40}))
	}
	keyed := res("unicast", "herald", 15000, 5000, map[string]float64{"latency_p99_ms": 25})
	keyed["params"].(map[string]any)["keys"] = true
	writeResult(t, in, "keyed.json", keyed)
	writeResult(t, in, "notes.json", map[string]any{"hello": "not a result"})

	out := t.TempDir()
	files, err := Plot(in, out, "svg")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("wrote %v, want 3 plots", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "<svg") {
			t.Fatalf("%s is not SVG", f)
		}
	}
	lat, _ := os.ReadFile(filepath.Join(out, "unicast-latency.svg"))
	if !strings.Contains(string(lat), "idempotency keys") {
		t.Fatal("latency plot has no line for runs with keys")
	}
	mem, _ := os.ReadFile(filepath.Join(out, "memory-per-conn.svg"))
	for _, want := range []string{"herald", "gorilla"} {
		if !strings.Contains(string(mem), want) {
			t.Fatalf("memory plot has no %q line", want)
		}
	}
}

func TestLoadSkipsProfiledRuns(t *testing.T) {
	in := t.TempDir()
	plain := res("unicast", "herald", 15000, 5000, map[string]float64{"latency_p99_ms": 20})
	profiled := res("unicast", "herald", 15000, 5000, map[string]float64{"latency_p99_ms": 90})
	profiled["profiles"] = []string{"cpu.pprof"}
	writeResult(t, in, "plain.json", plain)
	writeResult(t, in, "profiled.json", profiled)
	rs, err := Load(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Figures["latency_p99_ms"] != 20 {
		t.Fatalf("loaded %+v, want only the run without profiles", rs)
	}
}

func TestPlotWithoutResults(t *testing.T) {
	_, err := Plot(t.TempDir(), t.TempDir(), "svg")
	if !errors.Is(err, ErrNoResults) {
		t.Fatalf("err = %v, want ErrNoResults", err)
	}
	if _, err := Plot(t.TempDir(), t.TempDir(), "gif"); err == nil {
		t.Fatal("gif accepted")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{5, 1, 3}); m != 3 {
		t.Fatalf("median = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatalf("median = %v", m)
	}
}
