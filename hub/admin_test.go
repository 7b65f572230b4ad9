package hub

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// TestAdminChannels: the HTTP listener is read-only unless admin_on_http;
// the admin socket administers; GETs work everywhere.
func TestAdminChannels(t *testing.T) {
	tests := []struct {
		name   string
		ch     channel
		onHTTP bool
		want   int
	}{
		{"http listener", chanHTTP, false, http.StatusForbidden},
		{"http listener with admin_on_http", chanHTTP, true, http.StatusOK},
		{"admin socket", chanSocket, false, http.StatusOK},
		{"TLS listener without a certificate", chanTLS, false, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, &scriptedSource{}, func(c *Config) { c.AdminOnHTTP = tc.onHTTP })
			e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(*e.now)))
			e.cycle()
			e.serveLoop()
			srv := httptest.NewServer(e.h.handler(tc.ch))
			defer srv.Close()
			if code, body := do(t, srv.URL, "POST", "/api/v1/sites/west/pause", nil); code != tc.want {
				t.Fatalf("pause: %d %s, want %d", code, body, tc.want)
			}
			paused := e.h.loop.st.Sites["west"].Mode == intent.ModePaused
			if paused != (tc.want == http.StatusOK) {
				t.Fatalf("site mode %+v after answer %d", e.h.loop.st.Sites, tc.want)
			}
			if code, _ := do(t, srv.URL, "GET", "/api/v1/summary", nil); code != http.StatusOK {
				t.Fatalf("summary: %d", code)
			}
		})
	}
}

// TestSiteActions: pause, disable and drain change what the planner gets,
// are durable, logged with who asked, shown on the status; drain orders
// every unheld VM to retire; resume goes back to the config.
func TestSiteActions(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(5)})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(*e.now)), vm("id-2", "canopy-west-p1-0-1", readySince(*e.now)))
	e.cycle()
	e.serveLoop()
	srv := httptest.NewServer(e.h.handler(chanSocket))
	defer srv.Close()
	if code, _ := do(t, srv.URL, "POST", "/api/v1/vms/id-2/hold", nil); code != 200 {
		t.Fatal("hold failed")
	}
	tests := []struct {
		action     string
		want       int
		mode       string
		paused     bool
		disabled   bool
		retiring   int
		eventKind  string
		eventMatch string
	}{
		{"pause", 200, intent.ModePaused, true, false, 0, "site_paused", "by socket"},
		{"resume", 200, "", false, false, 0, "site_resumed", "by socket"},
		{"disable", 200, intent.ModeDisabled, false, true, 0, "site_disabled", "by socket"},
		{"drain", 200, intent.ModeDraining, false, true, 1, "site_draining", "1 VMs ordered to retire"},
		{"explode", http.StatusConflict, intent.ModeDraining, false, true, 1, "", ""},
	}
	for _, tc := range tests {
		code, body := do(t, srv.URL, "POST", "/api/v1/sites/west/"+tc.action, nil)
		if code != tc.want {
			t.Fatalf("%s: %d %s", tc.action, code, body)
		}
		st := e.h.Status()
		s := st.Sites[0]
		if s.Mode != tc.mode || s.Paused != tc.paused || s.Disabled != tc.disabled {
			t.Errorf("%s: site %s mode %q paused %v disabled %v", tc.action, s.Name, s.Mode, s.Paused, s.Disabled)
		}
		if n := len(e.h.loop.st.Retire); n != tc.retiring {
			t.Errorf("%s: %d retire orders, want %d", tc.action, n, tc.retiring)
		}
		if _, heldOrdered := e.h.loop.st.Retire["id-2"]; heldOrdered {
			t.Errorf("%s: a held VM was ordered to retire", tc.action)
		}
		if tc.eventKind != "" && !hasEvent(st.Events, tc.eventKind, tc.eventMatch) {
			t.Errorf("%s: no %s event with %q", tc.action, tc.eventKind, tc.eventMatch)
		}
	}
	// The planner sees the site disabled: it boots nothing there.
	in := e.h.loop.input(*e.now, e.h.loop.views(), true)
	if !in.Clouds[0].Settings.Disabled {
		t.Fatal("drained site not disabled for the planner")
	}
	if code, _ := do(t, srv.URL, "POST", "/api/v1/sites/nowhere/pause", nil); code != http.StatusNotFound {
		t.Fatalf("unknown site: %d", code)
	}
	// Durable: a restarted hub has the mode.
	st, err := e.h.store.Load()
	if err != nil || st.Sites["west"].Mode != intent.ModeDraining {
		t.Fatalf("stored site modes %+v, %v", st.Sites, err)
	}
}

// TestRetireVM: an admin retirement is an order with the retire deadline,
// logged; a second one is refused.
func TestRetireVM(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(*e.now), func(v *protocol.VM) {
		v.Jobs = &protocol.VMJobs{Running: 1, Claimed: 1, At: *e.now}
	}))
	e.cycle()
	e.serveLoop()
	srv := httptest.NewServer(e.h.handler(chanSocket))
	defer srv.Close()
	for _, want := range []int{http.StatusOK, http.StatusConflict} {
		if code, body := do(t, srv.URL, "POST", "/api/v1/vms/id-1/retire", nil); code != want {
			t.Fatalf("retire: %d %s, want %d", code, body, want)
		}
	}
	o := e.h.loop.st.Retire["id-1"]
	if o.Rule != "admin" || !o.Deadline.Equal(e.now.Add(e.h.retireDeadline())) {
		t.Fatalf("order %+v", o)
	}
	if !hasEvent(e.h.Status().Events, "retire", "retired by socket") {
		t.Fatal("no retire event")
	}
	// The next cycle sends the order to the agent.
	s := e.h.linkFor("west").current()
	e.cycle()
	cmds := drain(s, protocol.CmdRetire)
	if len(cmds) != 1 || cmds[0].Retire.VMIDs[0] != "id-1" {
		t.Fatalf("retire commands %+v", cmds)
	}
	if vs, _ := e.h.Status().VM("id-1"); vs.State != planner.VMRetiring && vs.RetireDeadline.IsZero() {
		t.Fatalf("VM status %+v", vs)
	}
}

// TestAdminTLS: the admin listener takes an admin certificate from the
// hub's CA (its name is who acts) and refuses none, an agent's, or one
// from another CA; the agent verifier refuses an admin certificate.
func TestAdminTLS(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(*e.now)))
	e.cycle()
	e.serveLoop()
	tc, err := e.h.adminTLS()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(e.h.handler(chanTLS))
	srv.TLS = tc
	srv.StartTLS()
	defer srv.Close()
	ca, err := pki.LoadCA(e.cfg.TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := pki.InitCA(other, []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	otherCA, _ := pki.LoadCA(other)
	now := time.Now()
	issue := func(f func() (*pki.Issued, error)) *tls.Certificate {
		iss, err := f()
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	admin := issue(func() (*pki.Issued, error) { return ca.IssueAdmin("alice", now.Add(-time.Hour), now.Add(time.Hour)) })
	agent := issue(func() (*pki.Issued, error) { return ca.IssueAgent("west", now.Add(-time.Hour), now.Add(time.Hour)) })
	foreign := issue(func() (*pki.Issued, error) {
		return otherCA.IssueAdmin("mallory", now.Add(-time.Hour), now.Add(time.Hour))
	})
	roots, err := AdminCertPool(e.cfg.TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cert *tls.Certificate
		ok   bool
	}{
		{"no certificate", nil, false}, {"agent certificate", agent, false}, {"other CA", foreign, false}, {"admin", admin, true},
	}
	for _, c := range tests {
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}
		if c.cert != nil {
			cfg.Certificates = []tls.Certificate{*c.cert}
		}
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
		resp, err := cl.Post(url+"/api/v1/vms/id-1/hold", "", nil)
		ok := err == nil && resp.StatusCode == 200
		if resp != nil {
			resp.Body.Close()
		}
		if ok != c.ok {
			t.Errorf("%s: ok %v (%v), want %v", c.name, ok, err, c.ok)
		}
	}
	if h := e.h.loop.st.Hold["id-1"]; h.By != "admin:alice" {
		t.Fatalf("hold by %q, want admin:alice", h.By)
	}
	// The agent listener's verifier refuses the admin certificate.
	if _, err := e.h.verifier.Verify([]*x509.Certificate{admin.Leaf}); err == nil || !strings.Contains(err.Error(), "admin certificate") {
		t.Fatalf("agent verifier on an admin certificate: %v", err)
	}
}

// TestAdminSocket: the socket is made mode 0600, a stale one is replaced,
// and a path too long for a socket is an error that says so.
func TestAdminSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "sock")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "hub.sock")
	tests := []struct {
		name, path, wantErr string
	}{
		{"new", p, ""},
		{"stale one replaced", p, ""},
		{"too long", filepath.Join(dir, strings.Repeat("x", 120)), "longer than"},
	}
	for _, tc := range tests {
		ln, err := listenSocket(tc.path)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		fi, err := os.Stat(tc.path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: socket mode %v, %v", tc.name, fi.Mode(), err)
		}
		if tc.name == "new" {
			// Leave it behind as a crashed hub would (no unlink on close).
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
		}
		ln.Close()
	}
}
