// Package squidtest builds what tests and load runs of squid discovery
// need: GeoIP2 City databases with chosen locations (reserved ranges such as
// 127/8 and 10/8 included), synthetic squid fleets, and an in-process
// forward proxy that behaves like squid on the points discovery cares about
// (Via, X-Cache, X-Squid-Error on upstream failures).
package squidtest

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// Place puts a network at a location in a test GeoIP database.
type Place struct {
	Network string // CIDR, e.g. 10.1.0.0/16
	Lat     float64
	Lon     float64
	City    string
}

var languages = []string{"de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"}

// names makes a localized names map like a real GeoIP2 record's.
func names(s string) mmdbtype.Map {
	m := mmdbtype.Map{}
	for _, l := range languages {
		m[mmdbtype.String(l)] = mmdbtype.String(s)
	}
	return m
}

// GeoDB builds a GeoIP2-City database holding places. Records carry what a
// real City record carries (names in eight languages, country, continent,
// subdivision, location), so lookups cost what they cost in production.
func GeoDB(places []Place) ([]byte, error) {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "GeoIP2-City",
		Languages:               languages,
		IncludeReservedNetworks: true,
		RecordSize:              28,
	})
	if err != nil {
		return nil, fmt.Errorf("new mmdb tree: %w", err)
	}
	for _, p := range places {
		_, n, err := net.ParseCIDR(p.Network)
		if err != nil {
			return nil, fmt.Errorf("place %q: %w", p.Network, err)
		}
		city := p.City
		if city == "" {
			city = "City " + p.Network
		}
		rec := mmdbtype.Map{
			"city":      mmdbtype.Map{"geoname_id": mmdbtype.Uint32(5913490), "names": names(city)},
			"continent": mmdbtype.Map{"code": mmdbtype.String("NA"), "geoname_id": mmdbtype.Uint32(6255149), "names": names("North America")},
			"country": mmdbtype.Map{"geoname_id": mmdbtype.Uint32(6251999), "iso_code": mmdbtype.String("CA"),
				"names": names("Canada")},
			"registered_country": mmdbtype.Map{"geoname_id": mmdbtype.Uint32(6251999), "iso_code": mmdbtype.String("CA"),
				"names": names("Canada")},
			"subdivisions": mmdbtype.Slice{mmdbtype.Map{"geoname_id": mmdbtype.Uint32(5909050),
				"iso_code": mmdbtype.String("BC"), "names": names("British Columbia")}},
			"location": mmdbtype.Map{"accuracy_radius": mmdbtype.Uint16(20), "latitude": mmdbtype.Float64(p.Lat),
				"longitude": mmdbtype.Float64(p.Lon), "time_zone": mmdbtype.String("America/Vancouver")},
			"postal": mmdbtype.Map{"code": mmdbtype.String("V8W")},
		}
		if err := tree.Insert(n, rec); err != nil {
			return nil, fmt.Errorf("insert %s: %w", p.Network, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("write mmdb: %w", err)
	}
	return buf.Bytes(), nil
}

// Fleet is a synthetic set of squids and the clients around them.
type Fleet struct {
	Squids []squidreg.Registration
	// Places locate every squid's /24 and every client network.
	Places []Place
	// Clients are client addresses that the database locates.
	Clients []netip.Addr
}

// NewFleet makes n squids at random places on Earth (10.a.b.1, one /24
// each), a third of them cvmfs-only, a third frontier-only, a third both;
// 80% global, 10% same-domain, 10% local-only, spread over 50 sites in 10
// domains, with loads from 0 to their max. clients client addresses sit in
// 11.0.0.0/8 networks at other random places. The same seed gives the same
// fleet.
func NewFleet(n, clients int, seed uint64) Fleet {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	randPlace := func() (float64, float64) {
		// Uniform on the sphere.
		lat := math.Asin(2*rng.Float64()-1) * 180 / math.Pi
		return lat, rng.Float64()*360 - 180
	}
	var f Fleet
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		lat, lon := randPlace()
		f.Places = append(f.Places, Place{Network: fmt.Sprintf("10.%d.%d.0/24", byte(i>>8), byte(i)), Lat: lat, Lon: lon})
		site := "site" + strconv.Itoa(i%50)
		reg := squidreg.Registration{Name: "squid-" + strconv.Itoa(i), Host: ip.String(), Port: 3128,
			Site: site, Domain: "domain" + strconv.Itoa(i%10) + ".example.org",
			Load: rng.Float64() * squidreg.DefaultMaxLoad, MaxLoad: squidreg.DefaultMaxLoad}
		switch i % 3 {
		case 0:
			reg.Kinds = []squidreg.Kind{squidreg.KindCVMFS}
		case 1:
			reg.Kinds = []squidreg.Kind{squidreg.KindFrontier}
		default:
			reg.Kinds = []squidreg.Kind{squidreg.KindCVMFS, squidreg.KindFrontier}
		}
		switch i % 10 {
		case 8:
			reg.Access = squidreg.AccessSameDomain
		case 9:
			reg.Access = squidreg.AccessLocalOnly
		default:
			reg.Access = squidreg.AccessGlobal
		}
		f.Squids = append(f.Squids, reg)
	}
	for i := range clients {
		lat, lon := randPlace()
		f.Places = append(f.Places, Place{Network: fmt.Sprintf("11.%d.%d.0/24", byte(i>>8), byte(i)), Lat: lat, Lon: lon})
		f.Clients = append(f.Clients, netip.AddrFrom4([4]byte{11, byte(i >> 8), byte(i), 7}))
	}
	return f
}

// Proxy is an in-process HTTP forward proxy for unit tests. It forwards
// absolute-form GETs, adds Via and X-Cache headers as squid does, and
// answers upstream failures with squid's 503 + X-Squid-Error.
type Proxy struct {
	srv *httptest.Server
	// Requests counts proxied requests.
	Requests atomic.Int64

	mu     sync.Mutex
	deny   bool
	delay  time.Duration
	noVia  bool
	broken bool
	client *http.Client
}

// NewProxy starts a proxy on 127.0.0.1.
func NewProxy() *Proxy {
	p := &Proxy{client: &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		Timeout: 5 * time.Second}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.srv.Listener.Addr().String() }

// HostPort splits Addr.
func (p *Proxy) HostPort() (string, int) {
	ap := netip.MustParseAddrPort(p.Addr())
	return ap.Addr().String(), int(ap.Port())
}

// Close stops the proxy; it refuses connections from then on.
func (p *Proxy) Close() { p.srv.Close() }

// Deny makes the proxy answer 403 ERR_ACCESS_DENIED, as squid does for a
// client its ACLs refuse.
func (p *Proxy) Deny(on bool) { p.mu.Lock(); p.deny = on; p.mu.Unlock() }

// Delay makes the proxy wait d before answering.
func (p *Proxy) Delay(d time.Duration) { p.mu.Lock(); p.delay = d; p.mu.Unlock() }

// BreakUpstream makes the proxy fail every fetch from an origin with 503
// ERR_CONNECT_FAIL, as a squid whose way out is broken does.
func (p *Proxy) BreakUpstream(on bool) { p.mu.Lock(); p.broken = on; p.mu.Unlock() }

// NotAProxy makes it answer like a plain web server (no proxy headers).
func (p *Proxy) NotAProxy(on bool) { p.mu.Lock(); p.noVia = on; p.mu.Unlock() }

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	deny, delay, noVia, broken := p.deny, p.delay, p.noVia, p.broken
	p.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if noVia {
		http.Error(w, "not a proxy", http.StatusNotFound)
		return
	}
	w.Header().Set("Via", "1.1 squidtest (squid/5.7)")
	if deny {
		w.Header().Set("X-Squid-Error", "ERR_ACCESS_DENIED 0")
		w.Header().Set("X-Cache", "MISS from squidtest")
		http.Error(w, "access denied", http.StatusForbidden)
		return
	}
	if !r.URL.IsAbs() && r.URL.Path == squidreg.CountersPath {
		// The cache manager: kbytes_out grows by 10 KB per proxied request.
		_, _ = fmt.Fprintf(w, "sample_time = 1795361072.100892 (Sun, 22 Nov 2026 15:24:32 GMT)\n"+
			"client_http.requests = %d\nclient_http.kbytes_out = %d\n", p.Requests.Load(), 10*p.Requests.Load())
		return
	}
	if !r.URL.IsAbs() {
		w.Header().Set("X-Squid-Error", "ERR_INVALID_URL 0")
		http.Error(w, "invalid URL", http.StatusBadRequest)
		return
	}
	p.Requests.Add(1)
	out, err := http.NewRequestWithContext(r.Context(), r.Method, r.URL.String(), nil)
	if err != nil {
		w.Header().Set("X-Squid-Error", "ERR_INVALID_URL 0")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := p.client.Do(out)
	if err == nil && broken {
		resp.Body.Close()
		err = fmt.Errorf("upstream broken")
	}
	if err != nil {
		w.Header().Set("X-Squid-Error", "ERR_CONNECT_FAIL 111")
		w.Header().Set("X-Cache", "MISS from squidtest")
		http.Error(w, "connection to origin failed", http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("X-Cache", "MISS from squidtest")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
