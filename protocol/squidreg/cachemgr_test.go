package squidreg_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// The fixtures were read from a real squid 5.7 (Debian 12) with
// GET http://127.0.0.1:PORT/squid-internal-mgr/{counters,5min,info}; the
// denied page is what the same squid answers when the request goes through
// it as a proxy instead.
func TestParseCountersFixtures(t *testing.T) {
	tests := []struct {
		file    string
		key     string
		want    float64
		wantErr string
	}{
		{file: "counters-squid5.7.txt", key: squidreg.KBytesOutCounter, want: 21},
		{file: "counters-squid5.7.txt", key: "client_http.requests", want: 10},
		{file: "5min-squid5.7.txt", key: squidreg.KBytesOutCounter, want: 0},
		{file: "denied-squid5.7.html", wantErr: "no counters"},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.key, func(t *testing.T) {
			b, err := os.ReadFile("testdata/cachemgr/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			m, err := squidreg.ParseCounters(b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := m[tt.key]; !ok || got != tt.want {
				t.Errorf("%s = %v (%v), want %v", tt.key, got, ok, tt.want)
			}
		})
	}
}

func TestLoadMeter(t *testing.T) {
	p := squidtest.NewProxy()
	defer p.Close()
	m := &squidreg.LoadMeter{URL: "http://" + p.Addr()}
	if l, err := m.Load(context.Background()); err != nil || l != 0 {
		t.Fatalf("first reading: %v %v", l, err)
	}
	// Traffic through the proxy raises kbytes_out.
	o := origin(t)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, "http://"+p.Addr()))}}
	for range 5 {
		resp, err := c.Get(o.URL + "/cvmfs/atlas.cern.ch/.cvmfswhitelist")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	deadline := 100
	for {
		l, err := m.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if l > 0 {
			break
		}
		deadline--
		if deadline == 0 {
			t.Fatal("load stays 0 after traffic")
		}
		waitABit()
	}
	p.Close()
	if _, err := m.Load(context.Background()); err == nil {
		t.Error("no error from a closed cache manager")
	}
}
