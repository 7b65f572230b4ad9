// Package metricnames lists the Prometheus metrics Canopy's binaries
// export, read from their Go source: the names given to client_golang's
// metric constructors (CounterOpts, GaugeOpts, HistogramOpts, SummaryOpts
// Name fields) and to prometheus.NewDesc. Tests use it to check that
// alert rules and dashboards name only metrics that exist.
package metricnames

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Kind is what a metric is, as far as its series names go.
type Kind int

// Kinds of metric: a histogram also exports name_bucket, name_sum and
// name_count series.
const (
	Plain Kind = iota
	Histogram
	Summary
)

// FromSource parses the non-test Go files under each dir (relative to
// root) and returns every canopy_ metric name found, with its kind.
func FromSource(root string, dirs ...string) (map[string]Kind, error) {
	out := map[string]Kind{}
	fset := token.NewFileSet()
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && (e.Name() == "testdata" || strings.HasPrefix(e.Name(), ".")) {
				return filepath.SkipDir
			}
			if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return fmt.Errorf("parse %s: %w", path, err)
			}
			collect(f, out)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("metric names under %s: %w", d, err)
		}
	}
	return out, nil
}

func collect(f *ast.File, out map[string]Kind) {
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			kind, ok := optsKind(n.Type)
			if !ok {
				return true
			}
			for _, el := range n.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if id, ok := kv.Key.(*ast.Ident); ok && id.Name == "Name" {
					if name, ok := canopyString(kv.Value); ok {
						out[name] = kind
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "NewDesc" || len(n.Args) == 0 {
				return true
			}
			if name, ok := canopyString(n.Args[0]); ok {
				if _, seen := out[name]; !seen {
					out[name] = Plain
				}
			}
		}
		return true
	})
}

// optsKind recognises prometheus.XxxOpts composite literals.
func optsKind(t ast.Expr) (Kind, bool) {
	sel, ok := t.(*ast.SelectorExpr)
	if !ok {
		return 0, false
	}
	switch sel.Sel.Name {
	case "CounterOpts", "GaugeOpts", "UntypedOpts":
		return Plain, true
	case "HistogramOpts":
		return Histogram, true
	case "SummaryOpts":
		return Summary, true
	}
	return 0, false
}

func canopyString(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil || !strings.HasPrefix(s, "canopy_") {
		return "", false
	}
	return s, true
}

// Series returns every series name the metrics export: histogram and
// summary names with their _bucket/_sum/_count (summary: _sum/_count)
// series as well.
func Series(m map[string]Kind) map[string]bool {
	out := map[string]bool{}
	for name, k := range m {
		out[name] = true
		switch k {
		case Histogram:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case Summary:
			out[name+"_sum"], out[name+"_count"] = true, true
		}
	}
	return out
}

var nameRE = regexp.MustCompile(`\bcanopy_[a-zA-Z0-9_]+`)

// InExpr returns the canopy_ metric names a PromQL expression mentions.
// Label values are not names: quoted strings are removed first.
func InExpr(expr string) []string {
	return nameRE.FindAllString(stripQuoted(expr), -1)
}

// stripQuoted blanks PromQL string literals ("..", '..', `..`).
func stripQuoted(s string) string {
	var b strings.Builder
	var q rune
	esc := false
	for _, r := range s {
		switch {
		case q == 0 && (r == '"' || r == '\'' || r == '`'):
			q = r
			b.WriteRune(' ')
		case q != 0:
			if esc {
				esc = false
			} else if r == '\\' && q != '`' {
				esc = true
			} else if r == q {
				q = 0
			}
			b.WriteRune(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
