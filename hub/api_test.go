package hub

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/protocol"
)

// serveLoop runs the env's control loop's admin handling in the
// background, as Run does, until the test ends.
func (e *testEnv) serveLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case req := <-e.h.adminC:
				e.h.loop.handleAdmin(req)
			}
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done })
}

func TestHoldAPI(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(*e.now)))
	e.cycle()
	e.serveLoop()
	srv := httptest.NewServer(e.h.handler(chanSocket))
	defer srv.Close()
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		want               int
		held               bool
	}{
		{"cross-site origin", "POST", "/api/v1/vms/id-1/hold", map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden, false},
		{"cross-site fetch", "POST", "/api/v1/vms/id-1/hold", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden, false},
		{"same-origin browser without the CSRF header", "POST", "/api/v1/vms/id-1/hold", map[string]string{"Sec-Fetch-Site": "same-origin"}, http.StatusForbidden, false},
		{"unknown VM", "POST", "/api/v1/vms/no-such-vm/hold", nil, http.StatusNotFound, false},
		{"path in id", "POST", "/api/v1/vms/..%2F..%2Fetc%2Fpasswd/hold", nil, http.StatusBadRequest, false},
		{"markup in id", "POST", "/api/v1/vms/%3Cscript%3E/hold", nil, http.StatusBadRequest, false},
		{"NUL in id", "POST", "/api/v1/vms/a%00b/hold", nil, http.StatusBadRequest, false},
		{"hold", "POST", "/api/v1/vms/id-1/hold", nil, http.StatusOK, true},
		{"hold from the page itself", "POST", "/api/v1/vms/id-1/hold", map[string]string{"Sec-Fetch-Site": "same-origin", csrfHeader: "1"}, http.StatusOK, true},
		{"retire a held VM", "POST", "/api/v1/vms/id-1/retire", nil, http.StatusConflict, true},
		{"release", "DELETE", "/api/v1/vms/id-1/hold", nil, http.StatusOK, false},
	}
	for _, c := range cases {
		code, body := do(t, srv.URL, c.method, c.path, c.hdr)
		if code != c.want {
			t.Errorf("%s: status %d (%s), want %d", c.name, code, strings.TrimSpace(body), c.want)
		}
		if _, held := e.h.loop.st.Hold["id-1"]; held != c.held {
			t.Errorf("%s: held %v, want %v", c.name, held, c.held)
		}
		if len(e.h.loop.st.Hold) > 1 {
			t.Fatalf("%s: holds saved for ids that do not exist: %+v", c.name, e.h.loop.st.Hold)
		}
	}
	// Holds are durable when the API answers.
	st, err := e.h.store.Load()
	if err != nil || len(st.Hold) != 0 || !hasEvent(e.h.Status().Events, "released", "") {
		t.Fatalf("stored holds %+v, %v", st.Hold, err)
	}
}

// do sends one request and returns the status and body.
func do(t *testing.T, base, method, path string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPBeyondLoopbackRefused(t *testing.T) {
	for _, c := range []struct {
		addr string
		ok   bool
	}{{"127.0.0.1:8080", true}, {"[::1]:8080", true}, {"localhost:8080", true}, {"0.0.0.0:8080", false},
		{"192.0.2.10:8080", false}, {":8080", false}} {
		err := checkListen(c.addr)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.addr, err)
		}
		if err != nil && !strings.Contains(err.Error(), "reverse proxy") {
			t.Errorf("%s: the error does not say how to publish the page safely: %v", c.addr, err)
		}
	}
}

// TestStatusPageRenders renders the page over a hub with every kind of row
// and checks it is whole.
func TestStatusPageRenders(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(3)})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(*e.now)),
		vm("id-2", "canopy-west-p1-0-1", func(v *protocol.VM) { v.State, v.Fault = protocol.VMError, "No valid host" }))
	e.cycle()
	srv := httptest.NewServer(e.h.httpHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	for _, want := range []string{"</html>", "canopy-west-p1-0-0", "No valid host", "atlas", "west", "Pool view ok", "2 unregistered"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}
