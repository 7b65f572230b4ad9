package agent

import (
	"maps"
	"sync"
	"time"
)

// throttle rate-limits a repeated warning. The first event of each key in
// an interval is logged in full (a single misbehaving VM stays easy to
// diagnose); later ones in the same interval are only counted, and one
// summary line per interval gives the counts by key. A flood of refused
// check-ins thus writes a handful of lines, not thousands.
type throttle struct {
	every   time.Duration
	now     func() time.Time
	summary func(suppressed map[string]int, window time.Duration)

	mu         sync.Mutex
	start      time.Time
	seen       map[string]int
	suppressed map[string]int
}

func newThrottle(every time.Duration, now func() time.Time, summary func(map[string]int, time.Duration)) *throttle {
	return &throttle{every: every, now: now, summary: summary, seen: map[string]int{}, suppressed: map[string]int{}}
}

// allow counts one event of key and reports whether to log it in full.
func (t *throttle) allow(key string) bool {
	now := t.now()
	t.mu.Lock()
	if t.start.IsZero() {
		t.start = now
	}
	var out map[string]int
	var window time.Duration
	if now.Sub(t.start) >= t.every {
		out, window = t.rollLocked(now)
	}
	t.seen[key]++
	first := t.seen[key] == 1
	if !first {
		t.suppressed[key]++
	}
	t.mu.Unlock()
	if len(out) > 0 {
		t.summary(out, window)
	}
	return first
}

// flush ends the current interval if it is over, writing its summary.
func (t *throttle) flush() {
	now := t.now()
	t.mu.Lock()
	if t.start.IsZero() || now.Sub(t.start) < t.every {
		t.mu.Unlock()
		return
	}
	out, window := t.rollLocked(now)
	t.mu.Unlock()
	if len(out) > 0 {
		t.summary(out, window)
	}
}

// rollLocked starts a new interval and returns the last one's suppressed
// counts.
func (t *throttle) rollLocked(now time.Time) (map[string]int, time.Duration) {
	var out map[string]int
	if len(t.suppressed) > 0 {
		out = maps.Clone(t.suppressed)
	}
	window := now.Sub(t.start)
	clear(t.seen)
	clear(t.suppressed)
	t.start = now
	return out, window
}
