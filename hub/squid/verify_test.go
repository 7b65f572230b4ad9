package squid_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// origin serves a CVMFS-like whitelist.
func origin(t *testing.T) *httptest.Server {
	t.Helper()
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cvmfs/atlas.cern.ch/.cvmfswhitelist" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("20261122120000\nE20261222120000\nNatlas.cern.ch\n"))
	}))
	t.Cleanup(o.Close)
	return o
}

// deadURL is an http URL on 127.0.0.1 where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/cvmfs/atlas.cern.ch/.cvmfswhitelist"
}

func proxyReg(p *squidtest.Proxy, name string) squidreg.Registration {
	host, port := p.HostPort()
	return squidreg.Registration{Name: name, Host: host, Port: port, Kinds: []squidreg.Kind{squidreg.KindCVMFS},
		Access: squidreg.AccessGlobal, Latitude: f64(0), Longitude: f64(0)}
}

func verifyConfig(probeURL string) squid.Config {
	return squid.Config{VerifyTimeout: 2 * time.Second, VerifyConcurrency: 4,
		Probes: map[squidreg.Kind]squid.Probe{squidreg.KindCVMFS: {URL: probeURL, Expect: "Natlas.cern.ch"}}}
}

func states(r *squid.Registry) map[string]squidreg.State {
	m := map[string]squidreg.State{}
	for _, s := range r.Squids() {
		m[s.Name] = s.State
	}
	return m
}

func offered(r *squid.Registry) []string {
	got := names(r.Nearest(squid.Query{N: 20}).Squids)
	slices.Sort(got)
	return got
}

func TestVerify(t *testing.T) {
	o := origin(t)
	goodURL := o.URL + "/cvmfs/atlas.cern.ch/.cvmfswhitelist"
	tests := []struct {
		name     string
		probe    string
		expect   string
		setup    func(a, b *squidtest.Proxy)
		want     map[string]squidreg.State
		errLike  string // in b's last error
		wantOffr []string
	}{
		{name: "both good", probe: goodURL, setup: func(a, b *squidtest.Proxy) {},
			want: map[string]squidreg.State{"a": squidreg.StateVerified, "b": squidreg.StateVerified}, wantOffr: []string{"a", "b"}},
		{name: "squid down", probe: goodURL, setup: func(a, b *squidtest.Proxy) { b.Close() },
			want: map[string]squidreg.State{"a": squidreg.StateVerified, "b": squidreg.StateFailed}, errLike: "connect", wantOffr: []string{"a"}},
		{name: "squid refuses the hub", probe: goodURL, setup: func(a, b *squidtest.Proxy) { b.Deny(true) },
			want: map[string]squidreg.State{"a": squidreg.StateVerified, "b": squidreg.StateFailed}, errLike: "refuses the hub", wantOffr: []string{"a"}},
		{name: "not a proxy", probe: goodURL, setup: func(a, b *squidtest.Proxy) { b.NotAProxy(true) },
			want: map[string]squidreg.State{"a": squidreg.StateVerified, "b": squidreg.StateFailed}, errLike: "does not come from a proxy", wantOffr: []string{"a"}},
		{name: "squid too slow", probe: goodURL, setup: func(a, b *squidtest.Proxy) { b.Delay(5 * time.Second) },
			want: map[string]squidreg.State{"a": squidreg.StateVerified, "b": squidreg.StateFailed}, errLike: "deadline", wantOffr: []string{"a"}},
		{name: "one squid cannot reach the origin the other reaches", probe: goodURL, setup: func(a, b *squidtest.Proxy) { b.BreakUpstream(true) },
			want: map[string]squidreg.State{"a": squidreg.StateVerified, "b": squidreg.StateFailed}, errLike: "other squids fetched", wantOffr: []string{"a"}},
		{name: "origin down for everyone", probe: "dead", setup: func(a, b *squidtest.Proxy) {},
			want: map[string]squidreg.State{"a": squidreg.StateOriginDown, "b": squidreg.StateOriginDown}, errLike: "ERR_CONNECT_FAIL", wantOffr: []string{"a", "b"}},
		{name: "origin serves the wrong thing", probe: goodURL, expect: "Ncms.cern.ch", setup: func(a, b *squidtest.Proxy) {},
			want: map[string]squidreg.State{"a": squidreg.StateOriginDown, "b": squidreg.StateOriginDown}, errLike: "lacks", wantOffr: []string{"a", "b"}},
		{name: "origin 404", probe: o.URL + "/nope", setup: func(a, b *squidtest.Proxy) {},
			want: map[string]squidreg.State{"a": squidreg.StateOriginDown, "b": squidreg.StateOriginDown}, errLike: "404", wantOffr: []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probe := tt.probe
			if probe == "dead" {
				probe = deadURL(t)
			}
			cfg := verifyConfig(probe)
			if tt.expect != "" {
				cfg.Probes[squidreg.KindCVMFS] = squid.Probe{URL: probe, Expect: tt.expect}
			}
			c := newClock()
			r := newRegistry(t, cfg, nil, c)
			a, b := squidtest.NewProxy(), squidtest.NewProxy()
			t.Cleanup(a.Close)
			t.Cleanup(b.Close)
			if err := r.ReplaceSource("test", []squidreg.Registration{proxyReg(a, "a"), proxyReg(b, "b")}); err != nil {
				t.Fatal(err)
			}
			if got := offered(r); len(got) != 0 {
				t.Fatalf("pending squids offered: %v", got)
			}
			tt.setup(a, b)
			r.VerifyAll(context.Background())
			got := states(r)
			for n, w := range tt.want {
				if got[n] != w {
					t.Errorf("%s: state %s, want %s", n, got[n], w)
				}
			}
			if tt.errLike != "" {
				for _, s := range r.Squids() {
					if s.Name == "b" && !strings.Contains(s.LastError, tt.errLike) {
						t.Errorf("b's error %q lacks %q", s.LastError, tt.errLike)
					}
				}
			}
			if o := offered(r); !slices.Equal(o, tt.wantOffr) {
				t.Errorf("offered %v, want %v", o, tt.wantOffr)
			}
		})
	}
}

// TestVerifyKeepsAliveAndRecovers: a verified squid outlives Expiry without
// registrations while it keeps passing; a failed one comes back once it
// passes again.
func TestVerifyKeepsAliveAndRecovers(t *testing.T) {
	o := origin(t)
	c := newClock()
	r := newRegistry(t, verifyConfig(o.URL+"/cvmfs/atlas.cern.ch/.cvmfswhitelist"), nil, c)
	a := squidtest.NewProxy()
	defer a.Close()
	if err := r.Register(proxyReg(a, "a"), "agent:west"); err != nil {
		t.Fatal(err)
	}
	r.VerifyPending(context.Background())
	for range 5 {
		c.Advance(100 * time.Second)
		r.VerifyAll(context.Background())
		if got := offered(r); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("verified squid dropped: %v (%v)", got, r.Squids())
		}
	}
	a.Deny(true)
	r.VerifyAll(context.Background())
	if got := offered(r); len(got) != 0 {
		t.Fatalf("failed squid offered")
	}
	a.Deny(false)
	r.VerifyAll(context.Background())
	if got := offered(r); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("recovered squid not offered: %v", r.Squids())
	}
	st := r.Squids()[0]
	if st.Failures != 0 || st.LastError != "" || st.State != squidreg.StateVerified {
		t.Errorf("status after recovery %+v", st)
	}
}

func TestLocalOnlyNotVerified(t *testing.T) {
	r := newRegistry(t, verifyConfig(deadURL(t)), nil, newClock())
	l := squidreg.Registration{Name: "l", Host: "10.0.0.3", Port: 3128, Kinds: []squidreg.Kind{squidreg.KindCVMFS},
		Access: squidreg.AccessLocalOnly, Site: "west"}
	if err := r.Register(l, "agent:west"); err != nil {
		t.Fatal(err)
	}
	r.VerifyAll(context.Background())
	if got := states(r)["l"]; got != squidreg.StateUnverified {
		t.Fatalf("state %s", got)
	}
	if got := names(r.Nearest(squid.Query{Site: "west", N: 3}).Squids); !slices.Equal(got, []string{"l"}) {
		t.Errorf("offered to west: %v", got)
	}
}

// TestCacheManagerLoad: the load comes from the cache manager's
// kbytes_out counter once two readings exist, else from the advertisement.
func TestCacheManagerLoad(t *testing.T) {
	o := origin(t)
	c := newClock()
	r := newRegistry(t, verifyConfig(o.URL+"/cvmfs/atlas.cern.ch/.cvmfswhitelist"), nil, c)
	a := squidtest.NewProxy()
	defer a.Close()
	g := proxyReg(a, "a")
	g.CacheManager = true
	g.Load = 7
	if err := r.Register(g, "advertised"); err != nil {
		t.Fatal(err)
	}
	r.VerifyAll(context.Background()) // 1 proxied request, first reading
	if s := r.Squids()[0]; s.Load != 7 || s.LoadSource != "advertised" {
		t.Fatalf("after one reading: load %v from %s", s.Load, s.LoadSource)
	}
	c.Advance(10 * time.Second)
	r.VerifyAll(context.Background()) // one more request: +10 KB in 10 s
	s := r.Squids()[0]
	if s.LoadSource != "cache-manager" || s.Load != 1 {
		t.Fatalf("after two readings: load %v from %s", s.Load, s.LoadSource)
	}
	if got := r.Nearest(squid.Query{N: 1}).Squids; len(got) != 1 || got[0].Load != 1 {
		t.Fatalf("ranking load %+v", got)
	}
}

func TestRunVerifiesNewRegistrations(t *testing.T) {
	o := origin(t)
	cfg := verifyConfig(o.URL + "/cvmfs/atlas.cern.ch/.cvmfswhitelist")
	cfg.VerifyEvery = time.Hour
	r, err := squid.New(cfg, nil, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	a := squidtest.NewProxy()
	defer a.Close()
	if err := r.Register(proxyReg(a, "a"), "advertised"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for states(r)["a"] != squidreg.StateVerified {
		if time.Now().After(deadline) {
			t.Fatalf("not verified within 10 s: %+v", r.Squids())
		}
		waitABit()
	}
}

// waitABit yields for a moment while polling for a condition with a
// deadline (not a synchronisation by sleeping).
func waitABit() { <-time.After(10 * time.Millisecond) }
