// Package squid is the hub's squid registry: it keeps the squid caches that
// site agents list or that cache hosts advertise, verifies each by fetching
// a known URL through it, measures their load, and answers "which squids
// should this client use" ranked as shoal does: half great-circle distance,
// half load, within the squids' access levels.
//
// Liveness. A squid stays in the ranking while it has been heard from
// (advertised or registered again) or successfully verified within Expiry
// (180 s by default) and its last verification did not fail. A squid whose
// verification is pending is not offered yet.
//
// Verification. Every VerifyEvery, the hub GETs each kind's probe URL
// through each squid, at most VerifyConcurrency at a time, each request
// bounded by VerifyTimeout. Outcomes:
//   - 2xx with the expected content: verified.
//   - no answer, a refused connection, a timeout, an answer that did not
//     come from a proxy (no Via, X-Cache or X-Squid-Error header), or a
//     squid-made 403 (the hub is not allowed to use it): the squid failed.
//   - an answer relayed or made by the squid that says the origin failed
//     (a 5xx or X-Squid-Error such as ERR_CONNECT_FAIL, or a wrong body):
//     the origin failed. When another squid of the same round fetched the
//     same URL, the failure is the squid's after all (its way to the origin
//     is broken); when none did, the origin is down, and the squids that
//     answered are counted alive: dropping every squid because an origin is
//     down would only send every client DIRECT to the same dead origin.
//
// Squids that are local-only are not verified by default (the hub usually
// cannot reach them); they live by their registrations alone.
//
// What a squid is registered with (squidreg.Registration, its kinds and
// access levels) and the client that advertises one (squidreg.Advertiser,
// used by "agent squid") are in protocol/squidreg.
package squid

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// Probe is a URL fetched through a squid to verify it.
type Probe struct {
	// URL is an http:// URL the squid's upstream serves, e.g. a CVMFS
	// repository's .cvmfswhitelist on a stratum 1.
	URL string `yaml:"url" json:"url"`
	// Expect, when set, must occur in the first 64 KiB of the body.
	Expect string `yaml:"expect" json:"expect,omitempty"`
}

// Config tunes the registry. Zero values take the defaults named.
type Config struct {
	// DistanceWeight is w in cost = w·d/(πR) + (1−w)·(load/maxload)^b;
	// 0 means 0.5. Must be in [0, 1] (use a tiny value to rank by load).
	DistanceWeight float64 `yaml:"distance_weight"`
	// LoadExponent is b; 0 means 1.
	LoadExponent float64 `yaml:"load_exponent"`
	// Expiry is how long a squid stays without a registration or a
	// successful verification; 0 means 180 s.
	Expiry time.Duration `yaml:"expiry"`
	// VerifyEvery is the verification period; 0 means 60 s.
	VerifyEvery time.Duration `yaml:"verify_every"`
	// VerifyTimeout bounds each verification request; 0 means 5 s.
	VerifyTimeout time.Duration `yaml:"verify_timeout"`
	// VerifyConcurrency bounds parallel verifications; 0 means 32.
	VerifyConcurrency int `yaml:"verify_concurrency"`
	// Probes maps an upstream kind to the URL that verifies a squid of
	// that kind. A kind without a probe is not verified.
	Probes map[squidreg.Kind]Probe `yaml:"probes"`
	// VerifyLocalOnly also verifies local-only squids.
	VerifyLocalOnly bool `yaml:"verify_local_only"`
	// AdvertiseToken is the bearer token POST /api/v1/squids requires;
	// empty disables advertising over HTTP.
	AdvertiseToken string `yaml:"advertise_token"`
	// DefaultAnswer is how many squids a query gets without ?n=; 0 means 5.
	DefaultAnswer int `yaml:"default_answer"`
	// MaxAnswer bounds ?n=; 0 means 20.
	MaxAnswer int `yaml:"max_answer"`
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.DistanceWeight == 0 {
		c.DistanceWeight = 0.5
	}
	if c.LoadExponent == 0 {
		c.LoadExponent = 1
	}
	if c.Expiry == 0 {
		c.Expiry = 180 * time.Second
	}
	if c.VerifyEvery == 0 {
		c.VerifyEvery = 60 * time.Second
	}
	if c.VerifyTimeout == 0 {
		c.VerifyTimeout = 5 * time.Second
	}
	if c.VerifyConcurrency == 0 {
		c.VerifyConcurrency = 32
	}
	if c.DefaultAnswer == 0 {
		c.DefaultAnswer = 5
	}
	if c.MaxAnswer == 0 {
		c.MaxAnswer = 20
	}
	return c
}

// Validate checks the configuration (after WithDefaults).
func (c Config) Validate() error {
	if !finite(c.DistanceWeight) || c.DistanceWeight < 0 || c.DistanceWeight > 1 {
		return fmt.Errorf("squid config: distance_weight %v out of range 0-1", c.DistanceWeight)
	}
	if !finite(c.LoadExponent) || c.LoadExponent <= 0 || c.LoadExponent > 16 {
		return fmt.Errorf("squid config: load_exponent %v out of range (0, 16]", c.LoadExponent)
	}
	if c.Expiry < time.Second || c.VerifyEvery < 100*time.Millisecond || c.VerifyTimeout < 10*time.Millisecond {
		return errors.New("squid config: expiry >= 1s, verify_every >= 100ms and verify_timeout >= 10ms are required")
	}
	if c.VerifyConcurrency < 1 || c.VerifyConcurrency > 1024 {
		return fmt.Errorf("squid config: verify_concurrency %d out of range 1-1024", c.VerifyConcurrency)
	}
	if c.MaxAnswer < 1 || c.MaxAnswer > 100 || c.DefaultAnswer < 1 || c.DefaultAnswer > c.MaxAnswer {
		return fmt.Errorf("squid config: need 1 <= default_answer (%d) <= max_answer (%d) <= 100", c.DefaultAnswer, c.MaxAnswer)
	}
	for k, p := range c.Probes {
		if _, err := squidreg.ParseKind(string(k)); err != nil {
			return fmt.Errorf("squid config: probes: %w", err)
		}
		if !strings.HasPrefix(p.URL, "http://") {
			return fmt.Errorf("squid config: probe for %s: %q is not an http:// URL (squids proxy plain HTTP)", k, p.URL)
		}
	}
	return nil
}

// offered reports whether a squid in state s is offered to clients.
func offered(s squidreg.State) bool {
	return s == squidreg.StateVerified || s == squidreg.StateOriginDown || s == squidreg.StateUnverified
}

// kindBit is a kind's bit in a snapshot entry's kind set; 0 for an
// unknown kind.
func kindBit(k squidreg.Kind) uint8 {
	switch k {
	case squidreg.KindCVMFS:
		return 1
	case squidreg.KindFrontier:
		return 2
	}
	return 0
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// truncate shortens untrusted text quoted in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Status is one squid as the registry sees it, for the API and status page.
type Status struct {
	squidreg.Registration
	Source       string         `json:"source"`
	State        squidreg.State `json:"state"`
	Offered      bool           `json:"offered"`
	Located      bool           `json:"located"`
	Location     Location       `json:"location,omitzero"`
	LoadSource   string         `json:"load_source"`
	RegisteredAt time.Time      `json:"registered_at"`
	LastHeard    time.Time      `json:"last_heard,omitzero"`
	LastVerified time.Time      `json:"last_verified,omitzero"`
	LastAttempt  time.Time      `json:"last_attempt,omitzero"`
	LastError    string         `json:"last_error,omitempty"`
	Failures     int            `json:"consecutive_failures"`
	ExpiresAt    time.Time      `json:"expires_at"`
}

// Registry holds the squids and ranks them. Its methods are safe for
// concurrent use; queries never take its lock.
type Registry struct {
	cfg    Config
	log    *logrus.Entry
	now    func() time.Time
	client *http.Client
	loc    atomic.Pointer[Locator]
	snap   atomic.Pointer[snapshot]
	wake   chan struct{}
	m      *counters

	mu      sync.Mutex
	squids  map[string]*entry
	version uint64
}

type entry struct {
	reg          squidreg.Registration
	source       string
	loc          Location
	located      bool
	state        squidreg.State
	registeredAt time.Time
	lastHeard    time.Time // last registration
	lastVerified time.Time // last answer that proved the squid alive
	lastAttempt  time.Time
	lastError    string
	failures     int
	meter        squidreg.RateMeter
	measured     float64 // KB/s from the cache manager, when measuredAt is set
	measuredAt   time.Time
}

// Option changes how a Registry is built.
type Option func(*Registry)

// WithClock makes the registry read time from now (tests).
func WithClock(now func() time.Time) Option { return func(r *Registry) { r.now = now } }

// WithHTTPClient sets the client used for probes and cache manager reads.
// Its Transport must honour a per-request proxy (see ProxyTransport).
func WithHTTPClient(c *http.Client) Option { return func(r *Registry) { r.client = c } }

// New builds a registry. loc may be nil (no squid or client is located; the
// ranking is then by load and site alone) and can be replaced with SetLocator.
func New(cfg Config, loc *Locator, log *logrus.Entry, opts ...Option) (*Registry, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{
		cfg:    cfg,
		log:    log,
		now:    time.Now,
		client: &http.Client{Transport: ProxyTransport()},
		wake:   make(chan struct{}, 1),
		m:      &counters{},
		squids: map[string]*entry{},
	}
	for _, o := range opts {
		o(r)
	}
	r.loc.Store(loc)
	r.snap.Store(&snapshot{})
	return r, nil
}

// Config returns the registry's configuration with defaults filled.
func (r *Registry) Config() Config { return r.cfg }

// SetLocator replaces the GeoIP database (after an update) and relocates
// every squid.
func (r *Registry) SetLocator(loc *Locator) {
	r.loc.Store(loc)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.squids {
		e.loc, e.located = r.locate(e.reg)
	}
	r.rebuildLocked()
}

// locate places a squid: explicit coordinates first, then GeoIP of its
// geoip address or host address.
func (r *Registry) locate(reg squidreg.Registration) (Location, bool) {
	if reg.Latitude != nil && reg.Longitude != nil {
		return Location{Latitude: *reg.Latitude, Longitude: *reg.Longitude}, true
	}
	ip := reg.GeoIP
	if ip == "" {
		ip = reg.Host
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return Location{}, false
	}
	return r.loc.Load().Locate(a)
}

// Register adds or refreshes one squid. source says where it came from
// ("advertised", "agent:west", "config"); it is shown in Status and used
// by ReplaceSource. A registration that changes where the squid is or what
// it serves makes it pending again.
func (r *Registry) Register(reg squidreg.Registration, source string) error {
	reg, err := reg.Normalize()
	if err != nil {
		r.m.rejected.Add(1)
		return err
	}
	r.mu.Lock()
	pending := r.registerLocked(reg, source, r.now())
	r.rebuildLocked()
	r.mu.Unlock()
	r.m.accepted.Add(1)
	if pending {
		r.kick()
	}
	return nil
}

// ReplaceSource makes regs the complete list of squids from source: the
// ones it no longer lists are removed. Invalid registrations are skipped and
// reported in the returned error; the valid ones are applied.
func (r *Registry) ReplaceSource(source string, regs []squidreg.Registration) error {
	var errs []error
	valid := make([]squidreg.Registration, 0, len(regs))
	for _, reg := range regs {
		n, err := reg.Normalize()
		if err != nil {
			r.m.rejected.Add(1)
			errs = append(errs, err)
			continue
		}
		valid = append(valid, n)
	}
	r.mu.Lock()
	now := r.now()
	keep := map[string]bool{}
	pending := false
	for _, reg := range valid {
		keep[reg.Name] = true
		if r.registerLocked(reg, source, now) {
			pending = true
		}
	}
	for name, e := range r.squids {
		if e.source == source && !keep[name] {
			delete(r.squids, name)
		}
	}
	r.rebuildLocked()
	r.mu.Unlock()
	r.m.accepted.Add(uint64(len(valid)))
	if pending {
		r.kick()
	}
	return errors.Join(errs...)
}

// Remove drops a squid at once.
func (r *Registry) Remove(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.squids[name]
	delete(r.squids, name)
	r.rebuildLocked()
	return ok
}

// registerLocked stores reg and reports whether it now waits for a
// verification.
func (r *Registry) registerLocked(reg squidreg.Registration, source string, now time.Time) bool {
	e, ok := r.squids[reg.Name]
	if ok && sameService(e.reg, reg) {
		e.reg, e.source, e.lastHeard = reg, source, now
		if !e.reg.CacheManager {
			e.measuredAt = time.Time{}
		}
		return e.state == squidreg.StatePending
	}
	e = &entry{reg: reg, source: source, registeredAt: now, lastHeard: now}
	e.loc, e.located = r.locate(reg)
	e.state = squidreg.StatePending
	if !r.verifies(reg) {
		e.state = squidreg.StateUnverified
	}
	r.squids[reg.Name] = e
	return e.state == squidreg.StatePending
}

// sameService reports whether two registrations of one name describe the
// same proxy, so that its verification still holds.
func sameService(a, b squidreg.Registration) bool {
	return a.Host == b.Host && a.Port == b.Port && slices.Equal(a.Kinds, b.Kinds) && a.Access == b.Access &&
		a.GeoIP == b.GeoIP && ptrEq(a.Latitude, b.Latitude) && ptrEq(a.Longitude, b.Longitude)
}

func ptrEq(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// verifies says whether the hub verifies a squid of this registration.
func (r *Registry) verifies(reg squidreg.Registration) bool {
	if reg.Access == squidreg.AccessLocalOnly && !r.cfg.VerifyLocalOnly {
		return false
	}
	for _, k := range reg.Kinds {
		if _, ok := r.cfg.Probes[k]; ok {
			return true
		}
	}
	return false
}

func (r *Registry) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// aliveUntil is when the entry expires without news.
func (r *Registry) aliveUntil(e *entry) time.Time {
	last := e.lastHeard
	if e.lastVerified.After(last) {
		last = e.lastVerified
	}
	return last.Add(r.cfg.Expiry)
}

// load is the squid's current load: measured when the cache manager was
// read recently, else advertised.
func (r *Registry) load(e *entry, now time.Time) (float64, string) {
	if !e.measuredAt.IsZero() && now.Sub(e.measuredAt) < r.cfg.Expiry {
		return e.measured, "cache-manager"
	}
	return e.reg.Load, "advertised"
}

// Sweep removes squids not heard from or verified within Expiry and
// returns their names.
func (r *Registry) Sweep() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var gone []string
	for name, e := range r.squids {
		if !now.Before(r.aliveUntil(e)) {
			gone = append(gone, name)
			delete(r.squids, name)
		}
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		r.rebuildLocked()
		r.log.WithField("squids", gone).Info("squids expired")
	}
	return gone
}

// Squids returns every registered squid's status, sorted by name.
func (r *Registry) Squids() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]Status, 0, len(r.squids))
	for _, e := range r.squids {
		load, src := r.load(e, now)
		reg := e.reg
		reg.Load = load
		until := r.aliveUntil(e)
		out = append(out, Status{Registration: reg, Source: e.source, State: e.state,
			Offered: offered(e.state) && now.Before(until), Located: e.located, Location: e.loc, LoadSource: src,
			RegisteredAt: e.registeredAt, LastHeard: e.lastHeard, LastVerified: e.lastVerified,
			LastAttempt: e.lastAttempt, LastError: e.lastError, Failures: e.failures, ExpiresAt: until})
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Run verifies squids and sweeps expired ones until ctx ends. New
// registrations are verified within moments, the rest every VerifyEvery.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.VerifyEvery)
	defer t.Stop()
	r.VerifyAll(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Sweep()
			r.VerifyAll(ctx)
		case <-r.wake:
			r.VerifyPending(ctx)
		}
	}
}

// ProxyTransport is an HTTP transport for probing squids: the proxy of
// each request comes from its context (see withProxy). Connections are not
// kept between probes.
func ProxyTransport() *http.Transport {
	return &http.Transport{
		Proxy: func(req *http.Request) (*url.URL, error) {
			u, _ := req.Context().Value(proxyKey{}).(*url.URL)
			return u, nil
		},
		DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableKeepAlives:      true,
		ResponseHeaderTimeout:  30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

type proxyKey struct{}

// snapshot is the immutable ranking input, rebuilt on every change.
type snapshot struct {
	version uint64
	entries []snapEntry // by loadTerm, then name
	cands   []Candidate // cands[i] is entries[i]'s answer (kept apart: the scan touches only entries)
}

type snapEntry struct {
	loadTerm float64
	pt       point
	located  bool
	until    int64 // Unix ns; offered while now < until
	kinds    uint8
	access   squidreg.Access
	site     string
	domain   string
	idx      int // into snapshot.cands
}

func (r *Registry) rebuildLocked() {
	now := r.now()
	r.version++
	s := &snapshot{version: r.version, entries: make([]snapEntry, 0, len(r.squids)), cands: make([]Candidate, 0, len(r.squids))}
	w, b := r.cfg.DistanceWeight, r.cfg.LoadExponent
	for _, e := range r.squids {
		if !offered(e.state) {
			continue
		}
		load, _ := r.load(e, now)
		ratio := load / e.reg.MaxLoad
		lt := (1 - w) * math.Pow(ratio, b)
		if !finite(lt) {
			lt = math.MaxFloat64 / 4
		}
		var kinds uint8
		for _, k := range e.reg.Kinds {
			kinds |= kindBit(k)
		}
		se := snapEntry{loadTerm: lt, located: e.located, until: r.aliveUntil(e).UnixNano(), kinds: kinds,
			access: e.reg.Access, site: e.reg.Site, domain: e.reg.Domain, idx: len(s.cands)}
		s.cands = append(s.cands, Candidate{Name: e.reg.Name, Host: e.reg.Host, Port: e.reg.Port, Address: e.reg.Address(),
			Kinds: e.reg.Kinds, Access: e.reg.Access, Site: e.reg.Site, Domain: e.reg.Domain,
			Load: load, MaxLoad: e.reg.MaxLoad, State: e.state})
		if e.located {
			se.pt = e.loc.point()
		}
		s.entries = append(s.entries, se)
	}
	slices.SortFunc(s.entries, func(a, b snapEntry) int {
		if c := cmp.Compare(a.loadTerm, b.loadTerm); c != 0 {
			return c
		}
		return strings.Compare(s.cands[a.idx].Name, s.cands[b.idx].Name)
	})
	r.snap.Store(s)
}
