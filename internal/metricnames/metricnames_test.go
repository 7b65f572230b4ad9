package metricnames

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestFromSource(t *testing.T) {
	dir := t.TempDir()
	src := `package x
import "github.com/prometheus/client_golang/prometheus"
var (
	a = prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_a_total", Help: "a"})
	b = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "canopy_b_seconds", Help: "b"})
	c = prometheus.NewDesc("canopy_c", "c", nil, nil)
	d = prometheus.NewGauge(prometheus.GaugeOpts{Name: "go_other", Help: "not ours"})
	e = struct{ Name string }{Name: "canopy_not_a_metric"}
)
`
	if err := os.MkdirAll(filepath.Join(dir, "pkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pkg", "m.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pkg", "m_test.go"), []byte(`package x
var _ = prometheus.NewDesc("canopy_test_only", "", nil, nil)`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FromSource(dir, "pkg")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Kind{"canopy_a_total": Plain, "canopy_b_seconds": Histogram, "canopy_c": Plain}
	if len(got) != len(want) {
		t.Fatalf("FromSource = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: kind %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	s := Series(got)
	for _, n := range []string{"canopy_b_seconds_bucket", "canopy_b_seconds_sum", "canopy_b_seconds_count", "canopy_c"} {
		if !s[n] {
			t.Errorf("Series lacks %s", n)
		}
	}
	if s["canopy_c_bucket"] {
		t.Error("Series has canopy_c_bucket for a plain metric")
	}
}

func TestFromSourceBadDir(t *testing.T) {
	if _, err := FromSource(t.TempDir(), "missing"); err == nil {
		t.Fatal("FromSource of a missing dir: no error")
	}
}

func TestInExpr(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`canopy_hub_site_connected == 0`, []string{"canopy_hub_site_connected"}},
		{`sum by (site) (rate(canopy_a_total{x="canopy_label_value"}[5m])) / canopy_b`, []string{"canopy_a_total", "canopy_b"}},
		{`histogram_quantile(0.9, sum by (le) (rate(canopy_h_bucket[5m])))`, []string{"canopy_h_bucket"}},
		{`up{job='canopy_job\'s'}`, nil},
		{`1 + 1`, nil},
	} {
		if got := InExpr(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("InExpr(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}
