package squid_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		name    string
		query   string
		remote  string
		want    squid.Query
		wantErr string
	}{
		{name: "defaults", remote: "198.51.100.9:5555", want: squid.Query{Addr: client, N: 5}},
		{name: "all", query: "n=3&kind=frontier&ip=192.0.2.4&site=west&domain=Example.ORG", remote: "198.51.100.9:5555",
			want: squid.Query{Addr: mustAddr("192.0.2.4"), N: 3, Kind: squidreg.KindFrontier, Site: "west", Domain: "example.org"}},
		{name: "mapped v4", query: "ip=::ffff:192.0.2.4", want: squid.Query{Addr: mustAddr("192.0.2.4"), N: 5}},
		{name: "ipv6 remote", remote: "[2001:db8::1]:80", want: squid.Query{Addr: mustAddr("2001:db8::1"), N: 5}},
		{name: "bad remote ignored", remote: "pipe", want: squid.Query{N: 5}},
		{name: "n zero", query: "n=0", wantErr: "n=\"0\""},
		{name: "n too big", query: "n=21", wantErr: "1 to 20"},
		{name: "n not a number", query: "n=five", wantErr: "whole number"},
		{name: "bad kind", query: "kind=http", wantErr: "unknown squid kind"},
		{name: "bad ip", query: "ip=999.1.1.1", wantErr: "not an IP address"},
		{name: "zoned ip", query: "ip=fe80::1%25eth0", wantErr: "not an IP address"},
		{name: "bad site", query: "site=%3Cscript%3E", wantErr: "site:"},
		{name: "bad domain", query: "domain=a/b", wantErr: "domain:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := squid.ParseQuery(v, tt.remote, squid.Config{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestHandler(t *testing.T) {
	r := newRegistry(t, squid.Config{AdvertiseToken: "s3cret"}, clientDB(t), newClock())
	a := reg("a", 0, 0, 10, squidreg.AccessGlobal)
	a.Host, a.Port = "192.0.2.10", 3128
	b := reg("b", 0, 10, 10, squidreg.AccessGlobal)
	b.Host, b.Port = "2001:db8::10", 8000
	if err := r.ReplaceSource("test", []squidreg.Registration{a, b}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()

	resp, body := get(t, srv.URL+squidreg.PathNearest+"?n=2&kind=cvmfs&ip=198.51.100.9&site=west")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("nearest: %s %s", resp.Status, body)
	}
	var ans squid.Answer
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if len(ans.Squids) != 2 || ans.Squids[0].Address != "192.0.2.10:3128" || ans.Squids[1].Address != "[2001:db8::10]:8000" ||
		!ans.Client.Located || ans.Client.Site != "west" || ans.Kind != squidreg.KindCVMFS {
		t.Errorf("answer %s", body)
	}

	resp, body = get(t, srv.URL+squidreg.PathNearest+"?n=100")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "n=") {
		t.Errorf("bad n: %s %s", resp.Status, body)
	}

	resp, body = get(t, srv.URL+squidreg.PathWPAD+"?ip=198.51.100.9")
	want := "function FindProxyForURL(url, host) {\n  return \"PROXY 192.0.2.10:3128; PROXY [2001:db8::10]:8000; DIRECT\";\n}\n"
	if resp.StatusCode != 200 || body != want || resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" {
		t.Errorf("wpad: %s %q", resp.Status, body)
	}

	// Without squids for the client, the PAC file still goes DIRECT.
	resp, body = get(t, srv.URL+squidreg.PathWPAD+"?kind=frontier")
	if resp.StatusCode != 200 || !strings.Contains(body, `return "DIRECT";`) {
		t.Errorf("empty wpad: %q", body)
	}

	resp, body = get(t, srv.URL+squidreg.PathSquids)
	var st []squid.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st) != 2 || st[0].Name != "a" || !st[0].Offered {
		t.Errorf("list: %s %s (%v)", resp.Status, body, err)
	}
}

func TestAdvertise(t *testing.T) {
	c := newClock()
	r := newRegistry(t, squid.Config{AdvertiseToken: "s3cret"}, clientDB(t), c)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	good := `{"host":"192.0.2.20","port":3128,"kinds":["cvmfs"],"access":"global","load":5}`
	post := func(token, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+squidreg.PathSquids, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, token, body string
		code              int
		like              string
	}{
		{"no token", "", good, 401, "bearer"},
		{"wrong token", "s3cre", good, 401, "bearer"},
		{"bad body", "s3cret", `{"host":`, 400, "squid registration"},
		{"invalid", "s3cret", `{"host":"192.0.2.20","port":3128,"kinds":["cvmfs"],"access":"everyone"}`, 400, "access level"},
		{"too big", "s3cret", `{"name":"` + strings.Repeat("x", 20000) + `"}`, 413, "too large"},
		{"good", "s3cret", good, 200, `"state":"unverified"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(tt.token, tt.body)
			if code != tt.code || !strings.Contains(body, tt.like) {
				t.Errorf("got %d %q, want %d containing %q", code, body, tt.code, tt.like)
			}
		})
	}
	if got := names(r.Nearest(squid.Query{N: 3}).Squids); len(got) != 1 || got[0] != "192.0.2.20:3128" {
		t.Errorf("advertised squid not offered: %v", got)
	}

	// Advertising off without a token.
	r2 := newRegistry(t, squid.Config{}, nil, c)
	srv2 := httptest.NewServer(r2.Handler())
	defer srv2.Close()
	resp, err := http.Post(srv2.URL+squidreg.PathSquids, "application/json", strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("advertising without a configured token: %s", resp.Status)
	}
}

func TestAdvertiser(t *testing.T) {
	c := newClock()
	r := newRegistry(t, squid.Config{AdvertiseToken: "tok"}, nil, c)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	loads := []float64{0, 42}
	calls := 0
	adv := &squidreg.Advertiser{HubURL: srv.URL + "/", Token: "tok", Log: quietLog(),
		Registration: squidreg.Registration{Host: "192.0.2.30", Port: 3128, Kinds: []squidreg.Kind{squidreg.KindFrontier}, Access: squidreg.AccessGlobal},
		Load: func(context.Context) (float64, error) {
			l := loads[min(calls, len(loads)-1)]
			calls++
			if calls == 3 {
				return 0, errors.New("cache manager unreachable")
			}
			return l, nil
		}}
	for i, want := range []float64{0, 42, 42} { // the third read fails: last good load
		ans, err := adv.Advertise(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ans.Name != "192.0.2.30:3128" || ans.Expiry != 180*time.Second {
			t.Errorf("answer %+v", ans)
		}
		if got := r.Squids()[0].Load; got != want {
			t.Errorf("advertisement %d: load %v, want %v", i, got, want)
		}
	}
	bad := *adv
	bad.Token = "nope"
	if _, err := bad.Advertise(context.Background()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong token: %v", err)
	}

	// Run posts at once and stops with its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r.Remove("192.0.2.30:3128")
	go func() { done <- adv.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Squids()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not advertise")
		}
		waitABit()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
