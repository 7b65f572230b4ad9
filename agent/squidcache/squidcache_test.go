package squidcache

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/squidreg"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// hub stands in for the hub's squid API: GET squidreg.PathNearest answers
// with the JSON the hub sends (an object whose "squids" lists name,
// address, cost, distance_km and load, best first), from the lists set per
// kind, cut to ?n=. It records the queries it was asked. The hub's own
// ranking is tested in hub/squid.
type hub struct {
	srv *httptest.Server

	mu      sync.Mutex
	squids  map[string][]hubSquid // by kind
	queries []url.Values
}

// hubSquid is one squid of the hub's answer.
type hubSquid struct {
	Name       string  `json:"name"`
	Address    string  `json:"address"`
	Cost       float64 `json:"cost"`
	DistanceKm float64 `json:"distance_km"`
	Load       float64 `json:"load"`
}

func newHub(t *testing.T) *hub {
	t.Helper()
	h := &hub{squids: map[string][]hubSquid{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != squidreg.PathNearest {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n < 1 {
		http.Error(w, "bad n", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.queries = append(h.queries, q)
	list := append([]hubSquid{}, h.squids[q.Get("kind")]...)
	h.mu.Unlock()
	list = list[:min(n, len(list))]
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"client": map[string]any{"site": q.Get("site"), "located": false},
		"kind": q.Get("kind"), "squids": list})
}

// set makes the hub answer queries for kind with squids, best first.
func (h *hub) set(kind string, squids ...hubSquid) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.squids[kind] = squids
}

// asked returns the queries the hub was asked.
func (h *hub) asked() []url.Values {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.queries)
}

func sq(name, addr string, load float64) hubSquid {
	return hubSquid{Name: name, Address: addr, Cost: load / 100, Load: load}
}

func addrs(l vmproto.SquidList) []string { return addresses(l.Proxies) }

func newCache(t *testing.T, cfg Config, c *clock) *Cache {
	t.Helper()
	cache, err := New(cfg, quietLog(), WithClock(c.Now))
	if err != nil {
		t.Fatal(err)
	}
	return cache
}

func TestRefreshAndServe(t *testing.T) {
	h := newHub(t)
	// What the hub answers site west: its local-only squid first, then the
	// global ones by load (east's local-only squid is not offered).
	h.set("cvmfs", sq("west", "10.0.0.3:3128", 0), sq("g1", "192.0.2.1:3128", 10), sq("g2", "192.0.2.2:3128", 20))
	h.set("frontier", sq("g2", "192.0.2.2:3128", 20))
	c := &clock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	cache := newCache(t, Config{HubURL: h.srv.URL, Site: "west"}, c)
	if err := cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(cache.Handler())
	defer srv.Close()
	var l vmproto.SquidList
	getJSON(t, srv.URL+"/v1/squids?kind=cvmfs&n=2", 200, &l)
	if !slices.Equal(addrs(l), []string{"10.0.0.3:3128", "192.0.2.1:3128"}) || l.Source != vmproto.SquidSourceHub || l.Stale || l.AgeSeconds != 0 {
		t.Errorf("cvmfs list %+v", l)
	}
	if l.Proxies[0].URL != "http://10.0.0.3:3128" || l.Proxies[0].Name != "west" {
		t.Errorf("proxy %+v", l.Proxies[0])
	}
	getJSON(t, srv.URL+"/v1/squids?kind=frontier", 200, &l)
	if !slices.Equal(addrs(l), []string{"192.0.2.2:3128"}) {
		t.Errorf("frontier list %v", addrs(l))
	}
	getJSON(t, srv.URL+"/v1/squids", 200, &l)
	if l.Kind != "cvmfs" || len(l.Proxies) != 3 {
		t.Errorf("default kind: %+v", l)
	}
	if got := cache.ProxyURLs("cvmfs", 1); !slices.Equal(got, []string{"http://10.0.0.3:3128"}) {
		t.Errorf("ProxyURLs %v", got)
	}
	var kinds []string
	for _, q := range h.asked() {
		kinds = append(kinds, q.Get("kind"))
		if q.Get("site") != "west" || q.Get("n") != "10" {
			t.Errorf("hub asked %v, want site=west n=10", q)
		}
	}
	if !slices.Equal(kinds, []string{"cvmfs", "frontier"}) {
		t.Errorf("hub asked for kinds %v", kinds)
	}
}

func getJSON(t *testing.T, u string, code int, v any) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %s %s", u, resp.Status, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", u, err, b)
		}
	}
	return string(b)
}

func TestHubDownKeepsLastGood(t *testing.T) {
	h := newHub(t)
	h.set("cvmfs", sq("g1", "192.0.2.1:3128", 10))
	c := &clock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	cache := newCache(t, Config{HubURL: h.srv.URL, Kinds: []string{"cvmfs"}}, c)
	if err := cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.srv.Close()
	c.Advance(5 * time.Minute)
	if err := cache.Refresh(context.Background()); err == nil {
		t.Fatal("no error with the hub down")
	}
	l, _ := cache.Get("cvmfs", 5)
	if !slices.Equal(addrs(l), []string{"192.0.2.1:3128"}) || l.AgeSeconds != 300 || l.Stale || l.LastError == "" {
		t.Fatalf("after 5 min without hub: %+v", l)
	}
	c.Advance(6 * time.Minute)
	l, _ = cache.Get("cvmfs", 5)
	if len(l.Proxies) != 1 || !l.Stale {
		t.Fatalf("after 11 min without hub: %+v", l)
	}
}

func TestEmptyAnswerDoesNotWipeAFreshList(t *testing.T) {
	h := newHub(t)
	h.set("cvmfs", sq("g1", "192.0.2.1:3128", 10))
	c := &clock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	cache := newCache(t, Config{HubURL: h.srv.URL, Kinds: []string{"cvmfs"}}, c)
	if err := cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.set("cvmfs") // the hub restarted and knows no squid yet
	c.Advance(time.Minute)
	if err := cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l, _ := cache.Get("cvmfs", 0); len(l.Proxies) != 1 {
		t.Fatalf("fresh list wiped by an empty answer: %+v", l)
	}
	c.Advance(10 * time.Minute)
	if err := cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l, _ := cache.Get("cvmfs", 0); len(l.Proxies) != 0 || l.Source != vmproto.SquidSourceHub {
		t.Fatalf("empty answer after the list went stale not taken: %+v", l)
	}
}

func TestStateFileAndFallback(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "squids.json")
	c := &clock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}

	// Never heard from the hub: the configured fallback.
	cfg := Config{HubURL: "http://127.0.0.1:1", Kinds: []string{"cvmfs"}, StateFile: state,
		Fallback: map[string][]string{"cvmfs": {"10.0.0.9:3128", "[2001:db8::9]:3128"}}}
	cache := newCache(t, cfg, c)
	if err := cache.Refresh(context.Background()); err == nil {
		t.Fatal("refresh against a closed port succeeded")
	}
	l, _ := cache.Get("cvmfs", 0)
	if l.Source != vmproto.SquidSourceFallback || !slices.Equal(addrs(l), []string{"10.0.0.9:3128", "[2001:db8::9]:3128"}) {
		t.Fatalf("fallback %+v", l)
	}
	if _, err := os.Stat(state); err == nil {
		t.Fatal("fallback written to the state file")
	}

	// A good answer replaces the fallback and is saved.
	h := newHub(t)
	h.set("cvmfs", sq("g1", "192.0.2.1:3128", 10))
	cfg.HubURL = h.srv.URL
	cache = newCache(t, cfg, c)
	if err := cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A restarted agent with the hub down serves the saved list.
	h.srv.Close()
	c.Advance(2 * time.Minute)
	cache = newCache(t, cfg, c)
	_ = cache.Refresh(context.Background())
	l, _ = cache.Get("cvmfs", 0)
	if l.Source != vmproto.SquidSourceStateFile || !slices.Equal(addrs(l), []string{"192.0.2.1:3128"}) || l.AgeSeconds != 120 {
		t.Fatalf("after restart: %+v", l)
	}

	// A damaged state file is ignored, not fatal.
	for _, bad := range []string{
		`{"kinds":{"cvmfs":{"proxies":[{"address":"x;rm -rf /:1"}]}}}`,
		`{"kinds":{"cvmfs":{"proxies":[{"address":"192.0.2.1:3128","load":-3}]}}}`,
	} {
		if err := os.WriteFile(state, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		cache = newCache(t, cfg, c)
		if l, _ := cache.Get("cvmfs", 0); l.Source != vmproto.SquidSourceFallback {
			t.Fatalf("damaged state file %s used: %+v", bad, l)
		}
	}
}

func TestPush(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	cache := newCache(t, Config{}, c)
	if err := cache.Push("frontier", []vmproto.SquidProxy{{Name: "f", Address: "192.0.2.7:3128", Cost: 0.3}}, c.Now()); err != nil {
		t.Fatal(err)
	}
	l, _ := cache.Get("frontier", 0)
	if l.Source != vmproto.SquidSourcePush || len(l.Proxies) != 1 || l.Proxies[0].URL != "http://192.0.2.7:3128" || l.Proxies[0].Cost != 0.3 {
		t.Errorf("pushed %+v", l)
	}
	for _, bad := range []struct {
		kind string
		ps   []vmproto.SquidProxy
	}{
		{"ftp", nil},
		{"cvmfs", []vmproto.SquidProxy{{Address: "192.0.2.7"}}},
		{"cvmfs", []vmproto.SquidProxy{{Address: "a\"b:3128"}}},
		{"cvmfs", []vmproto.SquidProxy{{Address: "192.0.2.7:3128", Load: math.NaN()}}},
		{"cvmfs", []vmproto.SquidProxy{{Address: "192.0.2.7:3128", Cost: math.Inf(1)}}},
		{"cvmfs", []vmproto.SquidProxy{{Address: "192.0.2.7:3128", DistanceKm: -5}}},
	} {
		if err := cache.Push(bad.kind, bad.ps, c.Now()); err == nil {
			t.Errorf("push %v accepted", bad)
		}
	}
}

func TestHandlerErrors(t *testing.T) {
	cache := newCache(t, Config{}, &clock{})
	srv := httptest.NewServer(cache.Handler())
	defer srv.Close()
	if b := getJSON(t, srv.URL+"/v1/squids?kind=ftp", 404, nil); !strings.Contains(b, "no squid list for kind") {
		t.Errorf("unknown kind: %s", b)
	}
	if b := getJSON(t, srv.URL+"/v1/squids?n=0", 400, nil); !strings.Contains(b, "n=") {
		t.Errorf("bad n: %s", b)
	}
	var l vmproto.SquidList
	getJSON(t, srv.URL+"/v1/squids?kind=frontier", 200, &l)
	if l.Proxies == nil || len(l.Proxies) != 0 || l.Source != "" {
		t.Errorf("empty list %+v", l)
	}
}

func TestNewErrors(t *testing.T) {
	for _, cfg := range []Config{
		{HubURL: "ftp://hub"},
		{N: 1000},
		{Kinds: []string{"cv mfs"}},
		{Fallback: map[string][]string{"cvmfs": {"nohost"}}},
		{Kinds: []string{"cvmfs"}, Fallback: map[string][]string{"frontier": {"10.0.0.1:3128"}}},
	} {
		if _, err := New(cfg, quietLog()); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

func TestDecodeHubAnswer(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		wantErr  string
	}{
		{"good", `{"client":{},"squids":[{"name":"a","address":"192.0.2.1:3128","cost":0.1},{"address":"[2001:db8::1]:8000"}]}`,
			[]string{"192.0.2.1:3128", "[2001:db8::1]:8000"}, ""},
		{"empty", `{"squids":[]}`, []string{}, ""},
		{"no squids field", `{"error":"x"}`, nil, "no squids field"},
		{"injection", `{"squids":[{"address":"a;DIRECT|b:3128"}]}`, nil, "bad host"},
		{"bad port", `{"squids":[{"address":"192.0.2.1:99999"}]}`, nil, "bad port"},
		{"no port", `{"squids":[{"address":"192.0.2.1"}]}`, nil, "missing port"},
		{"bad name", `{"squids":[{"name":"a b","address":"192.0.2.1:3128"}]}`, nil, "name"},
		{"not json", `<html>`, nil, "hub answer"},
		{"negative load", `{"squids":[{"address":"192.0.2.1:3128","load":-1}]}`, nil, "load is -1"},
		{"negative cost", `{"squids":[{"address":"192.0.2.1:3128","cost":-0.5}]}`, nil, "cost is -0.5"},
		{"cost beyond float64", `{"squids":[{"address":"192.0.2.1:3128","cost":1e400}]}`, nil, "hub answer"},
		{"too many", `{"squids":[` + strings.TrimSuffix(strings.Repeat(`{"address":"192.0.2.1:3128"},`, 51), ",") + `]}`, nil, "limit 50"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := DecodeHubAnswer([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := addresses(ps); !slices.Equal(got, tt.want) {
				t.Errorf("got %v", got)
			}
		})
	}
}

// TestDecodeDocumentedHubAnswer reads the hub's documented answer to GET
// squidreg.PathNearest (hub/squid checks its real answer against the same
// file).
func TestDecodeDocumentedHubAnswer(t *testing.T) {
	b, err := os.ReadFile("../../protocol/squidreg/testdata/nearest-answer.json")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := DecodeHubAnswer(b)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
		if p.URL != "http://"+p.Address || p.Cost < 0 {
			t.Errorf("proxy %+v", p)
		}
	}
	if !slices.Equal(names, []string{"west", "g1", "g2"}) ||
		!slices.Equal(addresses(ps), []string{"10.0.0.3:3128", "192.0.2.1:3128", "192.0.2.2:3128"}) {
		t.Fatalf("decoded %+v", ps)
	}
	if ps[1].Load != 10 || ps[1].DistanceKm != -1 || !(ps[0].Cost < ps[1].Cost && ps[1].Cost < ps[2].Cost) {
		t.Errorf("ranking figures %+v", ps)
	}
}

// safe reports whether s can go into a CVMFS_HTTP_PROXY line or a PAC file
// as it is.
func safe(s string) bool { return !strings.ContainsAny(s, " ;|\"'\\\n\t") }

func FuzzDecodeHubAnswer(f *testing.F) {
	f.Add([]byte(`{"squids":[{"name":"a","address":"192.0.2.1:3128","cost":0.1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := DecodeHubAnswer(b)
		if err != nil {
			return
		}
		for _, p := range ps {
			if err := p.Validate(); err != nil {
				t.Fatalf("decoded an invalid proxy: %v", err)
			}
			if !safe(p.Address) || !safe(p.URL) || !safe(p.Name) || p.URL != "http://"+p.Address {
				t.Fatalf("unsafe proxy %+v", p)
			}
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"kinds":{"cvmfs":{"proxies":[{"address":"192.0.2.1:3128","url":"http://192.0.2.1:3128"}],"fetched_at":"2026-11-22T12:00:00Z"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeState(b)
		if err != nil {
			return
		}
		for k, sk := range m {
			if !validToken(k) {
				t.Fatalf("kind %q", k)
			}
			for _, p := range sk.Proxies {
				if err := p.Validate(); err != nil {
					t.Fatalf("decoded an invalid proxy: %v", err)
				}
				if !safe(p.Address) || p.URL != "http://"+p.Address {
					t.Fatalf("unsafe proxy %+v", p)
				}
			}
		}
	})
}
