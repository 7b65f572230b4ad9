package squid

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// maxProbeBody bounds how much of a probe answer is read.
const maxProbeBody = 64 << 10

// outcome is what one verification found.
type outcome int

const (
	outcomeOK outcome = iota
	// outcomeOrigin: the squid answered, but the origin (or the path to
	// it) failed.
	outcomeOrigin
	// outcomeSquid: the squid itself failed.
	outcomeSquid
)

// check is one squid's verification in a round.
type check struct {
	name     string
	outcome  outcome
	err      string
	failedAt string // probe URL of an origin failure
	okURLs   []string
	kb       float64 // cache manager reading
	kbOK     bool
	kbErr    string
	at       time.Time
}

// target is what a verification needs of a squid, copied under the lock.
type target struct {
	name    string
	proxy   *url.URL
	base    string
	probes  []Probe
	cachemg bool
}

// VerifyAll verifies every squid the hub verifies, and reads the cache
// managers it may read, in one round.
func (r *Registry) VerifyAll(ctx context.Context) {
	r.verify(ctx, func(*entry) bool { return true })
}

// VerifyPending verifies the squids not verified yet.
func (r *Registry) VerifyPending(ctx context.Context) {
	r.verify(ctx, func(e *entry) bool { return e.state == squidreg.StatePending })
}

func (r *Registry) verify(ctx context.Context, pick func(*entry) bool) {
	r.mu.Lock()
	var targets []target
	for name, e := range r.squids {
		if !pick(e) {
			continue
		}
		t := target{name: name, base: "http://" + e.reg.Address(), cachemg: e.reg.CacheManager}
		t.proxy = &url.URL{Scheme: "http", Host: e.reg.Address()}
		for _, k := range e.reg.Kinds {
			if p, ok := r.cfg.Probes[k]; ok && r.verifies(e.reg) && !slices.ContainsFunc(t.probes, func(q Probe) bool { return q.URL == p.URL }) {
				t.probes = append(t.probes, p)
			}
		}
		if len(t.probes) > 0 || t.cachemg {
			targets = append(targets, t)
		}
	}
	r.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	slices.SortFunc(targets, func(a, b target) int { return strings.Compare(a.name, b.name) })

	checks := make([]check, len(targets))
	sem := make(chan struct{}, r.cfg.VerifyConcurrency)
	var wg sync.WaitGroup
	for i, t := range targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			checks[i] = r.verifyOne(ctx, t)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // a round cut short proves nothing
	}
	crossCheck(checks)
	r.apply(targets, checks)
}

// crossCheck blames the squid for an origin failure on a URL that another
// squid of the same round fetched.
func crossCheck(checks []check) {
	fetched := map[string]bool{}
	for _, c := range checks {
		for _, u := range c.okURLs {
			fetched[u] = true
		}
	}
	for i := range checks {
		c := &checks[i]
		if c.outcome == outcomeOrigin && fetched[c.failedAt] {
			c.outcome = outcomeSquid
			c.err = "other squids fetched " + c.failedAt + " but this one: " + c.err
		}
	}
}

func (r *Registry) apply(targets []target, checks []check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for i, t := range targets {
		c := checks[i]
		e, ok := r.squids[t.name]
		if !ok || "http://"+e.reg.Address() != t.base {
			continue // removed or moved while we were checking
		}
		if c.kbOK {
			if rate, ok := e.meter.Next(c.kb, c.at); ok {
				e.measured, e.measuredAt = rate, c.at
				changed = true
			}
		}
		if len(t.probes) == 0 {
			continue // cache manager only
		}
		e.lastAttempt = c.at
		prev := e.state
		log := r.log.WithFields(logrus.Fields{"squid": t.name, "address": e.reg.Address()})
		switch c.outcome {
		case outcomeOK:
			e.state, e.lastVerified, e.lastError, e.failures = squidreg.StateVerified, c.at, "", 0
			r.m.verifyOK.Add(1)
		case outcomeOrigin:
			e.state, e.lastVerified, e.lastError, e.failures = squidreg.StateOriginDown, c.at, c.err, 0
			r.m.verifyOrigin.Add(1)
		case outcomeSquid:
			e.state, e.lastError = squidreg.StateFailed, c.err
			e.failures++
			r.m.verifyFailed.Add(1)
		}
		if e.state != prev {
			changed = true
			if e.state == squidreg.StateFailed || e.state == squidreg.StateOriginDown {
				log.WithField("state", e.state).WithField("error", c.err).Warn("squid verification")
			} else {
				log.WithField("state", e.state).Info("squid verification")
			}
		}
		if c.outcome != outcomeSquid {
			changed = true // liveness moved on
		}
	}
	if changed {
		r.rebuildLocked()
	}
}

// verifyOne fetches each probe through the squid, and reads its cache
// manager when allowed.
func (r *Registry) verifyOne(ctx context.Context, t target) check {
	c := check{name: t.name, outcome: outcomeOK}
	for _, p := range t.probes {
		o, err := r.probe(ctx, t.proxy, p)
		if o == outcomeOK {
			c.okURLs = append(c.okURLs, p.URL)
			continue
		}
		if o > c.outcome {
			c.outcome, c.err = o, err.Error()
			if o == outcomeOrigin {
				c.failedAt = p.URL
			}
		}
		if o == outcomeSquid {
			break
		}
	}
	if t.cachemg && c.outcome != outcomeSquid {
		rctx, cancel := context.WithTimeout(ctx, r.cfg.VerifyTimeout)
		kb, err := squidreg.ReadKBytesOut(rctx, r.client, t.base)
		cancel()
		if err != nil {
			c.kbErr = err.Error()
			r.log.WithField("squid", t.name).WithError(err).Debug("cache manager")
		} else {
			c.kb, c.kbOK = kb, true
		}
	}
	c.at = r.now()
	return c
}

// probe fetches p through proxy and classifies the outcome.
func (r *Registry) probe(ctx context.Context, proxy *url.URL, p Probe) (outcome, error) {
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, proxyKey{}, proxy), r.cfg.VerifyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return outcomeSquid, fmt.Errorf("probe %s: %w", p.URL, err)
	}
	req.Header.Set("User-Agent", "canopy-hub squid verification")
	resp, err := r.client.Do(req)
	if err != nil {
		return outcomeSquid, fmt.Errorf("GET %s via %s: %w", p.URL, proxy.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return outcomeSquid, fmt.Errorf("GET %s via %s: read body: %w", p.URL, proxy.Host, err)
	}
	return classify(resp, body, p.Expect)
}

// classify sorts a probe answer received through a squid into success
// (nil error), a failure of the origin (outcome "origin", the squid relayed
// or reported it), and a failure of the squid. See the package doc.
func classify(resp *http.Response, body []byte, expect string) (outcome, error) {
	squidErr := resp.Header.Get("X-Squid-Error")
	fromProxy := squidErr != "" || resp.Header.Get("Via") != "" || resp.Header.Get("X-Cache") != ""
	switch {
	case !fromProxy:
		return outcomeSquid, fmt.Errorf("answer %s does not come from a proxy (no Via, X-Cache or X-Squid-Error header)", resp.Status)
	case resp.StatusCode == http.StatusForbidden && squidErr != "" || resp.StatusCode == http.StatusProxyAuthRequired:
		return outcomeSquid, fmt.Errorf("squid refuses the hub: %s %s", resp.Status, squidErr)
	case squidErr != "":
		return outcomeOrigin, fmt.Errorf("squid could not fetch from the origin: %s %s", resp.Status, squidErr)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return outcomeOrigin, fmt.Errorf("origin answered %s", resp.Status)
	case expect != "" && !strings.Contains(string(body), expect):
		return outcomeOrigin, fmt.Errorf("answer lacks %q", truncate(expect, 40))
	}
	return outcomeOK, nil
}
