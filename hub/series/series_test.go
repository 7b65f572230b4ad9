package series

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func TestAddAndPoints(t *testing.T) {
	type sample struct {
		after time.Duration
		v     float64
	}
	tests := []struct {
		name    string
		kind    Kind
		samples []sample
		tier    string
		want    []Point
	}{
		{"gauge averages within a slot", Gauge, []sample{{0, 2}, {3 * time.Second, 4}, {10 * time.Second, 7}}, "hour",
			[]Point{{t0, 3}, {t0.Add(10 * time.Second), 7}}},
		{"counter sums within a slot", Counter, []sample{{0, 2}, {3 * time.Second, 4}, {10 * time.Second, 7}}, "hour",
			[]Point{{t0, 6}, {t0.Add(10 * time.Second), 7}}},
		{"day tier folds five minutes", Gauge, []sample{{0, 1}, {time.Minute, 3}, {5 * time.Minute, 10}}, "day",
			[]Point{{t0, 2}, {t0.Add(5 * time.Minute), 10}}},
		{"gap leaves no points", Gauge, []sample{{0, 1}, {time.Minute, 5}}, "hour",
			[]Point{{t0, 1}, {t0.Add(time.Minute), 5}}},
		{"older than the hour ring is gone", Gauge, []sample{{0, 1}, {2 * time.Hour, 5}}, "hour",
			[]Point{{t0.Add(2 * time.Hour), 5}}},
		{"but kept in the day ring", Gauge, []sample{{0, 1}, {2 * time.Hour, 5}}, "day",
			[]Point{{t0, 1}, {t0.Add(2 * time.Hour), 5}}},
		{"a late sample in range lands in its slot", Gauge, []sample{{30 * time.Second, 1}, {0, 5}}, "hour",
			[]Point{{t0, 5}, {t0.Add(30 * time.Second), 1}}},
		{"a sample older than the ring is dropped", Gauge, []sample{{2 * time.Hour, 1}, {0, 5}}, "hour",
			[]Point{{t0.Add(2 * time.Hour), 1}}},
		{"month keeps 30 days", Gauge, []sample{{0, 1}, {29 * 24 * time.Hour, 2}, {31 * 24 * time.Hour, 3}}, "month",
			[]Point{{t0.Add(29 * 24 * time.Hour), 2}, {t0.Add(31 * 24 * time.Hour), 3}}},
		{"NaN ignored", Gauge, []sample{{0, 1}}, "hour", []Point{{t0, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			for _, sm := range tc.samples {
				s.Add(t0.Add(sm.after), "x", tc.kind, sm.v)
			}
			s.Add(t0, "x", tc.kind, nan())
			ti, ok := TierByName(tc.tier)
			if !ok {
				t.Fatalf("no tier %q", tc.tier)
			}
			got := s.Points("x", ti)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("points %v, want %v", got, tc.want)
			}
		})
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestBounds(t *testing.T) {
	s := New()
	for i := range MaxSeries + 10 {
		s.Add(t0, fmt.Sprintf("s%d", i), Gauge, 1)
	}
	s.Add(t0, strings.Repeat("x", MaxNameLen+1), Gauge, 1)
	if n := len(s.Names()); n != MaxSeries {
		t.Fatalf("%d series kept, want %d", n, MaxSeries)
	}
	if d := s.Dropped(); d != 11 {
		t.Fatalf("dropped %d, want 11", d)
	}
}

func TestCSV(t *testing.T) {
	s := New()
	s.Add(t0, "vms.idle", Gauge, 3)
	s.Add(t0.Add(10*time.Second), "vms.idle", Gauge, 4)
	s.Add(t0.Add(10*time.Second), "vms.busy", Gauge, 1.5)
	var b bytes.Buffer
	if err := s.WriteCSV(&b, []string{"vms.busy", "vms.idle"}, 0); err != nil {
		t.Fatal(err)
	}
	want := "time,vms.busy,vms.idle\n2026-12-01T00:00:00Z,,3\n2026-12-01T00:00:10Z,1.5,4\n"
	if b.String() != want {
		t.Fatalf("csv\n%s\nwant\n%s", b.String(), want)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	s := New()
	for i := range 500 {
		at := t0.Add(time.Duration(i) * 17 * time.Second)
		s.Add(at, "vms.idle", Gauge, float64(i))
		s.Add(at, "boots", Counter, float64(i%3))
	}
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for ti := range Tiers {
		for _, n := range []string{"vms.idle", "boots"} {
			if a, b := fmt.Sprint(s.Points(n, ti)), fmt.Sprint(d.Points(n, ti)); a != b {
				t.Fatalf("%s tier %d differs after decode", n, ti)
			}
		}
	}
	// The decoded set goes on where the first left off.
	d.Add(t0.Add(500*17*time.Second), "vms.idle", Gauge, 42)
	pts := d.Points("vms.idle", 0)
	if last := pts[len(pts)-1]; last.V != 42 {
		t.Fatalf("after decode, last point %v", last)
	}
}

func TestDecodeRefuses(t *testing.T) {
	s := New()
	s.Add(t0, "a", Gauge, 1)
	good, _ := s.MarshalBinary()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "bad magic"},
		{"wrong magic", []byte("XXXX\x01\x00"), "bad magic"},
		{"wrong version", []byte("CSER\x09\x00"), "version 9"},
		{"too many", append([]byte("CSER\x01"), 0xff, 0xff, 0x03), "count"},
		{"truncated", good[:len(good)-3], "EOF"},
		{"trailing", append(append([]byte{}, good...), 0), "after the last"},
		{"bad kind", func() []byte { b := append([]byte{}, good...); b[8] = 9; return b }(), "kind 9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	s := New()
	s.Add(t0, "a", Gauge, 1)
	good, _ := s.MarshalBinary()
	f.Add(good)
	f.Add([]byte("CSER\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Decode(data)
		if err != nil {
			return
		}
		b, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(b); err != nil {
			t.Fatalf("re-encoded set does not decode: %v", err)
		}
	})
}

// BenchmarkMonthMemory fills 30 days of 10 s samples into the series a hub
// of 100 sites and 10 groups keeps (8 VM states, 100 sites' cores, 10
// groups × idle and running, boots and failures: 130 series) and reports
// the heap they hold and their encoded size.
func BenchmarkMonthMemory(b *testing.B) {
	names := []string{"boots", "failures"}
	for _, st := range []string{"booting", "starting", "unregistered", "idle", "busy", "retiring", "error", "unknown"} {
		names = append(names, "vms."+st)
	}
	for i := range 100 {
		names = append(names, fmt.Sprintf("cores.c%03d", i))
	}
	for i := range 10 {
		names = append(names, fmt.Sprintf("jobs.idle.g%d", i), fmt.Sprintf("jobs.running.g%d", i))
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := New()
		// One sample a minute for 30 days fills every slot of the month and
		// day rings and the hour ring (the rings' size does not depend on
		// the sample rate).
		for m := range 30 * 24 * 60 {
			at := t0.Add(time.Duration(m) * time.Minute)
			for _, n := range names {
				s.Add(at, n, Gauge, float64(m))
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		enc, _ := s.MarshalBinary()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "heap-MB")
		b.ReportMetric(float64(len(enc))/1e6, "encoded-MB")
		b.ReportMetric(float64(len(names)), "series")
		runtime.KeepAlive(s)
	}
}
