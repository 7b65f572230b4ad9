package htcondor

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/canopy-grid/canopy/hub/classad"
)

// readAll decodes every ad of data with the stream decoder and turns it
// into a ClassAd.
func readAll(t testing.TB, r io.Reader) ([]*classad.Ad, error) {
	t.Helper()
	st := newAdStream(r, 0)
	c := newExprCache(64)
	var ads []*classad.Ad
	for {
		attrs, err := st.next()
		if err == io.EOF {
			return ads, nil
		}
		if err != nil {
			return ads, err
		}
		ad, err := c.buildAd(attrs)
		if err != nil {
			return ads, err
		}
		ads = append(ads, ad)
	}
}

// attrMap is an ad as name (lower case) -> expression text.
func attrMap(ad *classad.Ad) map[string]string {
	m := map[string]string{}
	for _, n := range ad.Names() {
		e, _ := ad.Lookup(n)
		m[strings.ToLower(n)] = e.String()
	}
	return m
}

// TestParseFixtures reads every recorded and public JSON output with the
// stream decoder and checks it against golden facts read off the files and
// against an independent decoder (encoding/json + classad.ParseJSON).
func TestParseFixtures(t *testing.T) {
	type check struct {
		ad         int
		attr, want string // want is the ClassAd text of the value
	}
	tests := []struct {
		file   string
		ads    int
		checks []check
	}{
		{"recorded/00_condor_q-json_EMPTY-QUEUE.out", 0, nil},
		{"recorded/00_condor_status-json_NO-MATCH.out", 0, nil},
		{"recorded/00_condor_history-json_EMPTY.out", 0, nil},
		{"recorded/31_condor_history-json_NO-MATCH.out", 0, nil},
		{"recorded/01_condor_status-json_idle-partitionable-slot.out", 1, []check{
			{0, "SlotType", `"Partitionable"`}, {0, "Cpus", "4"}, {0, "TotalCpus", "4.0"}, {0, "ChildCpus", "{  }"},
			{0, "Start", `(TARGET.VMType =?= MY.VMType) || (TARGET.VMType =?= undefined)`}}},
		{"recorded/10_condor_q-json_all-states.out", 9, []check{
			{0, "JobStatus", "2"}, {0, "RequestMemory", "512"},
			{5, "RequestMemory", "ifthenelse(MemoryUsage =!= undefined,MemoryUsage,(ImageSize + 1023) / 1024)"},
			{5, "RequestDisk", "DiskUsage"}, {3, "VMType", `"ubuntu22"`},
			{3, "Requirements", `((TARGET.VMType =?= "ubuntu22") && (TARGET.Memory >= 2048)) && (TARGET.Arch == "X86_64") && (TARGET.OpSys == "LINUX") && (TARGET.Disk >= RequestDisk) && (TARGET.Memory >= RequestMemory) && (TARGET.Cpus >= RequestCpus) && (TARGET.FileSystemDomain == MY.FileSystemDomain)`},
			{4, "JobStatus", "5"}}},
		{"recorded/11_condor_q-json_idle-only.out", 4, []check{{0, "ClusterId", "2"}, {3, "ProcId", "1"}}},
		{"recorded/11_condor_q-json_projection.out", 4, []check{{1, "RequestCpus", "8"}, {1, "GlobalJobId", `"alice@vm#4.0#1795357361"`}}},
		{"recorded/20_condor_status-json_partitionable+4dynamic.out", 5, []check{
			{0, "NumDynamicSlots", "4"}, {4, "JobId", `"3.0"`}, {4, "Memory", "128"}, {0, "TotalSlotDisk", "77472532.0"}}},
		{"recorded/22_condor_status-json_partitionable-only.out", 1, nil},
		{"recorded/22_condor_status-json_projection.out", 5, []check{{0, "ChildState", `{ "Claimed", "Claimed", "Claimed", "Claimed" }`}}},
		{"recorded/23_condor_status-master-json.out", 1, []check{{0, "MyType", `"DaemonMaster"`}, {0, "Name", `"alice@vm"`}}},
		{"recorded/23_condor_status-schedd-json.out", 1, []check{{0, "MyType", `"Scheduler"`}}},
		{"recorded/23_condor_status-startd-json.out", 1, []check{{0, "MyType", `"StartD"`}, {0, "VMType", `"centos7"`}}},
		{"recorded/30_condor_history-json_completed+removed.out", 4, nil},
		{"recorded/31_condor_history-json_limit1_projection.out", 1, nil},
		{"recorded/31_condor_history-jsonl.out", 4, nil},
		{"recorded/32_condor_q-json_after_rm.out", 5, []check{{3, "HoldReason", `"held for sample recording (by user alice)"`}}},
		{"recorded/32_condor_status-json_after_rm.out", 3, []check{{1, "JobId", `"1.0"`}}},
		{"recorded/40_condor_status-json_two-startds.out", 5, []check{
			{1, "Name", `"slot1@worker1@vm"`}, {1, "AuthenticationMethod", `"IDTOKENS"`}, {1, "Memory", "0"}}},
		{"recorded/41_condor_status-json_worker1-draining.out", 2, []check{
			{0, "State", `"Drained"`}, {0, "Activity", `"Retiring"`}, {0, "Draining", "true"}, {1, "Activity", `"Retiring"`}}},
		{"recorded/51_condor_status-json_worker1_gone.out", 0, nil},
		{"recorded/57_condor_status-json_vm-draining.out", 3, []check{{0, "DrainReason", `"provisioner: scale down"`}}},
		{"recorded/70_condor_q-allusers-json-projection.out", 4, []check{{2, "JobStatus", "5"}}},
		{"recorded/70_condor_q-totals-json.out", 1, []check{{0, "MyType", `"Summary"`}, {0, "AllusersIdle", "1"}}},
		{"public/condor_q-json_8.8.10_jlab_clas12_one_running_job.json", 1, []check{{0, "JobStatus", "2"}}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			// One byte per read exercises every buffer boundary.
			for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data))} {
				ads, err := readAll(t, r)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if len(ads) != tt.ads {
					t.Fatalf("got %d ads, want %d", len(ads), tt.ads)
				}
				for _, c := range tt.checks {
					e, ok := ads[c.ad].Lookup(c.attr)
					if !ok {
						t.Errorf("ad %d has no %s", c.ad, c.attr)
						continue
					}
					if e.String() != c.want {
						t.Errorf("ad %d %s = %s, want %s", c.ad, c.attr, e, c.want)
					}
				}
				ref, err := classad.ParseJSON(data)
				if err != nil {
					t.Fatalf("classad.ParseJSON: %v", err)
				}
				if len(ref) != len(ads) {
					t.Fatalf("classad.ParseJSON found %d ads, the stream %d", len(ref), len(ads))
				}
				for i := range ads {
					got, want := attrMap(ads[i]), attrMap(ref[i])
					if len(got) != len(want) {
						t.Errorf("ad %d: %d attributes, classad.ParseJSON %d", i, len(got), len(want))
					}
					for k, v := range want {
						if got[k] != v {
							t.Errorf("ad %d %s: stream %q, classad.ParseJSON %q", i, k, got[k], v)
						}
					}
				}
			}
		})
	}
}

// TestStreamErrors checks that bad output is refused with a clear error,
// never half-read as if it were complete.
func TestStreamErrors(t *testing.T) {
	full, err := os.ReadFile("testdata/recorded/11_condor_q-json_projection.out")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in  string
		truncated bool
		msg       string
	}{
		{"cut in an ad", string(full[:len(full)/2]), true, "output ends early"},
		{"cut before the bracket", strings.TrimSuffix(string(full), "]\n"), true, "output ends early"},
		{"cut after a comma", "[\n{\"A\": 1}\n,\n", true, "output ends early"},
		{"only a bracket", "[", true, "output ends early"},
		{"garbage", "-- Failed to fetch ads from: <127.0.0.1:9618> : vm\n", false, "expected '[' or '{'"},
		{"html", "<html>", false, "expected '[' or '{'"},
		{"trailing data", "[{\"A\": 1}]\nextra", false, "after the closing ']'"},
		{"two arrays", "[{\"A\": 1}][]", false, "after the closing ']'"},
		{"not an object", "[1]", false, "expected an ad"},
		{"bad literal", `[{"A": tru}]`, false, "invalid literal"},
		{"bad number", `[{"A": 01}]`, false, "expected ',' or '}'"},
		{"bad fraction", `[{"A": 1.}]`, false, "no digit after '.'"},
		{"bad escape", `[{"A": "\q"}]`, false, "invalid escape"},
		{"control character", "[{\"A\": \"a\x01\"}]", false, "control character"},
		{"missing colon", `[{"A" 1}]`, false, "expected ':'"},
		{"empty name", `[{"": 1}]`, false, "empty attribute name"},
		{"name not UTF-8", "[{\"\xdf\": 0}]", false, `attribute name "\xdf" is not valid UTF-8`},
		{"escaped name not UTF-8", "[{\"a\\n\xff\": 0}]", false, "is not valid UTF-8"},
		{"deep nesting", `[{"A": ` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}]`, false, "nested deeper"},
		{"bad expression", `[{"A": "\/Expr(1 +)\/"}]`, false, "expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readAll(t, strings.NewReader(tt.in))
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			if got := errors.Is(err, ErrTruncated); got != tt.truncated {
				t.Errorf("errors.Is(err, ErrTruncated) = %v, want %v (%v)", got, tt.truncated, err)
			}
		})
	}
}

// TestStreamAdTooLarge checks the per-ad bound.
func TestStreamAdTooLarge(t *testing.T) {
	big := `[{"A": "` + strings.Repeat("x", 200<<10) + `"}]`
	st := newAdStream(strings.NewReader(big), 64<<10)
	_, err := st.next()
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v, want an ad-too-large error", err)
	}
}

// TestStreamReadError checks that a failing reader is reported, not taken
// for the end of the output.
func TestStreamReadError(t *testing.T) {
	boom := errors.New("pipe broke")
	r := io.MultiReader(strings.NewReader(`[{"A": 1},`), iotest.ErrReader(boom))
	_, err := readAll(t, r)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the read error", err)
	}
}

// TestUnescape checks string unescaping against encoding/json.
func TestUnescape(t *testing.T) {
	for _, in := range []string{`"plain"`, `"a\"b\\c\/d"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00"`, `"\ud83d x"`, `"\b\f\n\r\t"`} {
		var want string
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatal(err)
		}
		got, err := unescapeJSON(nil, []byte(in))
		if err != nil || string(got) != want {
			t.Errorf("unescapeJSON(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}
