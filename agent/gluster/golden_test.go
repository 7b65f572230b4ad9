package gluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/gluster/glusterfake"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// fixtureCase is one line of a fixture MANIFEST.tsv.
type fixtureCase struct {
	dir, file, parser string
	exit              int
}

// fixtureDirs hold the real captures and the ones derived from them.
var fixtureDirs = []string{"testdata/fixtures", "testdata/derived"}

func loadManifest(t *testing.T, dir string) []fixtureCase {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []fixtureCase
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Split(line, "\t")
		if len(fs) < 4 {
			t.Fatalf("%s/MANIFEST.tsv: bad line %q", dir, line)
		}
		code, err := strconv.Atoi(fs[2])
		if err != nil {
			t.Fatalf("%s/MANIFEST.tsv: bad exit code in %q", dir, line)
		}
		cases = append(cases, fixtureCase{dir: dir, file: fs[0], parser: fs[1], exit: code})
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// parseAs runs the named parser on a fixture.
func parseAs(parser string, b []byte) (any, error) {
	switch parser {
	case "volinfo":
		return ParseVolumeInfo(b)
	case "vollist":
		return ParseVolumeList(b)
	case "volstatus":
		return ParseVolumeStatus(b)
	case "heal":
		return ParseHeal(b)
	case "peers":
		return ParsePeerStatus(b)
	case "georep":
		return ParseGeoRepStatus(b, time.UTC)
	case "georepconfig":
		return ParseGeoRepConfig(b)
	case "check":
		return nil, CheckOutput(b)
	}
	return nil, errors.New("unknown parser " + parser)
}

// errorKind names the class of a parser error, for the golden files.
func errorKind(err error) string {
	var nx *NotXMLError
	var oe *OpError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrGlusterdDown):
		return "glusterd_down"
	case errors.As(err, &nx):
		return "not_xml"
	case errors.As(err, &oe):
		return "op_error"
	}
	return "malformed"
}

type parseGolden struct {
	Fixture   string `json:"fixture"`
	Parser    string `json:"parser"`
	ExitCode  int    `json:"exit_code"`
	ErrorKind string `json:"error_kind,omitempty"`
	Error     string `json:"error,omitempty"`
	Result    any    `json:"result,omitempty"`
}

// checkGolden compares got (marshalled as indented JSON) with the golden
// file, or rewrites it under -update.
func checkGolden(t *testing.T, path string, got any) {
	t.Helper()
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(want, b) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got\n%s", path, b)
	}
}

// TestFixtureGolden parses every captured output with the parser for its
// command and compares the result (or error) with a golden file.
func TestFixtureGolden(t *testing.T) {
	for _, dir := range fixtureDirs {
		for _, c := range loadManifest(t, dir) {
			t.Run(c.file, func(t *testing.T) {
				b, err := os.ReadFile(filepath.Join(c.dir, c.file))
				if err != nil {
					t.Fatal(err)
				}
				res, err := parseAs(c.parser, b)
				g := parseGolden{Fixture: c.file, Parser: c.parser, ExitCode: c.exit, ErrorKind: errorKind(err)}
				if err != nil {
					g.Error = err.Error()
				} else {
					g.Result = res
				}
				checkGolden(t, filepath.Join("testdata/golden/fixtures", c.file+".json"), g)
			})
		}
	}
}

// TestEveryFixtureCovered fails when a fixture file is missing from its
// manifest, a manifest line names no file, or a golden file is stale.
func TestEveryFixtureCovered(t *testing.T) {
	listed := map[string]bool{}
	for _, dir := range fixtureDirs {
		inManifest := map[string]bool{}
		for _, c := range loadManifest(t, dir) {
			inManifest[c.file] = true
			listed[c.file+".json"] = true
			if _, err := os.Stat(filepath.Join(dir, c.file)); err != nil {
				t.Errorf("%s/MANIFEST.tsv lists %s: %v", dir, c.file, err)
			}
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			n := e.Name()
			if n == "MANIFEST.tsv" || n == "NOTES.md" {
				continue
			}
			if !inManifest[n] {
				t.Errorf("%s/%s is not in the manifest, so no golden test covers it", dir, n)
			}
		}
	}
	if *update {
		return
	}
	ents, err := os.ReadDir("testdata/golden/fixtures")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !listed[e.Name()] {
			t.Errorf("stale golden file testdata/golden/fixtures/%s", e.Name())
		}
	}
	if len(listed) < 70 {
		t.Errorf("only %d fixtures listed; the captures hold more than 70", len(listed))
	}
}

// TestScenarioGolden runs the collector over recorded cycles (one scenario
// file per state of the test bed) and compares the reports with golden
// files.
func TestScenarioGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/scenarios/*.tsv")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".tsv")
		t.Run(name, func(t *testing.T) {
			fake, sc, err := glusterfake.LoadScenario(path, "testdata/fixtures")
			if err != nil {
				t.Fatal(err)
			}
			c := New(fake, Config{
				Location: time.UTC,
				Now:      func() time.Time { return sc.TakenAt },
				Log:      quietLog(),
			})
			r, err := c.Collect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata/golden/scenarios", name+".json"), r)

			// The cycle asks each recorded command exactly once: a scenario
			// lists nothing the collector does not need.
			calls := fake.Calls()
			sort.Strings(calls)
			for i := 1; i < len(calls); i++ {
				if calls[i] == calls[i-1] {
					t.Errorf("command asked twice: %s", calls[i])
				}
			}
			asked := map[string]bool{}
			for _, c := range calls {
				asked[c] = true
			}
			for _, key := range scenarioCommands(t, path) {
				if !asked[key] {
					t.Errorf("scenario records %q but the collector did not ask it", key)
				}
			}
		})
	}
}

func scenarioCommands(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Split(l, "\t")
		if len(fs) == 3 && !strings.HasPrefix(l, "#") {
			keys = append(keys, fs[2])
		}
	}
	return keys
}

// TestOldGeoRepNames checks that the master_*/slave_* spelling of gluster
// releases before 10 parses to the same workers as the primary/secondary
// spelling it was derived from.
func TestOldGeoRepNames(t *testing.T) {
	for _, c := range loadManifest(t, "testdata/derived") {
		t.Run(c.file, func(t *testing.T) {
			src := derivedFrom(t, c.file)
			oldB, err := os.ReadFile(filepath.Join("testdata/derived", c.file))
			if err != nil {
				t.Fatal(err)
			}
			newB, err := os.ReadFile(filepath.Join("testdata/fixtures", src))
			if err != nil {
				t.Fatal(err)
			}
			oldP, err := ParseGeoRepStatus(oldB, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			newP, err := ParseGeoRepStatus(newB, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			if len(newP) == 0 || !reflect.DeepEqual(oldP, newP) {
				t.Errorf("old spelling parses differently:\nold %+v\nnew %+v", oldP, newP)
			}
		})
	}
}

func derivedFrom(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/derived/MANIFEST.tsv")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Split(l, "\t")
		if len(fs) == 5 && fs[0] == file {
			return fs[4]
		}
	}
	t.Fatalf("no source for %s", file)
	return ""
}

// quietLog discards the collector's warnings in tests.
func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(nopWriter{})
	return l
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
