package classad

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadFixture reads one fixture, gunzipping .gz files.
func loadFixture(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return data
}

// fixtureAds parses every recorded and public -json, -jsonl and -long
// fixture (the recorded ones from HTCondor 24.0.23, the public ones from
// versions 8.2 to 25.x).
func fixtureAds(t *testing.T) map[string][]*Ad {
	paths, err := filepath.Glob("testdata/fixtures/*/*")
	if err != nil || len(paths) < 20 {
		t.Fatalf("fixtures: %v (%d files)", err, len(paths))
	}
	out := map[string][]*Ad{}
	for _, p := range paths {
		data := loadFixture(t, p)
		var ads []*Ad
		if strings.Contains(p, "json") {
			ads, err = ParseJSON(data)
		} else {
			ads, err = ParseLong(bytes.NewReader(data))
		}
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		out[p] = ads
	}
	return out
}

// TestFixturesParse parses every attribute of every fixture ad, checks that
// each Requirements/Start/WithinResourceLimits/Rank expression (and every
// other attribute) prints back to text that parses to the same text, and
// that the matchmaking expressions evaluate without panicking.
func TestFixturesParse(t *testing.T) {
	wanted := map[string]int{"requirements": 0, "start": 0, "withinresourcelimits": 0, "rank": 0}
	ads, attrs := 0, 0
	for path, list := range fixtureAds(t) {
		for i, ad := range list {
			ads++
			for _, name := range ad.Names() {
				attrs++
				e, _ := ad.Lookup(name)
				s := e.String()
				e2, err := Parse(s)
				if err != nil {
					t.Errorf("%s ad %d: %s: printed %q does not parse: %v", path, i, name, s, err)
					continue
				}
				if s2 := e2.String(); s2 != s {
					t.Errorf("%s ad %d: %s: %q prints back as %q", path, i, name, s, s2)
				}
				if n, ok := wanted[lowerASCII(name)]; ok {
					wanted[lowerASCII(name)] = n + 1
					ad.Eval(name) // must not panic, whatever it gives
				}
			}
		}
	}
	t.Logf("%d ads, %d attributes, matchmaking expressions: %v", ads, attrs, wanted)
	for name, n := range wanted {
		if n == 0 {
			t.Errorf("no %s expression found in the fixtures", name)
		}
	}
}

// TestFixturesJSONMatchesLong checks that condor_q -json and -long of the
// same queue give the same ads: -json writes =?= as "is" and wraps
// expressions in /Expr(...)/, and both must come out the same.
func TestFixturesJSONMatchesLong(t *testing.T) {
	for _, pair := range [][2]string{
		{"10_condor_q-json_all-states.txt", "10_condor_q-long_all-states.txt"},
		{"20_condor_status-json_partitionable+4dynamic.txt", "20_condor_status-long_partitionable+4dynamic.txt"},
		{"01_condor_status-json_idle-partitionable-slot.txt", "01_condor_status-long_idle-partitionable-slot.txt"},
	} {
		js, err := ParseJSON(loadFixture(t, "testdata/fixtures/recorded/"+pair[0]))
		if err != nil {
			t.Fatal(err)
		}
		long, err := ParseLong(bytes.NewReader(loadFixture(t, "testdata/fixtures/recorded/"+pair[1])))
		if err != nil {
			t.Fatal(err)
		}
		if len(js) != len(long) || len(js) == 0 {
			t.Fatalf("%s: %d JSON ads, %d -long ads", pair[0], len(js), len(long))
		}
		same := 0
		for i := range js {
			for _, name := range []string{"Requirements", "Start", "WithinResourceLimits", "Rank", "RequestMemory", "RequestDisk", "RequestCpus", "Cpus", "Memory", "TotalCpus", "ChildCpus", "ChildState", "TransferInputStats", "JobCurrentReconnectAttempt"} {
				a, okA := js[i].Lookup(name)
				b, okB := long[i].Lookup(name)
				if okA != okB {
					t.Errorf("%s ad %d: %s present in JSON %v, in -long %v", pair[0], i, name, okA, okB)
					continue
				}
				if okA && a.String() != b.String() {
					t.Errorf("%s ad %d: %s: JSON %q, -long %q", pair[0], i, name, a, b)
				}
				if okA {
					same++
				}
			}
		}
		if same == 0 {
			t.Errorf("%s: no attribute compared", pair[0])
		}
	}
}
