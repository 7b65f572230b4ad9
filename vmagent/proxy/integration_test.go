//go:build integration

package proxy_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/vmagent/proxy"
)

// Real squids (deploy/testbed/squid) on 127.0.0.1, on this package's own
// ports, below the ephemeral range.
const (
	portA = 24141
	portB = 24142
)

var (
	bed       = squidtest.Testbed{Base: "/run/canopy-squid-testbed/vmagent-proxy"}
	startedUs = map[int]bool{}
)

func TestMain(m *testing.M) {
	inst, err := bed.Up(portA, portB)
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
	for p, s := range startedUs {
		if s {
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

func TestLiveDiscover(t *testing.T) {
	o := origin(t)
	a := agent(t, fmt.Sprintf("127.0.0.1:%d", portA), fmt.Sprintf("127.0.0.1:%d", portB))
	opts := proxy.Options{AgentURL: a.URL, Client: a.client, ProbeURL: o.URL + probePath}
	res, err := proxy.Discover(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("http://127.0.0.1:%d", portA), fmt.Sprintf("http://127.0.0.1:%d", portB)}
	if got := res.Proxies(); !sameSet(got, want) || !strings.HasSuffix(res.CVMFSHTTPProxy(), ";DIRECT") {
		t.Fatalf("live squids: %q (checks %+v)", res.CVMFSHTTPProxy(), res.Checks)
	}
	t.Logf("CVMFS_HTTP_PROXY=%q", res.CVMFSHTTPProxy())

	if err := bed.Down(portB); err != nil {
		t.Fatal(err)
	}
	defer func() {
		inst, err := bed.Up(portB)
		if err != nil {
			t.Fatal(err)
		}
		startedUs[portB] = startedUs[portB] || inst[portB].Started
	}()
	res, err = proxy.Discover(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.CVMFSHTTPProxy(); got != want[0]+";DIRECT" {
		t.Fatalf("with b stopped: %q (checks %+v)", got, res.Checks)
	}
	if i := slices.IndexFunc(res.Checks, func(c proxy.Check) bool { return c.Proxy == want[1] }); i < 0 || res.Checks[i].OK {
		t.Errorf("stopped squid's check %+v", res.Checks)
	}
}

// TestLiveOriginDown: both squids answer 503 for a dead origin; they are
// kept, since the origin is what failed.
func TestLiveOriginDown(t *testing.T) {
	a := agent(t, fmt.Sprintf("127.0.0.1:%d", portA), fmt.Sprintf("127.0.0.1:%d", portB))
	res, err := proxy.Discover(context.Background(), proxy.Options{AgentURL: a.URL, Client: a.client, ProbeURL: "http://" + closedAddr(t) + probePath})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Proxies()) != 2 {
		t.Fatalf("origin down: %q (checks %+v)", res.CVMFSHTTPProxy(), res.Checks)
	}
	for _, c := range res.Checks {
		if !c.OriginFailed || !strings.Contains(c.Error, "503") {
			t.Errorf("check %+v", c)
		}
	}
}
