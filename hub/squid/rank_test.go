package squid_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newRegistry(t testing.TB, cfg squid.Config, loc *squid.Locator, c *clock) *squid.Registry {
	t.Helper()
	r, err := squid.New(cfg, loc, quietLog(), squid.WithClock(c.Now))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func f64(v float64) *float64 { return &v }

// locator builds a test GeoIP database of places and opens it.
func locator(places ...squidtest.Place) (*squid.Locator, error) {
	b, err := squidtest.GeoDB(places)
	if err != nil {
		return nil, err
	}
	return squid.LocatorFromBytes(b)
}

func reg(name string, lat, lon, load float64, access squidreg.Access, kinds ...squidreg.Kind) squidreg.Registration {
	if len(kinds) == 0 {
		kinds = []squidreg.Kind{squidreg.KindCVMFS}
	}
	return squidreg.Registration{Name: name, Host: "192.0.2.1", Port: 3128, Kinds: kinds, Access: access,
		Latitude: f64(lat), Longitude: f64(lon), Load: load, MaxLoad: 100}
}

func names(cs []squid.Candidate) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// clientDB locates 198.51.100.0/24 at (0, 0).
func clientDB(t testing.TB) *squid.Locator {
	t.Helper()
	loc, err := locator(squidtest.Place{Network: "198.51.100.0/24", Lat: 0, Lon: 0})
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

var client = netip.MustParseAddr("198.51.100.9")

func TestRankCost(t *testing.T) {
	r := newRegistry(t, squid.Config{}, clientDB(t), newClock())
	for _, g := range []squidreg.Registration{
		reg("quarter-idle", 0, 90, 0, squidreg.AccessGlobal),   // 0.5·(1/2) + 0 = 0.25
		reg("here-full", 0, 0, 100, squidreg.AccessGlobal),     // 0 + 0.5·1 = 0.5
		reg("here-half", 0, 0, 50, squidreg.AccessGlobal),      // 0 + 0.5·0.5 = 0.25 (ties after quarter-idle? no: sorted by load term)
		reg("antipode-idle", 0, 180, 0, squidreg.AccessGlobal), // 0.5 + 0 = 0.5
	} {
		if err := r.Register(g, "test"); err != nil {
			t.Fatal(err)
		}
	}
	a := r.Nearest(squid.Query{Addr: client, N: 10})
	if !a.Client.Located || a.Client.IP != "198.51.100.9" {
		t.Fatalf("client %+v", a.Client)
	}
	want := []struct {
		name string
		cost float64
		km   float64
	}{
		{"quarter-idle", 0.25, math.Pi / 2 * squid.EarthRadiusKm},
		{"here-half", 0.25, 0},
		{"antipode-idle", 0.5, math.Pi * squid.EarthRadiusKm},
		{"here-full", 0.5, 0},
	}
	if len(a.Squids) != len(want) {
		t.Fatalf("got %v", names(a.Squids))
	}
	for i, w := range want {
		got := a.Squids[i]
		if got.Name != w.name || math.Abs(got.Cost-w.cost) > 1e-9 || math.Abs(got.DistanceKm-w.km) > 1e-6 {
			t.Errorf("#%d: got %s cost %.6f km %.3f, want %s cost %.6f km %.3f", i, got.Name, got.Cost, got.DistanceKm, w.name, w.cost, w.km)
		}
	}
	// Ties keep load order, then name order.
	if got := names(r.Nearest(squid.Query{Addr: client, N: 1}).Squids); !slices.Equal(got, []string{"quarter-idle"}) {
		t.Errorf("n=1: %v", got)
	}
}

func TestRankWeightAndExponent(t *testing.T) {
	r := newRegistry(t, squid.Config{DistanceWeight: 0.25, LoadExponent: 2}, clientDB(t), newClock())
	for _, g := range []squidreg.Registration{reg("far", 0, 90, 0, squidreg.AccessGlobal), reg("near", 0, 0, 50, squidreg.AccessGlobal)} {
		if err := r.Register(g, "test"); err != nil {
			t.Fatal(err)
		}
	}
	a := r.Nearest(squid.Query{Addr: client, N: 2})
	// far: 0.25·0.5 = 0.125; near: 0.75·0.5² = 0.1875.
	if got := names(a.Squids); !slices.Equal(got, []string{"far", "near"}) {
		t.Fatalf("order %v", got)
	}
	if math.Abs(a.Squids[0].Cost-0.125) > 1e-9 || math.Abs(a.Squids[1].Cost-0.1875) > 1e-9 {
		t.Errorf("costs %v %v", a.Squids[0].Cost, a.Squids[1].Cost)
	}
}

func TestAccessLevels(t *testing.T) {
	r := newRegistry(t, squid.Config{}, clientDB(t), newClock())
	g := reg("global", 0, 1, 0, squidreg.AccessGlobal)
	d := reg("domain", 0, 1, 0, squidreg.AccessSameDomain)
	d.Domain = "example.org"
	d.Site = "west"
	l := reg("local", 0, 1, 0, squidreg.AccessLocalOnly)
	l.Site = "east"
	if err := r.ReplaceSource("test", []squidreg.Registration{g, d, l}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		site, domain string
		want         []string
	}{
		{"", "", []string{"global"}},
		{"", "example.org", []string{"domain", "global"}},
		{"", "cs.example.org", []string{"domain", "global"}},
		{"", "badexample.org", []string{"global"}},
		{"", "org", []string{"global"}},
		{"west", "", []string{"domain", "global"}}, // the domain squid's own site
		{"east", "", []string{"global", "local"}},  // same site: distance 0 for local
		{"east", "example.org", []string{"domain", "global", "local"}},
		{"north", "other.net", []string{"global"}},
	}
	for _, tt := range tests {
		t.Run(tt.site+"/"+tt.domain, func(t *testing.T) {
			got := names(r.Nearest(squid.Query{Addr: client, Site: tt.site, Domain: tt.domain, N: 10}).Squids)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSameSiteAndUnlocated(t *testing.T) {
	r := newRegistry(t, squid.Config{}, clientDB(t), newClock())
	far := reg("far-site-squid", 0, 180, 10, squidreg.AccessGlobal)
	far.Site = "east"
	near := reg("near", 0, 0, 10, squidreg.AccessGlobal)
	nowhere := squidreg.Registration{Name: "nowhere", Host: "203.0.113.5", Port: 3128, Kinds: []squidreg.Kind{squidreg.KindCVMFS},
		Access: squidreg.AccessGlobal, Load: 0, MaxLoad: 100} // not in the database
	if err := r.ReplaceSource("test", []squidreg.Registration{far, near, nowhere}); err != nil {
		t.Fatal(err)
	}
	// A client of site east is at distance 0 from east's squid, whatever GeoIP says.
	a := r.Nearest(squid.Query{Addr: client, Site: "east", N: 3})
	if got := names(a.Squids); !slices.Equal(got, []string{"far-site-squid", "near", "nowhere"}) {
		t.Errorf("east client: %v", got)
	}
	if a.Squids[0].DistanceKm != 0 || a.Squids[2].DistanceKm != -1 || math.Abs(a.Squids[2].Cost-0.5) > 1e-9 {
		t.Errorf("distances %v %v cost %v", a.Squids[0].DistanceKm, a.Squids[2].DistanceKm, a.Squids[2].Cost)
	}
	// A client GeoIP does not know ranks by load alone, unknown distance everywhere.
	a = r.Nearest(squid.Query{Addr: netip.MustParseAddr("203.0.113.77"), N: 3})
	if a.Client.Located {
		t.Fatal("client located")
	}
	if got := names(a.Squids); !slices.Equal(got, []string{"nowhere", "far-site-squid", "near"}) {
		t.Errorf("unlocated client: %v", got)
	}
	for _, c := range a.Squids {
		if c.DistanceKm != -1 {
			t.Errorf("%s distance %v, want -1", c.Name, c.DistanceKm)
		}
	}
}

func TestKindFilter(t *testing.T) {
	r := newRegistry(t, squid.Config{}, clientDB(t), newClock())
	if err := r.ReplaceSource("test", []squidreg.Registration{
		reg("c", 0, 1, 0, squidreg.AccessGlobal, squidreg.KindCVMFS),
		reg("f", 0, 1, 0, squidreg.AccessGlobal, squidreg.KindFrontier),
		reg("cf", 0, 1, 0, squidreg.AccessGlobal, squidreg.KindCVMFS, squidreg.KindFrontier),
	}); err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[squidreg.Kind][]string{"": {"c", "cf", "f"}, squidreg.KindCVMFS: {"c", "cf"}, squidreg.KindFrontier: {"cf", "f"}} {
		got := names(r.Nearest(squid.Query{Addr: client, Kind: kind, N: 5}).Squids)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("kind %q: %v, want %v", kind, got, want)
		}
	}
}

// TestRankMatchesBruteForce checks the pruned, vector-based ranking
// against a plain evaluation of shoal's formula with the haversine formula.
func TestRankMatchesBruteForce(t *testing.T) {
	f := squidtest.NewFleet(300, 200, 7)
	loc, err := locator(f.Places...)
	if err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, squid.Config{}, loc, newClock())
	if err := r.ReplaceSource("fleet", f.Squids); err != nil {
		t.Fatal(err)
	}
	squidLoc := map[string]squid.Location{}
	for _, s := range f.Squids {
		l, ok := loc.Locate(netip.MustParseAddr(s.Host))
		if !ok {
			t.Fatalf("%s not located", s.Name)
		}
		squidLoc[s.Name] = l
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, c := range f.Clients {
		q := squid.Query{Addr: c, N: 1 + rng.IntN(12), Kind: []squidreg.Kind{"", squidreg.KindCVMFS, squidreg.KindFrontier}[i%3]}
		if i%4 == 0 {
			q.Site = fmt.Sprintf("site%d", rng.IntN(50))
			q.Domain = fmt.Sprintf("domain%d.example.org", rng.IntN(10))
		}
		cl, _ := loc.Locate(c)
		type scored struct {
			name string
			cost float64
		}
		var all []scored
		for _, s := range f.Squids {
			if q.Kind != "" && !slices.Contains(s.Kinds, q.Kind) {
				continue
			}
			switch s.Access {
			case squidreg.AccessLocalOnly:
				if q.Site != s.Site {
					continue
				}
			case squidreg.AccessSameDomain:
				if q.Site != s.Site && q.Domain != s.Domain {
					continue
				}
			}
			d := squid.Haversine(cl, squidLoc[s.Name])
			if q.Site != "" && q.Site == s.Site {
				d = 0
			}
			all = append(all, scored{s.Name, 0.5*d/(math.Pi*squid.EarthRadiusKm) + 0.5*s.Load/s.MaxLoad})
		}
		slices.SortFunc(all, func(a, b scored) int { return cmpFloat(a.cost, b.cost) })
		got := r.Nearest(q).Squids
		if len(got) != min(q.N, len(all)) {
			t.Fatalf("client %d: %d squids, want %d", i, len(got), min(q.N, len(all)))
		}
		for j := range got {
			if got[j].Name != all[j].name || math.Abs(got[j].Cost-all[j].cost) > 1e-9 {
				t.Fatalf("client %d (%+v) #%d: got %s %.9f, want %s %.9f", i, q, j, got[j].Name, got[j].Cost, all[j].name, all[j].cost)
			}
		}
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestExpiry(t *testing.T) {
	c := newClock()
	r := newRegistry(t, squid.Config{}, clientDB(t), c)
	if err := r.Register(reg("a", 0, 0, 0, squidreg.AccessGlobal), "advertised"); err != nil {
		t.Fatal(err)
	}
	offered := func() []string { return names(r.Nearest(squid.Query{Addr: client, N: 5}).Squids) }
	if got := offered(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("fresh: %v", got)
	}
	c.Advance(179 * time.Second)
	if got := offered(); len(got) != 1 {
		t.Fatalf("after 179 s: %v", got)
	}
	if err := r.Register(reg("a", 0, 0, 0, squidreg.AccessGlobal), "advertised"); err != nil {
		t.Fatal(err)
	}
	c.Advance(179 * time.Second)
	if got := offered(); len(got) != 1 {
		t.Fatalf("179 s after a re-registration: %v", got)
	}
	c.Advance(2 * time.Second)
	if got := offered(); len(got) != 0 {
		t.Fatalf("181 s silent: still offered %v", got)
	}
	if st := r.Squids(); len(st) != 1 || st[0].Offered {
		t.Fatalf("status %+v", st)
	}
	if gone := r.Sweep(); !slices.Equal(gone, []string{"a"}) || len(r.Squids()) != 0 {
		t.Fatalf("sweep removed %v, left %d", gone, len(r.Squids()))
	}
}

func TestReplaceSource(t *testing.T) {
	r := newRegistry(t, squid.Config{}, clientDB(t), newClock())
	bad := reg("bad", 0, 0, 0, "public")
	if err := r.ReplaceSource("agent:west", []squidreg.Registration{reg("a", 0, 0, 0, squidreg.AccessGlobal), reg("b", 0, 0, 0, squidreg.AccessGlobal), bad}); err == nil {
		t.Fatal("invalid registration accepted")
	}
	if err := r.Register(reg("c", 0, 0, 0, squidreg.AccessGlobal), "advertised"); err != nil {
		t.Fatal(err)
	}
	if err := r.ReplaceSource("agent:west", []squidreg.Registration{reg("b", 0, 0, 0, squidreg.AccessGlobal)}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range r.Squids() {
		got = append(got, s.Name+"@"+s.Source)
	}
	if !slices.Equal(got, []string{"b@agent:west", "c@advertised"}) {
		t.Errorf("squids %v", got)
	}
	if !r.Remove("c") || r.Remove("c") {
		t.Error("Remove")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
