// Package seams checks the seams between Canopy's three binaries: no
// package under hub/ imports anything under agent/ or vmagent/, none under
// agent/ imports hub/ or vmagent/, and none under vmagent/ imports hub/ or
// agent/, in production code or in tests, with or without the integration
// build tag. What two binaries share lives under protocol/ (or in a driver
// package), declared once; helpers that are nobody's live under internal/.
// The package holds only this test.
package seams

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// binaries are the top-level directories of the three binaries' code.
var binaries = []string{"hub", "agent", "vmagent"}

// pkg is what go list tells of one package.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// binaryOf returns the binary whose tree holds path (relative to the
// module), or "" for a package of none.
func binaryOf(mod, path string) string {
	rel, ok := strings.CutPrefix(path, mod+"/")
	if !ok {
		return ""
	}
	top, _, _ := strings.Cut(rel, "/")
	if slices.Contains(binaries, top) {
		return top
	}
	return ""
}

// offenses lists every import from one binary's tree into another's, one
// line each, naming the importing package, the imported one and whether a
// production file or a test file imports it.
func offenses(mod string, pkgs []pkg) []string {
	var out []string
	for _, p := range pkgs {
		from := binaryOf(mod, p.ImportPath)
		if from == "" {
			continue
		}
		for _, imps := range []struct {
			kind string
			list []string
		}{{"imports", p.Imports}, {"test imports", p.TestImports}, {"external test imports", p.XTestImports}} {
			for _, imp := range imps.list {
				if to := binaryOf(mod, imp); to != "" && to != from {
					out = append(out, fmt.Sprintf("%s %s %s (%s code must not use %s code)",
						strings.TrimPrefix(p.ImportPath, mod+"/"), imps.kind, strings.TrimPrefix(imp, mod+"/"), from, to))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// goList runs go list at the module root with the integration tag (so
// integration tests count) and returns the module path and its packages.
func goList(t *testing.T) (string, []pkg) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the module's packages: %v", err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(goBin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	root := strings.TrimSpace(string(run("list", "-m", "-f", "{{.Dir}}")))
	mod := strings.TrimSpace(string(run("list", "-m")))
	if root == "" || mod == "" {
		t.Fatal("go list -m named no module")
	}
	out := run("list", "-C", root, "-tags", "integration", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("read go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return mod, pkgs
}

// TestSeams fails naming each import that crosses from one binary's tree
// into another's.
func TestSeams(t *testing.T) {
	mod, pkgs := goList(t)
	seen := map[string]bool{}
	for _, p := range pkgs {
		if b := binaryOf(mod, p.ImportPath); b != "" {
			seen[b] = true
		}
	}
	for _, b := range binaries {
		if !seen[b] {
			t.Errorf("no package found under %s/: is the test running in the right module?", b)
		}
	}
	for _, o := range offenses(mod, pkgs) {
		t.Error(o)
	}
}

// TestOffenses checks that offenses finds what it must, in production and
// test imports, and nothing else.
func TestOffenses(t *testing.T) {
	const m = "example.org/canopy"
	pkgs := []pkg{
		{ImportPath: m + "/hub", Imports: []string{m + "/protocol", m + "/hub/store", "fmt"}},
		{ImportPath: m + "/hub/squid", XTestImports: []string{m + "/agent/squidcache"}},
		{ImportPath: m + "/agent", Imports: []string{m + "/vmagent", m + "/agent/driver"}},
		{ImportPath: m + "/agent/localcloud", TestImports: []string{m + "/hub"}},
		{ImportPath: m + "/vmagent", Imports: []string{m + "/protocol/gossip", m + "/internal/cmdrun"}},
		{ImportPath: m + "/vmagentx", Imports: []string{m + "/hub"}},    // not the vmagent tree
		{ImportPath: m + "/deploy/demo", Imports: []string{m + "/hub"}}, // no binary's tree
		{ImportPath: m + "/protocol/vmproto", Imports: []string{m + "/protocol/userdata"}},
	}
	got := offenses(m, pkgs)
	want := []string{
		"agent imports vmagent (agent code must not use vmagent code)",
		"agent/localcloud test imports hub (agent code must not use hub code)",
		"hub/squid external test imports agent/squidcache (hub code must not use agent code)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("offenses:\n got %q\nwant %q", got, want)
	}
}
