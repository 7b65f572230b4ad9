package ledger

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

var day1 = time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC)

func filled() *Ledger {
	l := New()
	l.Add(day1, "atlas", "west", Usage{VMSeconds: 3600, CoreSeconds: 7200, HS06Seconds: 72000, JobsStarted: 3})
	l.Add(day1, "atlas", "east", Usage{VMSeconds: 1800, CoreSeconds: 1800, JobsStarted: 1})
	l.Add(day1.Add(2*time.Hour), "atlas", "west", Usage{VMSeconds: 3600, CoreSeconds: 7200, JobsStarted: 2})
	l.Add(day1.Add(2*time.Hour), "belle", "west", Usage{VMSeconds: 7200, CoreSeconds: 14400})
	return l
}

func TestQuery(t *testing.T) {
	tests := []struct {
		name     string
		from, to string
		by       []string
		want     string
		wantErr  string
	}{
		{"total", "", "", nil, "[{   {16200 30600 72000 6}}]", ""},
		{"by group", "", "", []string{"group"}, "[{ atlas  {9000 16200 72000 6}} { belle  {7200 14400 0 0}}]", ""},
		{"by group and cloud", "", "", []string{"group", "cloud"},
			"[{ atlas east {1800 1800 0 1}} { atlas west {7200 14400 72000 5}} { belle west {7200 14400 0 0}}]", ""},
		{"by day", "", "", []string{"day"}, "[{2026-12-01   {5400 9000 72000 4}} {2026-12-02   {10800 21600 0 2}}]", ""},
		{"from", "2026-12-02", "", []string{"site"}, "[{  west {10800 21600 0 2}}]", ""},
		{"to", "", "2026-12-01", nil, "[{   {5400 9000 72000 4}}]", ""},
		{"bad key", "", "", []string{"flavor"}, "", "want day, group or site"},
		{"bad date", "12/01/2026", "", nil, "", "want YYYY-MM-DD"},
	}
	l := filled()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := l.Query(tc.from, tc.to, tc.by)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(rows); got != tc.want {
				t.Fatalf("rows %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCSVAndRoundTrip(t *testing.T) {
	l := filled()
	b, err := l.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := d.Query("", "", []string{"group"})
	var out bytes.Buffer
	if err := WriteCSV(&out, rows); err != nil {
		t.Fatal(err)
	}
	want := "day,group,site,vm_hours,core_hours,hs06_hours,jobs_started\n,atlas,,2.500,4.500,20.000,6\n,belle,,2.000,4.000,0.000,0\n"
	if out.String() != want {
		t.Fatalf("csv\n%s\nwant\n%s", out.String(), want)
	}
	d.Prune(day1.AddDate(0, 0, MaxDays+1))
	if rows, _ := d.Query("", "", []string{"day"}); len(rows) != 1 || rows[0].Day != "2026-12-02" {
		t.Fatalf("after prune %v", rows)
	}
}

func TestDecodeRefuses(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"not JSON", "{", "ledger"},
		{"bad day", `[{"day":"yesterday","group":"a","site":"b"}]`, "want YYYY-MM-DD"},
		{"negative", `[{"day":"2026-12-01","group":"a","site":"b","vm_seconds":-1}]`, "out of range"},
		{"twice", `[{"day":"2026-12-01","group":"a","site":"b"},{"day":"2026-12-01","group":"a","site":"b"}]`, "twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := filled().MarshalJSON()
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		l, err := Decode(in)
		if err != nil {
			return
		}
		out, err := l.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(out); err != nil {
			t.Fatalf("re-encoded ledger does not decode: %v", err)
		}
	})
}
