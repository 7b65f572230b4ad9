package squidreg_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
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

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// waitABit yields for a moment while polling for a condition with a
// deadline (not a synchronisation by sleeping).
func waitABit() { <-time.After(10 * time.Millisecond) }
