// Package ledger is the hub's accounting: per group × site × day (UTC), the
// VM-hours, core-hours and HS06-hours Canopy's VMs used and the jobs they
// started. The hub adds to it from its own published status at every
// sample (what ran, for how long since the last sample); it is kept in the
// hub's store and answered as JSON or CSV, summed over any of the keys.
package ledger

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Key is one ledger line's identity.
type Key struct {
	Day   string `json:"day"` // YYYY-MM-DD, UTC
	Group string `json:"group"`
	Site  string `json:"site"`
}

// Usage is what one line adds up.
type Usage struct {
	VMSeconds   float64 `json:"vm_seconds"`
	CoreSeconds float64 `json:"core_seconds"`
	// HS06Seconds counts cores × their flavor's HS06 rating per core ×
	// seconds, for flavors that have a rating; zero for those that do not.
	HS06Seconds float64 `json:"hs06_seconds"`
	JobsStarted int64   `json:"jobs_started"`
}

func (u *Usage) add(o Usage) {
	u.VMSeconds += o.VMSeconds
	u.CoreSeconds += o.CoreSeconds
	u.HS06Seconds += o.HS06Seconds
	u.JobsStarted += o.JobsStarted
}

// MaxDays is how many days the ledger keeps (older days are dropped).
const MaxDays = 400

// MaxLines bounds the lines kept (days × groups × sites); adds to a new
// line beyond it are dropped and counted.
const MaxLines = 1 << 20

// Ledger is safe for concurrent use.
type Ledger struct {
	mu      sync.Mutex
	lines   map[Key]*Usage
	dropped uint64
}

// New returns an empty ledger.
func New() *Ledger { return &Ledger{lines: map[Key]*Usage{}} }

// Day is the ledger day of a time.
func Day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Add adds usage to the line of a group and site on the day of at.
func (l *Ledger) Add(at time.Time, group, site string, u Usage) {
	k := Key{Day: Day(at), Group: group, Site: site}
	l.mu.Lock()
	defer l.mu.Unlock()
	line := l.lines[k]
	if line == nil {
		if len(l.lines) >= MaxLines {
			l.dropped++
			return
		}
		line = &Usage{}
		l.lines[k] = line
	}
	line.add(u)
}

// Prune drops days older than MaxDays before now.
func (l *Ledger) Prune(now time.Time) {
	oldest := Day(now.AddDate(0, 0, -MaxDays))
	l.mu.Lock()
	defer l.mu.Unlock()
	maps.DeleteFunc(l.lines, func(k Key, _ *Usage) bool { return k.Day < oldest })
}

// Row is one answer line: the key fields not summed over are set.
type Row struct {
	Day   string `json:"day,omitempty"`
	Group string `json:"group,omitempty"`
	Site  string `json:"site,omitempty"`
	Usage
}

// Query sums the lines of days from..to (inclusive, YYYY-MM-DD; empty for
// open) by the keys named in by (any of day, group, site; empty: one
// total), sorted.
func (l *Ledger) Query(from, to string, by []string) ([]Row, error) {
	var byDay, byGroup, bySite bool
	for _, b := range by {
		switch b {
		case "day":
			byDay = true
		case "group":
			byGroup = true
		case "site", "cloud":
			bySite = true
		default:
			return nil, fmt.Errorf("by %q: want day, group or site", b)
		}
	}
	for _, d := range []string{from, to} {
		if d == "" {
			continue
		}
		if _, err := time.Parse(time.DateOnly, d); err != nil {
			return nil, fmt.Errorf("date %q: want YYYY-MM-DD", d)
		}
	}
	l.mu.Lock()
	sums := map[Key]*Usage{}
	for k, u := range l.lines {
		if (from != "" && k.Day < from) || (to != "" && k.Day > to) {
			continue
		}
		var s Key
		if byDay {
			s.Day = k.Day
		}
		if byGroup {
			s.Group = k.Group
		}
		if bySite {
			s.Site = k.Site
		}
		if sums[s] == nil {
			sums[s] = &Usage{}
		}
		sums[s].add(*u)
	}
	l.mu.Unlock()
	rows := make([]Row, 0, len(sums))
	for k, u := range sums {
		rows = append(rows, Row{Day: k.Day, Group: k.Group, Site: k.Site, Usage: *u})
	}
	slices.SortFunc(rows, func(a, b Row) int {
		return strings.Compare(a.Day+"\x00"+a.Group+"\x00"+a.Site, b.Day+"\x00"+b.Group+"\x00"+b.Site)
	})
	return rows, nil
}

// WriteCSV writes rows as CSV with hours (VM, core, HS06) and jobs.
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"day", "group", "site", "vm_hours", "core_hours", "hs06_hours", "jobs_started"})
	for _, r := range rows {
		h := func(s float64) string { return strconv.FormatFloat(s/3600, 'f', 3, 64) }
		_ = cw.Write([]string{r.Day, r.Group, r.Site, h(r.VMSeconds), h(r.CoreSeconds), h(r.HS06Seconds),
			strconv.FormatInt(r.JobsStarted, 10)})
	}
	cw.Flush()
	return cw.Error()
}

// line is the stored form of one ledger line.
type line struct {
	Key
	Usage
}

// MarshalJSON encodes the ledger for the hub's store.
func (l *Ledger) MarshalJSON() ([]byte, error) {
	l.mu.Lock()
	out := make([]line, 0, len(l.lines))
	for k, u := range l.lines {
		out = append(out, line{k, *u})
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b line) int {
		return strings.Compare(a.Day+"\x00"+a.Group+"\x00"+a.Site, b.Day+"\x00"+b.Group+"\x00"+b.Site)
	})
	return json.Marshal(out)
}

// Decode reads a ledger MarshalJSON wrote; a malformed line (bad day,
// negative or non-finite usage, a line twice, too many) is an error.
func Decode(b []byte) (*Ledger, error) {
	var in []line
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if len(in) > MaxLines {
		return nil, fmt.Errorf("ledger: %d lines, max %d", len(in), MaxLines)
	}
	l := New()
	for i, ln := range in {
		if _, err := time.Parse(time.DateOnly, ln.Day); err != nil {
			return nil, fmt.Errorf("ledger line %d: day %q: want YYYY-MM-DD", i, ln.Day)
		}
		u := ln.Usage
		if !(u.VMSeconds >= 0 && u.CoreSeconds >= 0 && u.HS06Seconds >= 0 && u.JobsStarted >= 0) ||
			u.VMSeconds > 1e15 || u.CoreSeconds > 1e15 || u.HS06Seconds > 1e18 {
			return nil, fmt.Errorf("ledger line %d (%s %s %s): usage out of range", i, ln.Day, ln.Group, ln.Site)
		}
		if _, dup := l.lines[ln.Key]; dup {
			return nil, errors.New("ledger: line " + ln.Day + " " + ln.Group + " " + ln.Site + " twice")
		}
		l.lines[ln.Key] = &u
	}
	return l, nil
}
