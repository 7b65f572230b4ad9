// Package squidcache is the site agent's copy of the hub's squid answers:
// it asks the hub which squids suit this site (GET
// /api/v1/squids/nearest?site=&domain=&kind=&n=), or takes lists the hub
// pushes, keeps the last good list of each upstream kind with its age (also
// in a state file, so a restarted agent still has it), and serves it to the
// site's VMs at GET /v1/squids on the agent's VM endpoint. VMs thus get
// proxies while the hub is unreachable; they check the proxies themselves
// (vmagent/proxy) and fall back to DIRECT.
//
// The JSON the hub sends is decoded here into the few fields the agent
// needs (a tolerant reader): the agent does not link the hub's registry.
package squidcache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/squidreg"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// Limits on what is accepted from the hub, the state file and config.
const (
	// MaxProxies bounds one kind's list.
	MaxProxies = 50
	// maxAnswer bounds a hub answer or the state file.
	maxAnswer = 1 << 20
	maxField  = 253
)

// Config configures the cache.
type Config struct {
	// HubURL is the hub's HTTP base URL; empty means lists only come by
	// Push (or from the state file and Fallback).
	HubURL string `yaml:"hub_url"`
	// Site and Domain are sent to the hub to open local-only and
	// same-domain squids.
	Site   string `yaml:"site"`
	Domain string `yaml:"domain"`
	// ClientIP, when set, is sent as ?ip= (the hub otherwise locates the
	// agent by the address it connects from).
	ClientIP string `yaml:"client_ip"`
	// Kinds are the upstream kinds to keep; default cvmfs and frontier.
	Kinds []string `yaml:"kinds"`
	// N is how many squids per kind to ask for; 0 means 10.
	N int `yaml:"n"`
	// Every is the refresh period; 0 means 60 s.
	Every time.Duration `yaml:"every"`
	// StaleAfter marks a list stale when the hub has not confirmed it for
	// this long; 0 means 10 minutes. Stale lists are still served.
	StaleAfter time.Duration `yaml:"stale_after"`
	// StateFile keeps the last good lists across restarts; empty: none.
	StateFile string `yaml:"state_file"`
	// Fallback lists host:port squids per kind, served when the hub never
	// answered (typically the site's own squids from the agent's config).
	Fallback map[string][]string `yaml:"fallback"`
}

type kindState struct {
	proxies   []vmproto.SquidProxy
	source    string
	fetchedAt time.Time // when the hub gave (or confirmed) the list
	lastErr   string
}

// Cache holds the lists. Its methods are safe for concurrent use.
type Cache struct {
	cfg    Config
	log    *logrus.Entry
	client *http.Client
	now    func() time.Time

	mu    sync.Mutex
	kinds map[string]*kindState
}

// Option changes how a Cache is built.
type Option func(*Cache)

// WithClock makes the cache read time from now (tests).
func WithClock(now func() time.Time) Option { return func(c *Cache) { c.now = now } }

// WithHTTPClient sets the client used to reach the hub.
func WithHTTPClient(h *http.Client) Option { return func(c *Cache) { c.client = h } }

// New builds a cache and loads the state file, if any. A state file that
// cannot be read is logged and ignored (the hub will refill the cache).
func New(cfg Config, log *logrus.Entry, opts ...Option) (*Cache, error) {
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = []string{"cvmfs", "frontier"}
	}
	if cfg.N == 0 {
		cfg.N = 10
	}
	if cfg.Every == 0 {
		cfg.Every = 60 * time.Second
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = 10 * time.Minute
	}
	if cfg.N < 1 || cfg.N > MaxProxies {
		return nil, fmt.Errorf("squid cache: n %d out of range 1-%d", cfg.N, MaxProxies)
	}
	if cfg.HubURL != "" {
		u, err := url.Parse(cfg.HubURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("squid cache: hub_url %q is not an http(s) URL", cfg.HubURL)
		}
	}
	c := &Cache{cfg: cfg, log: log, client: &http.Client{Timeout: 10 * time.Second}, now: time.Now,
		kinds: map[string]*kindState{}}
	for _, o := range opts {
		o(c)
	}
	for _, k := range cfg.Kinds {
		if !validToken(k) {
			return nil, fmt.Errorf("squid cache: bad kind %q", k)
		}
		st := &kindState{}
		for _, a := range cfg.Fallback[k] {
			p, err := proxyFor("", a)
			if err != nil {
				return nil, fmt.Errorf("squid cache: fallback for %s: %w", k, err)
			}
			st.proxies = append(st.proxies, p)
		}
		if len(st.proxies) > 0 {
			st.source = vmproto.SquidSourceFallback
		}
		c.kinds[k] = st
	}
	for k := range cfg.Fallback {
		if _, ok := c.kinds[k]; !ok {
			return nil, fmt.Errorf("squid cache: fallback for kind %q which is not kept (kinds %v)", k, cfg.Kinds)
		}
	}
	if cfg.StateFile != "" {
		if err := c.loadState(); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.WithError(err).WithField("path", cfg.StateFile).Warn("squid cache state file ignored")
		}
	}
	return c, nil
}

// Run refreshes every Every until ctx ends (at once first). Failures are
// logged when a kind starts failing and when it recovers.
func (c *Cache) Run(ctx context.Context) error {
	if c.cfg.HubURL == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(c.cfg.Every)
	defer t.Stop()
	for {
		_ = c.Refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh asks the hub for every kind's list. A failure keeps the last
// good list; the error joins the kinds' failures.
func (c *Cache) Refresh(ctx context.Context) error {
	var errs []error
	for _, k := range c.cfg.Kinds {
		proxies, err := c.fetch(ctx, k)
		if err != nil {
			c.mu.Lock()
			st := c.kinds[k]
			first := st.lastErr == ""
			st.lastErr = err.Error()
			c.mu.Unlock()
			if first && ctx.Err() == nil {
				c.log.WithError(err).WithField("kind", k).Warn("squid list refresh failed; serving the last good list")
			}
			errs = append(errs, err)
			continue
		}
		c.store(k, proxies, vmproto.SquidSourceHub, c.now())
	}
	return errors.Join(errs...)
}

// Push stores a list the hub sent (for example over the agent's session).
func (c *Cache) Push(kind string, proxies []vmproto.SquidProxy, at time.Time) error {
	if _, ok := c.kinds[kind]; !ok {
		return fmt.Errorf("squid list push: kind %q is not kept", kind)
	}
	clean, err := cleanProxies(proxies)
	if err != nil {
		return fmt.Errorf("squid list push for %s: %w", kind, err)
	}
	c.store(kind, clean, vmproto.SquidSourcePush, at)
	return nil
}

// store records a list from the hub. An empty list does not replace a
// non-empty one younger than StaleAfter: right after a restart the hub's
// registry is empty until agents report again, and sending every VM DIRECT
// for that moment would do harm.
func (c *Cache) store(kind string, proxies []vmproto.SquidProxy, source string, at time.Time) {
	c.mu.Lock()
	st := c.kinds[kind]
	recovered := st.lastErr != ""
	st.lastErr = ""
	if len(proxies) == 0 && len(st.proxies) > 0 && st.source != vmproto.SquidSourceFallback && at.Sub(st.fetchedAt) < c.cfg.StaleAfter {
		c.mu.Unlock()
		return
	}
	changed := !slices.Equal(addresses(st.proxies), addresses(proxies))
	st.proxies, st.source, st.fetchedAt = proxies, source, at
	c.mu.Unlock()
	if recovered {
		c.log.WithField("kind", kind).Info("squid list refreshed again")
	}
	if changed {
		c.log.WithFields(logrus.Fields{"kind": kind, "squids": addresses(proxies), "source": source}).Info("squid list changed")
	}
	if c.cfg.StateFile != "" {
		if err := c.saveState(); err != nil {
			c.log.WithError(err).WithField("path", c.cfg.StateFile).Warn("save squid cache state")
		}
	}
}

func addresses(ps []vmproto.SquidProxy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Address
	}
	return out
}

// Get returns up to n of kind's proxies (all when n <= 0); ok is false
// for a kind that is not kept.
func (c *Cache) Get(kind string, n int) (vmproto.SquidList, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.kinds[kind]
	if !ok {
		return vmproto.SquidList{}, false
	}
	ps := st.proxies
	if n > 0 && len(ps) > n {
		ps = ps[:n]
	}
	l := vmproto.SquidList{Kind: kind, Proxies: slices.Clone(ps), Source: st.source, FetchedAt: st.fetchedAt, LastError: st.lastErr}
	if l.Proxies == nil {
		l.Proxies = []vmproto.SquidProxy{}
	}
	if !st.fetchedAt.IsZero() {
		age := c.now().Sub(st.fetchedAt)
		l.AgeSeconds = max(0, age.Seconds())
		l.Stale = age > c.cfg.StaleAfter
	}
	return l, true
}

// ProxyURLs returns up to n proxy URLs of kind, best first (for the
// site's gossip squid list).
func (c *Cache) ProxyURLs(kind string, n int) []string {
	l, _ := c.Get(kind, n)
	out := make([]string, 0, len(l.Proxies))
	for _, p := range l.Proxies {
		out = append(out, p.URL)
	}
	return out
}

// Handler serves GET /v1/squids?kind=cvmfs&n=5 (kind defaults to the first
// kept kind, n to all, at most MaxProxies).
func (c *Cache) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+vmproto.PathSquids, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		kind := q.Get("kind")
		if kind == "" {
			kind = c.cfg.Kinds[0]
		}
		n := 0
		if s := q.Get("n"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 || v > MaxProxies {
				http.Error(w, fmt.Sprintf("bad query: n=%q: want a whole number from 1 to %d", truncate(s, 20), MaxProxies), http.StatusBadRequest)
				return
			}
			n = v
		}
		l, ok := c.Get(kind, n)
		if !ok {
			http.Error(w, fmt.Sprintf("this agent keeps no squid list for kind %q (kinds: %s)", truncate(kind, 32),
				strings.Join(c.cfg.Kinds, ", ")), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(l)
	})
	return mux
}

// fetch asks the hub for kind's list.
func (c *Cache) fetch(ctx context.Context, kind string) ([]vmproto.SquidProxy, error) {
	v := url.Values{}
	v.Set("kind", kind)
	v.Set("n", strconv.Itoa(c.cfg.N))
	if c.cfg.Site != "" {
		v.Set("site", c.cfg.Site)
	}
	if c.cfg.Domain != "" {
		v.Set("domain", c.cfg.Domain)
	}
	if c.cfg.ClientIP != "" {
		v.Set("ip", c.cfg.ClientIP)
	}
	u := strings.TrimSuffix(c.cfg.HubURL, "/") + squidreg.PathNearest + "?" + v.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("ask hub for %s squids: %w", kind, err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ask hub for %s squids: %w", kind, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("ask hub for %s squids: read answer: %w", kind, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask hub for %s squids: %s: %s", kind, resp.Status, truncate(strings.TrimSpace(string(b)), 200))
	}
	ps, err := DecodeHubAnswer(b)
	if err != nil {
		return nil, fmt.Errorf("ask hub for %s squids: %w", kind, err)
	}
	return ps, nil
}

// hubAnswer is the part of the hub's nearest-squids answer the agent reads.
type hubAnswer struct {
	Squids *[]struct {
		Name       string  `json:"name"`
		Address    string  `json:"address"`
		Cost       float64 `json:"cost"`
		DistanceKm float64 `json:"distance_km"`
		Load       float64 `json:"load"`
	} `json:"squids"`
}

// DecodeHubAnswer reads the hub's GET /api/v1/squids/nearest answer into
// proxies, best first. Every address must be a usable host:port.
func DecodeHubAnswer(b []byte) ([]vmproto.SquidProxy, error) {
	if len(b) > maxAnswer {
		return nil, fmt.Errorf("hub answer is %d bytes, limit %d", len(b), maxAnswer)
	}
	var a hubAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("hub answer: %w", err)
	}
	if a.Squids == nil {
		return nil, errors.New("hub answer has no squids field")
	}
	if len(*a.Squids) > MaxProxies {
		return nil, fmt.Errorf("hub answer lists %d squids, limit %d", len(*a.Squids), MaxProxies)
	}
	out := make([]vmproto.SquidProxy, 0, len(*a.Squids))
	for i, s := range *a.Squids {
		p, err := proxyFor(s.Name, s.Address)
		if err != nil {
			return nil, fmt.Errorf("hub answer squid %d: %w", i, err)
		}
		p.Cost, p.DistanceKm, p.Load = s.Cost, s.DistanceKm, s.Load
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("hub answer squid %d: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func cleanProxies(ps []vmproto.SquidProxy) ([]vmproto.SquidProxy, error) {
	if len(ps) > MaxProxies {
		return nil, fmt.Errorf("%d squids, limit %d", len(ps), MaxProxies)
	}
	out := make([]vmproto.SquidProxy, 0, len(ps))
	for i, p := range ps {
		q, err := proxyFor(p.Name, p.Address)
		if err != nil {
			return nil, fmt.Errorf("squid %d: %w", i, err)
		}
		q.Cost, q.DistanceKm, q.Load = p.Cost, p.DistanceKm, p.Load
		if err := q.Validate(); err != nil {
			return nil, fmt.Errorf("squid %d: %w", i, err)
		}
		out = append(out, q)
	}
	return out, nil
}

// proxyFor checks a host:port address (it ends up in VMs' configuration
// files as it is) and builds its SquidProxy.
func proxyFor(name, addr string) (vmproto.SquidProxy, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return vmproto.SquidProxy{}, fmt.Errorf("address %q: %w", truncate(addr, 64), err)
	}
	pn, err := strconv.Atoi(port)
	if err != nil || pn < 1 || pn > 65535 || strconv.Itoa(pn) != port {
		return vmproto.SquidProxy{}, fmt.Errorf("address %q: bad port", truncate(addr, 64))
	}
	if host == "" || len(host) > maxField || !validHost(host) {
		return vmproto.SquidProxy{}, fmt.Errorf("address %q: bad host", truncate(addr, 64))
	}
	if len(name) > maxField || (name != "" && !validToken(name)) {
		return vmproto.SquidProxy{}, fmt.Errorf("name %q: bad characters", truncate(name, 64))
	}
	a := net.JoinHostPort(host, port)
	return vmproto.SquidProxy{Name: name, Address: a, URL: "http://" + a}, nil
}

func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

func validToken(s string) bool {
	if s == "" || len(s) > maxField {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:-[]", c) >= 0) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// stateFile is the on-disk form of the lists.
type stateFile struct {
	Kinds map[string]stateKind `json:"kinds"`
}

type stateKind struct {
	Proxies   []vmproto.SquidProxy `json:"proxies"`
	FetchedAt time.Time            `json:"fetched_at"`
}

func (c *Cache) saveState() error {
	c.mu.Lock()
	sf := stateFile{Kinds: map[string]stateKind{}}
	for k, st := range c.kinds {
		if st.source == vmproto.SquidSourceFallback || st.fetchedAt.IsZero() {
			continue
		}
		sf.Kinds[k] = stateKind{Proxies: st.proxies, FetchedAt: st.fetchedAt}
	}
	c.mu.Unlock()
	b, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(c.cfg.StateFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".squids-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), c.cfg.StateFile)
}

func (c *Cache) loadState() error {
	f, err := os.Open(c.cfg.StateFile)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAnswer+1))
	if err != nil {
		return err
	}
	lists, err := decodeState(b)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, sk := range lists {
		st, ok := c.kinds[k]
		if !ok {
			continue
		}
		st.proxies, st.fetchedAt, st.source = sk.Proxies, sk.FetchedAt, vmproto.SquidSourceStateFile
	}
	return nil
}

// decodeState reads a state file written by the cache; every entry is
// checked as if it came from the hub.
func decodeState(b []byte) (map[string]stateKind, error) {
	if len(b) > maxAnswer {
		return nil, fmt.Errorf("squid state is %d bytes, limit %d", len(b), maxAnswer)
	}
	var sf stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return nil, fmt.Errorf("squid state: %w", err)
	}
	out := map[string]stateKind{}
	for k, sk := range sf.Kinds {
		if !validToken(k) {
			return nil, fmt.Errorf("squid state: bad kind %q", truncate(k, 32))
		}
		ps, err := cleanProxies(sk.Proxies)
		if err != nil {
			return nil, fmt.Errorf("squid state for %s: %w", k, err)
		}
		out[k] = stateKind{Proxies: ps, FetchedAt: sk.FetchedAt}
	}
	return out, nil
}
