// Package grafana_test checks the Grafana dashboard in this directory:
// it parses, its panels are laid out and identified properly, and every
// PromQL expression names only metrics Canopy's binaries export.
package grafana_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/canopy-grid/canopy/internal/metricnames"
)

type target struct {
	RefID string `json:"refId"`
	Expr  string `json:"expr"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func root(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// load decodes a dashboard strictly: a field this test does not know at
// the levels it models is fine (Grafana has many), broken JSON is not.
func load(t *testing.T, path string) dashboard {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dec.More() {
		t.Fatalf("%s: data after the dashboard object", path)
	}
	return d
}

// check returns what is wrong with a dashboard, given the series names
// that exist.
func check(d dashboard, known map[string]bool) []string {
	var bad []string
	fail := func(f string, a ...any) { bad = append(bad, sprintf(f, a...)) }
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 {
		fail("dashboard needs uid, title and schemaVersion >= 30 (have %q %q %d)", d.UID, d.Title, d.SchemaVersion)
	}
	ids := map[int]bool{}
	exprs := 0
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.ID == 0 || ids[p.ID] {
				fail("panel %q: id %d missing or repeated", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.Title == "" || p.Type == "" {
				fail("panel %d: no title or type", p.ID)
			}
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
				fail("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				fail("panel %q: no queries", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				exprs++
				if tg.RefID == "" || refs[tg.RefID] {
					fail("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				bad = append(bad, names(p.Title, tg.Expr, known)...)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if exprs == 0 {
		fail("no queries at all")
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := ""
		switch x := v.Query.(type) {
		case string:
			q = x
		case map[string]any:
			q, _ = x["query"].(string)
		}
		bad = append(bad, names("variable "+v.Name, q, known)...)
	}
	return bad
}

func names(where, expr string, known map[string]bool) []string {
	ns := metricnames.InExpr(expr)
	if len(ns) == 0 {
		return []string{sprintf("%s: %q names no canopy_ metric", where, expr)}
	}
	var bad []string
	for _, n := range ns {
		if !known[n] {
			bad = append(bad, sprintf("%s: %s is not exported by hub, agent or vmagent", where, n))
		}
	}
	return bad
}

func TestDashboards(t *testing.T) {
	m, err := metricnames.FromSource(root(t), "hub", "agent", "vmagent")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) < 20 {
		t.Fatalf("only %d metric names found in the source: the scan is broken", len(m))
	}
	known := metricnames.Series(m)
	files, err := filepath.Glob("*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards here (%v)", err)
	}
	for _, f := range files {
		for _, problem := range check(load(t, f), known) {
			t.Errorf("%s: %s", f, problem)
		}
	}
}

// TestCheckFindsProblems: the checker does catch a dangling metric name,
// a repeated id and a panel off the grid.
func TestCheckFindsProblems(t *testing.T) {
	known := map[string]bool{"canopy_a": true}
	good := panel{ID: 1, Type: "timeseries", Title: "a", Targets: []target{{RefID: "A", Expr: "rate(canopy_a[5m])"}}}
	good.GridPos.W, good.GridPos.H = 12, 8
	base := dashboard{UID: "u", Title: "t", SchemaVersion: 39}
	for _, tc := range []struct {
		name  string
		edit  func(*panel)
		wantN int
	}{
		{"fine", func(*panel) {}, 0},
		{"dangling name", func(p *panel) { p.Targets[0].Expr = "canopy_gone > 0" }, 1},
		{"no metric", func(p *panel) { p.Targets[0].Expr = "vector(1)" }, 1},
		{"off the grid", func(p *panel) { p.GridPos.X = 20 }, 1},
		{"no queries", func(p *panel) { p.Targets = nil }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good
			p.Targets = append([]target(nil), good.Targets...)
			tc.edit(&p)
			d := base
			d.Panels = []panel{p}
			if got := check(d, known); len(got) != tc.wantN {
				t.Errorf("check found %d problems, want %d: %v", len(got), tc.wantN, got)
			}
		})
	}
	d := base
	d.Panels = []panel{good, good}
	if got := check(d, known); len(got) != 1 {
		t.Errorf("repeated id: %d problems, want 1: %v", len(got), got)
	}
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }
