//go:build integration

package squid_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// Real squids (Debian's squid 5.7) on 127.0.0.1, brought up by
// deploy/testbed/squid/up.sh, on ports below the ephemeral range (an
// outgoing connection elsewhere could hold a port above it). portBroken has no way to any origin: every
// fetch goes to a parent on 127.0.0.1:9, where nothing listens.
const (
	portA      = 24131
	portB      = 24132
	portBroken = 24133
)

var (
	bed       = squidtest.Testbed{Base: "/run/canopy-squid-testbed/hub-squid"}
	liveMu    sync.Mutex
	live      map[int]squidtest.Instance
	startedUs = map[int]bool{}
)

func TestMain(m *testing.M) {
	if err := bed.WriteExtraConf(portBroken, "cache_peer 127.0.0.1 parent 9 0 no-query no-digest no-netdb-exchange\nnever_direct allow all\n"); err != nil {
		fmt.Fprintln(os.Stderr, "squid test bed:", err)
		os.Exit(1)
	}
	inst, err := bed.Up(portA, portB, portBroken)
	live = inst
	for p, i := range inst {
		startedUs[p] = i.Started
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "squid test bed:", err)
	} else {
		code = m.Run()
	}
	var stop []int
	for p, started := range startedUs {
		if started {
			stop = append(stop, p)
		}
	}
	if len(stop) > 0 {
		if err := bed.Down(stop...); err != nil {
			fmt.Fprintln(os.Stderr, "squid test bed:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// liveOrigin serves a CVMFS whitelist and /data/<name> blobs of 256 KiB,
// cacheable for ten minutes, and counts the requests that reach it.
type liveOrigin struct {
	*httptest.Server
	hits atomic.Int64
}

func newLiveOrigin(t *testing.T) *liveOrigin {
	t.Helper()
	o := &liveOrigin{}
	blob := strings.Repeat("canopy", 256<<10/6)
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Last-Modified", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat))
		switch {
		case r.URL.Path == "/cvmfs/atlas.cern.ch/.cvmfswhitelist":
			_, _ = io.WriteString(w, "20261122120000\nE20261222120000\nNatlas.cern.ch\n")
		case strings.HasPrefix(r.URL.Path, "/data/"):
			_, _ = io.WriteString(w, blob)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *liveOrigin) probeURL() string { return o.URL + "/cvmfs/atlas.cern.ch/.cvmfswhitelist" }

func liveReg(port int, name string) squidreg.Registration {
	return squidreg.Registration{Name: name, Host: "127.0.0.1", Port: port, Kinds: []squidreg.Kind{squidreg.KindCVMFS},
		Access: squidreg.AccessGlobal, CacheManager: true, Latitude: f64(46.2), Longitude: f64(6.1)}
}

func liveRegistry(t *testing.T, probe string, regs ...squidreg.Registration) *squid.Registry {
	t.Helper()
	r, err := squid.New(squid.Config{VerifyTimeout: 5 * time.Second, VerifyConcurrency: 4,
		Probes: map[squidreg.Kind]squid.Probe{squidreg.KindCVMFS: {URL: probe, Expect: "Natlas.cern.ch"}}}, nil, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReplaceSource("integration", regs); err != nil {
		t.Fatal(err)
	}
	return r
}

func nonce(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// getVia GETs u through the proxy at addr and returns the X-Cache header.
func getVia(t *testing.T, addr, u string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, "http://"+addr))}}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("X-Cache")
}

func TestLiveVerifyHitAndLoad(t *testing.T) {
	o := newLiveOrigin(t)
	r := liveRegistry(t, o.probeURL(), liveReg(portA, "a"), liveReg(portB, "b"))
	r.VerifyAll(context.Background())
	if st := states(r); st["a"] != squidreg.StateVerified || st["b"] != squidreg.StateVerified {
		t.Fatalf("states %v: %+v", st, r.Squids())
	}
	if got := offered(r); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("offered %v", got)
	}

	// The second GET of the same object through a squid is a hit.
	u := o.URL + "/data/" + nonce(t)
	before := o.hits.Load()
	code, xc := getVia(t, live[portA].Addr(), u)
	if code != 200 || !strings.HasPrefix(xc, "MISS") {
		t.Fatalf("first GET: %d X-Cache %q", code, xc)
	}
	code, xc = getVia(t, live[portA].Addr(), u)
	if code != 200 || !strings.HasPrefix(xc, fmt.Sprintf("HIT from canopy-squid-%d", portA)) {
		t.Fatalf("second GET: %d X-Cache %q", code, xc)
	}
	if n := o.hits.Load() - before; n != 1 {
		t.Errorf("origin saw %d requests for two GETs, want 1", n)
	}
	path := strings.TrimPrefix(u, "http://")
	deadline := time.Now().Add(10 * time.Second)
	for {
		log, err := live[portA].AccessLog()
		if err != nil {
			t.Fatal(err)
		}
		if hitLogged(log, path) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TCP_HIT/TCP_MEM_HIT for %s in access.log:\n%s", path, tail(log, 5))
		}
		waitABit()
	}

	// The load comes from squid's own counters once two readings, with
	// traffic between them, exist.
	deadline = time.Now().Add(20 * time.Second)
	for {
		getVia(t, live[portA].Addr(), u)
		r.VerifyAll(context.Background())
		st := r.Squids()[0]
		if st.LoadSource == "cache-manager" && st.Load > 0 {
			t.Logf("squid a: %.1f KB/s measured from its cache manager", st.Load)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("load not measured: %+v", st)
		}
		waitABit()
	}
}

func hitLogged(log, path string) bool {
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, path) && (strings.Contains(line, "TCP_MEM_HIT/200") || strings.Contains(line, "TCP_HIT/200")) {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func TestLiveStoppedSquidDropsOut(t *testing.T) {
	o := newLiveOrigin(t)
	r := liveRegistry(t, o.probeURL(), liveReg(portA, "a"), liveReg(portB, "b"))
	r.VerifyAll(context.Background())
	if got := offered(r); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("offered %v: %+v", got, r.Squids())
	}
	if err := bed.Down(portB); err != nil {
		t.Fatal(err)
	}
	defer func() {
		inst, err := bed.Up(portB)
		if err != nil {
			t.Fatal(err)
		}
		liveMu.Lock()
		live[portB] = inst[portB]
		startedUs[portB] = startedUs[portB] || inst[portB].Started
		liveMu.Unlock()
	}()
	r.VerifyAll(context.Background())
	if got := offered(r); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after stopping b: offered %v", got)
	}
	st := states(r)
	if st["b"] != squidreg.StateFailed {
		t.Fatalf("b: %s", st["b"])
	}
	if ans := r.Nearest(squid.Query{Kind: squidreg.KindCVMFS, N: 5}); len(ans.Squids) != 1 || ans.Squids[0].Address != live[portA].Addr() {
		t.Fatalf("nearest %+v", ans.Squids)
	}
	for _, s := range r.Squids() {
		if s.Name == "b" && !strings.Contains(s.LastError, "connection refused") {
			t.Errorf("b's error %q", s.LastError)
		}
	}

	// Back up: verified and offered again.
	inst, err := bed.Up(portB)
	if err != nil {
		t.Fatal(err)
	}
	liveMu.Lock()
	startedUs[portB] = startedUs[portB] || inst[portB].Started
	liveMu.Unlock()
	r.VerifyAll(context.Background())
	if got := offered(r); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after restarting b: offered %v", got)
	}
}

// TestLiveDeadOrigin: squid answers 503 (X-Squid-Error: ERR_CONNECT_FAIL)
// when the origin is down. With no squid able to fetch the probe, the
// origin is to blame: the squids stay offered, marked origin-down.
func TestLiveDeadOrigin(t *testing.T) {
	dead := deadURL(t)
	code, _ := getVia(t, live[portA].Addr(), dead)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("squid answered %d for a dead origin, want 503", code)
	}
	r := liveRegistry(t, dead, liveReg(portA, "a"), liveReg(portB, "b"))
	r.VerifyAll(context.Background())
	for _, s := range r.Squids() {
		if s.State != squidreg.StateOriginDown || !s.Offered || !strings.Contains(s.LastError, "503") ||
			!strings.Contains(s.LastError, "ERR_CONNECT_FAIL") {
			t.Errorf("%s: %s offered=%v error %q", s.Name, s.State, s.Offered, s.LastError)
		}
	}
}

// TestLiveBrokenUpstream: a squid that cannot reach an origin other squids
// reach fails its verification.
func TestLiveBrokenUpstream(t *testing.T) {
	o := newLiveOrigin(t)
	r := liveRegistry(t, o.probeURL(), liveReg(portA, "a"), liveReg(portBroken, "broken"))
	r.VerifyAll(context.Background())
	st := states(r)
	if st["a"] != squidreg.StateVerified || st["broken"] != squidreg.StateFailed {
		t.Fatalf("states %v: %+v", st, r.Squids())
	}
	if got := offered(r); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("offered %v", got)
	}
	// Alone, the broken squid cannot be told from a dead origin.
	alone := liveRegistry(t, o.probeURL(), liveReg(portBroken, "broken"))
	alone.VerifyAll(context.Background())
	if s := alone.Squids()[0]; s.State != squidreg.StateOriginDown || !strings.Contains(s.LastError, "ERR_") {
		t.Fatalf("broken alone: %s %q", s.State, s.LastError)
	}
}

// TestLiveHandler serves a real answer and PAC file for the live squids.
func TestLiveHandler(t *testing.T) {
	o := newLiveOrigin(t)
	r := liveRegistry(t, o.probeURL(), liveReg(portA, "a"), liveReg(portB, "b"))
	r.VerifyAll(context.Background())
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, body := get(t, srv.URL+squidreg.PathWPAD+"?kind=cvmfs")
	want := fmt.Sprintf(`return "PROXY 127.0.0.1:%d; PROXY 127.0.0.1:%d; DIRECT";`, portA, portB)
	if resp.StatusCode != 200 || !strings.Contains(body, want) {
		t.Fatalf("wpad %s %q", resp.Status, body)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
