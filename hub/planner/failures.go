package planner

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// imageBackoff is a backoff of one image on one cloud.
type imageBackoff struct {
	until  time.Time
	reason string
}

// failureAgg sums up the failures of one cloud or one image on a cloud.
type failureAgg struct {
	n      int
	last   time.Time
	reason string
}

func (a *failureAgg) add(f *Failure) {
	a.n++
	if f.At.After(a.last) || (f.At.Equal(a.last) && f.Reason > a.reason) {
		a.last, a.reason = f.At, f.Reason
	}
}

// Backoff is how long boots stop after n failures in a row (n >= 1):
// Config.BackoffBase doubled for each failure after the first, at most
// Config.BackoffMax.
func (c Config) Backoff(n int) time.Duration {
	c = c.withDefaults()
	if n <= 0 {
		return 0
	}
	d := c.BackoffBase
	for i := 1; i < n && d < c.BackoffMax; i++ {
		d *= 2
	}
	return min(d, c.BackoffMax)
}

// cloudStates decides which clouds take boots: connected, enabled, not
// paused, not frozen and not backing off; and which images back off where.
func (p *planner) cloudStates(fails []Failure) {
	from := p.now.Add(-p.cfg.FailureWindow)
	bySite := make(map[string]*failureAgg)
	byImage := make(map[[2]string]*failureAgg)
	for i := range fails {
		f := &fails[i]
		if f.At.Before(from) {
			continue
		}
		var a *failureAgg
		if f.Image == "" {
			if a = bySite[f.Site]; a == nil {
				a = &failureAgg{}
				bySite[f.Site] = a
			}
		} else {
			k := [2]string{f.Site, f.Image}
			if a = byImage[k]; a == nil {
				a = &failureAgg{}
				byImage[k] = a
			}
		}
		a.add(f)
	}
	for k, a := range byImage {
		until := a.last.Add(p.cfg.Backoff(a.n))
		if until.After(p.now) {
			if p.imageOff == nil {
				p.imageOff = make(map[[2]string]imageBackoff)
			}
			p.imageOff[k] = imageBackoff{until: until, reason: fmt.Sprintf("image %s backing off on %s until %s after %d boot failures (last: %s)",
				k[1], k[0], p.clock(until), a.n, a.reason)}
		}
	}
	// An image the image matrix wants on a cloud but that is not there yet
	// (hub/imageplan) keeps its VM types off that cloud like a backoff.
	for ci := range p.clouds {
		c := &p.clouds[ci]
		for image, why := range c.ImagesNotReady {
			if p.imageOff == nil {
				p.imageOff = make(map[[2]string]imageBackoff)
			}
			p.imageOff[[2]string{c.Site, image}] = imageBackoff{reason: why}
		}
	}

	for ci := range p.clouds {
		c := &p.clouds[ci]
		cs := &p.cs[ci]
		cs.status = CloudOK
		switch {
		case !c.Connected:
			cs.status, cs.reason = CloudDisconnected, fmt.Sprintf("cloud %s: agent not connected", c.Site)
		case c.Disabled:
			cs.status, cs.reason = CloudDisabled, fmt.Sprintf("cloud %s disabled: draining", c.Site)
		case c.Paused:
			cs.status, cs.reason = CloudPaused, fmt.Sprintf("cloud %s paused: no new boots", c.Site)
		case c.Unlisted >= p.cfg.FreezeMinUnlisted && !c.UnlistedSince.IsZero() && p.now.Sub(c.UnlistedSince) >= p.cfg.FreezeAfter:
			cs.status, cs.reason = CloudFrozen, fmt.Sprintf("cloud %s frozen: %d booted servers not listed since %s",
				c.Site, c.Unlisted, p.clock(c.UnlistedSince))
		}
		if cs.status != CloudOK {
			continue
		}
		if a := bySite[c.Site]; a != nil {
			if until := a.last.Add(p.cfg.Backoff(a.n)); until.After(p.now) {
				cs.status, cs.until = CloudBackoff, until
				cs.reason = fmt.Sprintf("cloud %s backing off until %s after %d boot failures (last: %s)",
					c.Site, p.clock(until), a.n, a.reason)
			}
		}
	}
}

// ImageScoped reports whether a boot failure of this class is the image's
// (or the request's) fault rather than the cloud's: only that image then
// backs off on the cloud.
func ImageScoped(class protocol.ErrorClass) bool {
	return class == protocol.ErrClassInvalid
}

// FailureLog keeps the boot failures the planner derives backoff from: a
// failure stays until a good boot of its cloud (or of its image there)
// clears it, or it ages out. It holds no clock; callers pass times in. The
// zero value is an empty log. It is not safe for concurrent use.
type FailureLog struct {
	list []Failure
}

// Record adds a failure.
func (l *FailureLog) Record(f Failure) {
	l.list = append(l.list, f)
}

// Succeeded records a good boot of image on site at time at: the site's
// cloud-wide failures and that image's failures there up to at are cleared.
func (l *FailureLog) Succeeded(site, image string, at time.Time) {
	l.list = slices.DeleteFunc(l.list, func(f Failure) bool {
		return f.Site == site && (f.Image == "" || f.Image == image) && !f.At.After(at)
	})
}

// Prune drops failures older than before.
func (l *FailureLog) Prune(before time.Time) {
	l.list = slices.DeleteFunc(l.list, func(f Failure) bool { return f.At.Before(before) })
}

// Len is how many failures the log holds.
func (l *FailureLog) Len() int { return len(l.list) }

// Failures returns a copy of the log, oldest first, for Snapshot.Failures.
func (l *FailureLog) Failures() []Failure {
	out := slices.Clone(l.list)
	slices.SortStableFunc(out, func(a, b Failure) int {
		return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.Site, b.Site), cmp.Compare(a.Image, b.Image))
	})
	return out
}

// History is the state the planner needs carried from one plan to the
// next: boot failures, and since when each cloud and group has been over
// quota. The hub (and the simulator) keeps one, tells it about boot
// outcomes, fills each snapshot from it and shows it each plan. It holds no
// clock; callers pass times in. The zero value is ready to use. It is not
// safe for concurrent use.
type History struct {
	Failures  FailureLog
	cloudOver map[string]time.Time
	groupOver map[string]time.Time
}

// BootFailed records a failed boot; image is kept only when the failure
// class is ImageScoped.
func (h *History) BootFailed(site, image string, class protocol.ErrorClass, at time.Time, reason string) {
	if !ImageScoped(class) {
		image = ""
	}
	h.Failures.Record(Failure{Site: site, Image: image, At: at, Reason: reason})
}

// BootSucceeded records a good boot, clearing the failures it disproves.
func (h *History) BootSucceeded(site, image string, at time.Time) {
	h.Failures.Succeeded(site, image, at)
}

// Fill copies the history into s: its failures (after dropping those older
// than the config's failure window) and the over-quota times of its clouds
// and groups.
func (h *History) Fill(s *Snapshot) {
	cfg := s.Config.withDefaults()
	h.Failures.Prune(s.Now.Add(-cfg.FailureWindow))
	s.Failures = h.Failures.Failures()
	if len(h.cloudOver) > 0 {
		s.Clouds = slices.Clone(s.Clouds)
		for i := range s.Clouds {
			if t, ok := h.cloudOver[s.Clouds[i].Site]; ok {
				s.Clouds[i].OverQuotaSince = t
			}
		}
	}
	if len(h.groupOver) > 0 {
		s.Groups = slices.Clone(s.Groups)
		for i := range s.Groups {
			if t, ok := h.groupOver[s.Groups[i].Name]; ok {
				s.Groups[i].OverQuotaSince = t
			}
		}
	}
}

// Observe takes note of a plan made at now: clouds and groups it reports
// over quota keep (or start) their over-quota time, the others lose it.
func (h *History) Observe(now time.Time, p Plan) {
	h.cloudOver = observeOver(h.cloudOver, now, len(p.Clouds), func(i int) (string, bool) {
		return p.Clouds[i].Site, p.Clouds[i].OverQuota
	})
	h.groupOver = observeOver(h.groupOver, now, len(p.Groups), func(i int) (string, bool) {
		return p.Groups[i].Name, p.Groups[i].OverQuota
	})
}

// HistoryState is a History's content, for keeping it across restarts.
type HistoryState struct {
	Failures []Failure `json:"failures,omitempty"`
	// CloudOver and GroupOver are since when each cloud and group has been
	// over quota without a break.
	CloudOver map[string]time.Time `json:"cloud_over,omitempty"`
	GroupOver map[string]time.Time `json:"group_over,omitempty"`
}

// State returns a copy of the history's content.
func (h *History) State() HistoryState {
	return HistoryState{Failures: h.Failures.Failures(), CloudOver: maps.Clone(h.cloudOver), GroupOver: maps.Clone(h.groupOver)}
}

// RestoreHistory returns a History holding st.
func RestoreHistory(st HistoryState) History {
	return History{Failures: FailureLog{list: slices.Clone(st.Failures)}, cloudOver: maps.Clone(st.CloudOver),
		groupOver: maps.Clone(st.GroupOver)}
}

func observeOver(prev map[string]time.Time, now time.Time, n int, at func(int) (string, bool)) map[string]time.Time {
	next := make(map[string]time.Time)
	for i := range n {
		name, over := at(i)
		if !over {
			continue
		}
		if t, ok := prev[name]; ok {
			next[name] = t
		} else {
			next[name] = now
		}
	}
	return next
}
