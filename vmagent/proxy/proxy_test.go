package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/pkitest"
	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/vmproto"
	"github.com/canopy-grid/canopy/vmagent/proxy"
)

const probePath = "/cvmfs/atlas.cern.ch/.cvmfspublished"

func origin(t *testing.T) *httptest.Server {
	t.Helper()
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "Cabc\nNatlas.cern.ch\n")
	}))
	t.Cleanup(o.Close)
	return o
}

// agentServer is a site agent's VM endpoint over TLS and a client that
// trusts it as VMs do.
type agentServer struct {
	URL    string
	client *http.Client
}

// agent serves a fixed GET /v1/squids answer listing addrs, over TLS as
// the agent's VM endpoint does.
func agent(t *testing.T, addrs ...string) agentServer {
	t.Helper()
	ca := pkitest.New(t)
	a := ca.Server(t, "west", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != vmproto.PathSquids || r.URL.Query().Get("kind") != "cvmfs" || r.URL.Query().Get("n") != "5" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
			return
		}
		l := vmproto.SquidList{Kind: "cvmfs", Source: vmproto.SquidSourceHub, Proxies: []vmproto.SquidProxy{}}
		for _, a := range addrs {
			l.Proxies = append(l.Proxies, vmproto.SquidProxy{Address: a, URL: "http://" + a})
		}
		_ = json.NewEncoder(w).Encode(l)
	}))
	return agentServer{URL: a.URL, client: ca.Client(t, "west")}
}

func proxies(t *testing.T, n int) []*squidtest.Proxy {
	t.Helper()
	out := make([]*squidtest.Proxy, n)
	for i := range out {
		out[i] = squidtest.NewProxy()
		t.Cleanup(out[i].Close)
	}
	return out
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestDiscover(t *testing.T) {
	o := origin(t)
	p := proxies(t, 4)
	p[2].Delay(time.Second)
	p[3].Deny(true)
	dead := closedAddr(t)
	a := agent(t, p[2].Addr(), dead, p[0].Addr(), p[3].Addr(), p[1].Addr())
	res, err := proxy.Discover(context.Background(), proxy.Options{AgentURL: a.URL, Client: a.client, ProbeURL: o.URL + probePath, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Source != "agent" || len(res.Checks) != 5 {
		t.Fatalf("result %+v", res)
	}
	u := func(p *squidtest.Proxy) string { return "http://" + p.Addr() }
	// The two fast proxies come first (one group, or two if the machine's
	// load split their timings), the one delayed by a second last and alone.
	n := len(res.Groups)
	var fast []string
	for _, g := range res.Groups[:max(0, n-1)] {
		fast = append(fast, g...)
	}
	if n < 2 || n > 3 || !sameSet(fast, []string{u(p[0]), u(p[1])}) || !slices.Equal(res.Groups[n-1], []string{u(p[2])}) {
		t.Fatalf("groups %v (checks %+v)", res.Groups, res.Checks)
	}
	line := res.CVMFSHTTPProxy()
	if !strings.HasSuffix(line, ";"+u(p[2])+";DIRECT") || strings.Count(line, "|")+strings.Count(line, ";") != 3 {
		t.Errorf("CVMFS_HTTP_PROXY %q", line)
	}
	for _, c := range res.Checks {
		switch c.Proxy {
		case "http://" + dead:
			if c.OK || c.Error == "" {
				t.Errorf("dead proxy %+v", c)
			}
		case u(p[3]):
			if c.OK || c.OriginFailed || !strings.Contains(c.Error, "403") {
				t.Errorf("denying proxy %+v", c)
			}
		}
	}
}

func TestDiscoverOriginDown(t *testing.T) {
	p := proxies(t, 2)
	a := agent(t, p[0].Addr(), p[1].Addr(), closedAddr(t))
	res, err := proxy.Discover(context.Background(), proxy.Options{AgentURL: a.URL, Client: a.client, ProbeURL: "http://" + closedAddr(t) + probePath})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Proxies(); !sameSet(got, []string{"http://" + p[0].Addr(), "http://" + p[1].Addr()}) {
		t.Fatalf("with the origin down: %v (%+v)", got, res.Checks)
	}
	for _, c := range res.Checks[:2] {
		if !c.OriginFailed || !strings.Contains(c.Error, "ERR_CONNECT_FAIL") {
			t.Errorf("check %+v", c)
		}
	}
}

func TestDiscoverWithoutAgent(t *testing.T) {
	o := origin(t)
	p := proxies(t, 1)
	opts := proxy.Options{AgentURL: "https://" + closedAddr(t), ProbeURL: o.URL + probePath, Timeout: time.Second}
	res, err := proxy.Discover(context.Background(), opts)
	if err == nil || res.Source != "none" || res.CVMFSHTTPProxy() != "DIRECT" {
		t.Fatalf("no agent, no fallback: %+v %v", res, err)
	}
	opts.Fallback = []string{p[0].Addr(), closedAddr(t)}
	res, err = proxy.Discover(context.Background(), opts)
	if err == nil || res.Source != "fallback" || res.CVMFSHTTPProxy() != "http://"+p[0].Addr()+";DIRECT" {
		t.Fatalf("fallback: %q %+v %v", res.CVMFSHTTPProxy(), res, err)
	}
	opts.Fallback = []string{"not a proxy"}
	if _, err := proxy.Discover(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "fallback proxy") {
		t.Fatalf("bad fallback: %v", err)
	}
}

func TestDiscoverUnchecked(t *testing.T) {
	a := agent(t, "192.0.2.1:3128", "[2001:db8::1]:3128")
	res, err := proxy.Discover(context.Background(), proxy.Options{AgentURL: a.URL, Client: a.client})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.CVMFSHTTPProxy(); got != "http://192.0.2.1:3128;http://[2001:db8::1]:3128;DIRECT" {
		t.Errorf("unchecked: %q", got)
	}
}

func TestDecodeAgentList(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
		wantErr  string
	}{
		{"good", `{"kind":"cvmfs","proxies":[{"address":"10.0.0.1:3128"},{"address":"[2001:db8::1]:80"},{"address":"10.0.0.1:3128"}]}`,
			[]string{"http://10.0.0.1:3128", "http://[2001:db8::1]:80"}, ""},
		{"empty", `{"proxies":[]}`, []string{}, ""},
		{"missing field", `{}`, nil, "no proxies field"},
		{"injection", `{"proxies":[{"address":"a|b;DIRECT:3128"}]}`, nil, "bad host"},
		{"bad port", `{"proxies":[{"address":"10.0.0.1:0"}]}`, nil, "bad port"},
		{"port with sign", `{"proxies":[{"address":"10.0.0.1:+80"}]}`, nil, "bad port"},
		{"not json", `DIRECT`, nil, "squid list"},
		{"negative load", `{"proxies":[{"address":"10.0.0.1:3128","load":-2}]}`, nil, "load is -2"},
		{"negative distance", `{"proxies":[{"address":"10.0.0.1:3128","distance_km":-1.5}]}`, nil, "distance_km is -1.5"},
		{"negative age", `{"proxies":[],"age_seconds":-1}`, nil, "age_seconds is -1"},
		{"number beyond float64", `{"proxies":[{"address":"10.0.0.1:3128","cost":1e999}]}`, nil, "squid list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proxy.DecodeAgentList([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v", got)
			}
		})
	}
}

func FuzzDecodeAgentList(f *testing.F) {
	f.Add([]byte(`{"proxies":[{"address":"10.0.0.1:3128"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := proxy.DecodeAgentList(b)
		if err != nil {
			return
		}
		line := proxy.Result{Groups: [][]string{got}}.CVMFSHTTPProxy()
		if strings.ContainsAny(line, " \n\t\"'\\") || strings.Count(line, ";") != 1 || strings.Count(line, "|") != max(0, len(got)-1) {
			t.Fatalf("unsafe line %q from %v", line, got)
		}
	})
}
