package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/idtoken"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/internal/pkitest"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// vmCloud is a cloud whose servers are entries in a map (for the VM endpoint tests).
type vmCloud struct {
	mu       sync.Mutex
	servers  map[string]driver.Server
	userData map[string][]byte // by server name
	n        int
	listErr  error
	// onBoot, if set, runs at each boot (before the server exists).
	onBoot func()
}

func newVMCloud() *vmCloud {
	return &vmCloud{servers: map[string]driver.Server{}, userData: map[string][]byte{}}
}

func (d *vmCloud) server(id string) (driver.Server, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.servers[id]
	return s, ok
}

func (d *vmCloud) userDataOf(name string) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.userData[name]
}

func (d *vmCloud) Flavors(context.Context) ([]protocol.Flavor, error) { return nil, nil }
func (d *vmCloud) Limits(context.Context) (protocol.Limits, error)    { return protocol.Limits{}, nil }
func (d *vmCloud) Images(context.Context) ([]images.Image, error)     { return nil, nil }
func (d *vmCloud) UploadImage(context.Context, images.Image, io.Reader) (images.Image, error) {
	return images.Image{}, errors.New("not supported")
}
func (d *vmCloud) DownloadImage(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("not supported")
}

func (d *vmCloud) Servers(context.Context) ([]driver.Server, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listErr != nil {
		return nil, d.listErr
	}
	out := make([]driver.Server, 0, len(d.servers))
	for _, s := range d.servers {
		out = append(out, s)
	}
	return out, nil
}

func (d *vmCloud) Boot(_ context.Context, spec driver.BootSpec) (driver.Server, error) {
	if d.onBoot != nil {
		d.onBoot()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	s := driver.Server{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", d.n), Name: spec.Name, Status: driver.StatusActive,
		Metadata: spec.Metadata, CreatedAt: time.Now()}
	d.servers[s.ID] = s
	d.userData[spec.Name] = spec.UserData
	return s, nil
}

func (d *vmCloud) Delete(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.servers, id)
	return nil
}

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var testKey = bytes.Repeat([]byte{42}, vmtoken.KeySize)

// testCondorMinter mints HTCondor tokens with the test signing key of
// package idtoken, for trust domain cm.example.org.
func testCondorMinter(t testing.TB, lifetime time.Duration) *condorMinter {
	t.Helper()
	file, err := os.ReadFile("idtoken/testdata/signing-key")
	if err != nil {
		t.Fatal(err)
	}
	key, err := idtoken.NewKey(file, idtoken.PoolKeyID)
	if err != nil {
		t.Fatal(err)
	}
	s, err := idtoken.NewSigner(key, "cm.example.org")
	if err != nil {
		t.Fatal(err)
	}
	return &condorMinter{signer: s, spec: idtoken.Spec{Identity: "canopy-worker@cm.example.org", Authz: DefaultWorkerAuthz, Lifetime: lifetime}}
}

// setTestPKI gives a its VM endpoint's TLS: a test CA of its own and a
// VM endpoint certificate for 127.0.0.1.
func setTestPKI(t testing.TB, a *Agent) {
	t.Helper()
	ca := pkitest.New(t)
	a.caPEM, a.vmTLS = ca.PEM, vmproto.ServerTLS(ca.VMEndpoint(t, a.cfg.Site))
}

// newTestAgent is an agent for site east with d as its cloud, without a
// hub session: enough for its VM endpoint. It mints HTCondor tokens
// (lifetime 24 h) with the test key.
func newTestAgent(t *testing.T, d driver.Driver, site string, clock *testClock) (*Agent, *test.Hook) {
	t.Helper()
	signer, err := vmtoken.NewSigner(testKey)
	if err != nil {
		t.Fatal(err)
	}
	l, hook := test.NewNullLogger()
	cfg := Config{Site: site, CondorHost: "cm.example.org", TokenTTL: time.Hour, CheckinEvery: 5 * time.Millisecond}.withDefaults()
	a, err := newAgent(cfg, d, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	a.signer, a.now, a.hubID = signer, clock.Now, "hub"
	a.condor = testCondorMinter(t, 24*time.Hour)
	setTestPKI(t, a)
	return a, hook
}

// vmClients are clients trusting test VM endpoints as VMs do, by URL.
var vmClients sync.Map

// vmServer serves a's VM endpoint over TLS as Run does, and registers a
// client that trusts it as the agent's VMs do (only the agent's CA, only
// its site's VM endpoint certificate); checkin and enroll use it.
func vmServer(t testing.TB, a *Agent) *httptest.Server {
	t.Helper()
	return tlsServer(t, a, a.vmHandler())
}

// tlsServer serves h with a's VM endpoint TLS.
func tlsServer(t testing.TB, a *Agent, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = a.vmTLS
	srv.StartTLS()
	t.Cleanup(srv.Close)
	conf, err := vmproto.ClientTLS(a.caPEM, a.cfg.Site)
	if err != nil {
		t.Fatal(err)
	}
	vmClients.Store(srv.URL, &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: 10 * time.Second})
	return srv
}

func vmClient(t testing.TB, url string) *http.Client {
	t.Helper()
	c, ok := vmClients.Load(url)
	if !ok {
		t.Fatalf("no client for %s: serve it with vmServer", url)
	}
	return c.(*http.Client)
}

// bootServer does what the agent's boot does for one server: mint and
// record its enrollment token and record the token's id in the server's
// metadata. It returns the server and the enrollment token.
func bootServer(t testing.TB, a *Agent, d *vmCloud, name, group string) (driver.Server, string) {
	t.Helper()
	tok, id, err := a.mintEnrollToken(name, group)
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.Boot(context.Background(), driver.BootSpec{Name: name, Metadata: map[string]string{driver.MetaHub: "hub", driver.MetaSite: a.cfg.Site,
		driver.MetaGroup: group, driver.MetaVMType: "el9", driver.MetaTokenID: id}})
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

// bootVM boots a server (bootServer) and returns it with the check-in
// token its enrollment would give it.
func bootVM(t testing.TB, a *Agent, d *vmCloud, name, group string) (driver.Server, string) {
	t.Helper()
	s, _ := bootServer(t, a, d, name, group)
	tok, _, err := a.mintCheckinToken(name, group, s.Metadata[driver.MetaTokenID], a.now())
	if err != nil {
		t.Fatal(err)
	}
	return s, tok
}

// post sends a JSON body with a bearer token to a test VM endpoint.
func post(t testing.TB, url, path, tok string, body []byte) (int, string) {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := vmClient(t, url).Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func checkin(t testing.TB, url, tok string, req vmproto.CheckinRequest) (int, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	return post(t, url, vmproto.PathCheckin, tok, body)
}

func enroll(t testing.TB, url, tok string, req vmproto.EnrollRequest) (int, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	return post(t, url, vmproto.PathEnroll, tok, body)
}

// refusal returns the reason logged for the last refused check-in.
func refusal(hook *test.Hook) string {
	for i := len(hook.AllEntries()) - 1; i >= 0; i-- {
		e := hook.AllEntries()[i]
		if e.Message == "VM check-in refused" {
			r, _ := e.Data["reason"].(string)
			return r
		}
	}
	return ""
}

// alter re-encodes a token's claims with one change, keeping its signature.
func alter(t *testing.T, tok string, edit func(*vmtoken.Claims)) string {
	t.Helper()
	p, sig, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	var c vmtoken.Claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	edit(&c)
	b, _ = json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b) + "." + sig
}

func TestCheckinIdentity(t *testing.T) {
	type world struct {
		a     *Agent
		d     *vmCloud
		clock *testClock
		url   string
	}
	tests := []struct {
		name string
		// setup boots what it needs and returns the token and request to send.
		setup      func(t *testing.T, w world) (string, vmproto.CheckinRequest)
		wantStatus int
		wantReason string // logged reason; "" for accepted
	}{
		{"own token", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusOK, ""},
		{"no token", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			return "", vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusUnauthorized, "no bearer token"},
		{"another VM's token", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			a, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			_, tokB := bootVM(t, w.a, w.d, "vm-b", "atlas")
			return tokB, vmproto.CheckinRequest{ServerID: a.ID, Server: a.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongServer)},
		{"another VM's token and name, own server id", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			a, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			_, tokB := bootVM(t, w.a, w.d, "vm-b", "atlas")
			return tokB, vmproto.CheckinRequest{ServerID: a.ID, Server: "vm-b", State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongServer)},
		{"token of another site", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			west, _ := newTestAgent(t, w.d, "west", w.clock) // same key, other site
			tok, _, err := west.mintCheckinToken("vm-a", "atlas", s.Metadata[driver.MetaTokenID], w.clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongSite)},
		{"token of another agent's key", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			other, err := vmtoken.NewSigner(bytes.Repeat([]byte{1}, vmtoken.KeySize))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := other.Mint(vmtoken.Claims{Site: "east", Server: "vm-a", Group: "atlas", Expires: w.clock.Now().Add(time.Hour),
				Nonce: s.Metadata[driver.MetaTokenID], Use: vmtoken.UseCheckin})
			if err != nil {
				t.Fatal(err)
			}
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonBadSig)},
		{"expired token", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			w.clock.Add(w.a.cfg.TokenTTL + time.Second)
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonExpired)},
		{"altered token: group widened", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			return alter(t, tok, func(c *vmtoken.Claims) { c.Group = "cms" }), vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonBadSig)},
		{"altered token: expiry extended", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			w.clock.Add(2 * w.a.cfg.TokenTTL)
			return alter(t, tok, func(c *vmtoken.Claims) { c.Expires = w.clock.Now().Add(time.Hour) }),
				vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonBadSig)},
		{"token for another group than the server's", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			tok, err := w.a.signer.Mint(vmtoken.Claims{Site: "east", Server: "vm-a", Group: "cms", Expires: w.clock.Now().Add(time.Hour),
				Nonce: s.Metadata[driver.MetaTokenID], Use: vmtoken.UseCheckin})
			if err != nil {
				t.Fatal(err)
			}
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongGroup)},
		{"replayed after the server was deleted out of band", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			if err := w.d.Delete(context.Background(), s.ID); err != nil {
				t.Fatal(err)
			}
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonUnknownVM)},
		{"replayed by a later server of the same name", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			old, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			if err := w.d.Delete(context.Background(), old.ID); err != nil {
				t.Fatal(err)
			}
			s, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonReplayed)},
		{"server without a token id", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			tok, _, err := w.a.mintCheckinToken("vm-a", "atlas", "some-id", w.clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			s, _ := w.d.Boot(context.Background(), driver.BootSpec{Name: "vm-a", Metadata: map[string]string{driver.MetaHub: "hub", driver.MetaGroup: "atlas"}})
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonReplayed)},
		{"its enrollment token", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongUse)},
		{"garbage token", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, _ := bootVM(t, w.a, w.d, "vm-a", "atlas")
			return "not-a-token", vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonMalformed)},
		{"bad state", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: "sleeping"}
		}, http.StatusBadRequest, reasonInvalid},
		{"cloud cannot list servers", func(t *testing.T, w world) (string, vmproto.CheckinRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			w.d.listErr = errors.New("nova: 503")
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newVMCloud()
			clock := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			a, hook := newTestAgent(t, d, "east", clock)
			srv := vmServer(t, a)
			tok, req := tt.setup(t, world{a: a, d: d, clock: clock, url: srv.URL})
			status, body := checkin(t, srv.URL, tok, req)
			if status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", status, strings.TrimSpace(body), tt.wantStatus)
			}
			got := refusal(hook)
			if got != tt.wantReason {
				t.Fatalf("logged reason %q, want %q", got, tt.wantReason)
			}
			if tt.wantStatus == http.StatusForbidden && !strings.Contains(body, tt.wantReason) {
				t.Errorf("answer %q does not name the reason", body)
			}
			if tt.wantStatus == http.StatusOK {
				if st, ok := a.vms.get(req.ServerID); !ok || !st.ready {
					t.Error("VM not marked ready")
				}
			}
		})
	}
}

func TestCheckinBodyLimits(t *testing.T) {
	d := newVMCloud()
	clock := &testClock{t: time.Now()}
	a, _ := newTestAgent(t, d, "east", clock)
	srv := vmServer(t, a)
	_, tok := bootVM(t, a, d, "vm-a", "atlas")
	for name, body := range map[string]string{
		"too big":       `{"server_id":"` + strings.Repeat("a", maxCheckinBody) + `"}`,
		"unknown field": `{"server_id":"x","server":"vm-a","state":"ready","admin":true}`,
		"not JSON":      `server=vm-a`,
	} {
		if status, _ := post(t, srv.URL, vmproto.PathCheckin, tok, []byte(body)); status != http.StatusBadRequest {
			t.Errorf("%s: status %d", name, status)
		}
	}
}

// TestCheckinListsServersSparingly: check-ins reuse a recent server
// listing instead of asking the cloud each time.
func TestCheckinListsServersSparingly(t *testing.T) {
	d := &countingDriver{vmCloud: newVMCloud()}
	clock := &testClock{t: time.Now()}
	a, _ := newTestAgent(t, d, "east", clock)
	srv := vmServer(t, a)
	type vm struct {
		s   driver.Server
		tok string
	}
	var vms []vm
	for i := range 20 {
		s, tok := bootVM(t, a, d.vmCloud, fmt.Sprintf("vm-%d", i), "atlas")
		vms = append(vms, vm{s, tok})
	}
	for range 5 {
		for _, v := range vms {
			if status, body := checkin(t, srv.URL, v.tok, vmproto.CheckinRequest{ServerID: v.s.ID, Server: v.s.Name, State: vmproto.CheckinReady}); status != http.StatusOK {
				t.Fatalf("status %d: %s", status, body)
			}
		}
	}
	n := d.count()
	if n > 2 {
		t.Fatalf("100 check-ins listed servers %d times", n)
	}
	// A VM booted just after a listing is not refused at its first
	// check-in: the agent lists again (once) to find it.
	s, tok := bootVM(t, a, d.vmCloud, "vm-new", "atlas")
	if status, body := checkin(t, srv.URL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}); status != http.StatusOK {
		t.Fatalf("new VM: status %d: %s", status, body)
	}
	if got := d.count(); got != n+1 {
		t.Fatalf("new VM's check-in listed servers %d times", got-n)
	}
}

type countingDriver struct {
	*vmCloud
	mu sync.Mutex
	n  int
}

func (d *countingDriver) Servers(ctx context.Context) ([]driver.Server, error) {
	d.mu.Lock()
	d.n++
	d.mu.Unlock()
	return d.vmCloud.Servers(ctx)
}

func (d *countingDriver) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// waitChanged waits for the agent to mark a change (a VM became ready or
// drained), at most 10 s.
func waitChanged(t *testing.T, a *Agent, what string) {
	t.Helper()
	select {
	case <-a.changed:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestVMLifecycleThroughEndpoint plays a VM's side of the contract
// (protocol/vmproto) against the agent's real boot and VM endpoint, over
// TLS: the agent boots the server, and the VM reads its settings from the
// user-data the agent rendered (no secret in it but a single-use
// enrollment token), enrolls for its check-in and HTCondor tokens (a
// second enrollment is refused), reports ready, gets its tokens renewed
// when a third of their life is left, learns of its retirement at a
// check-in, drains and reports; the agent deletes the server, and the
// VM's tokens are refused from then on. Every secret is then looked for in
// the user-data and the agent's log. The vmagent's side of the same
// exchange is tested in package vmagent; the real binaries together in
// deploy/demo.
func TestVMLifecycleThroughEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := newVMCloud()
	clock := &testClock{t: time.Now()}
	a, hook := newTestAgent(t, d, "east", clock)
	a.log.Logger.SetLevel(logrus.DebugLevel)
	gkeys, err := gossip.LoadOrCreateSiteKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a.gkeys = gkeys
	agentSrv := vmServer(t, a)
	a.vmURL = agentSrv.URL
	a.userData, err = NewUserDataRenderer(VMContext{Proxies: [][]string{{"http://squid.example.org:3128"}},
		UserDataParts: []string{"../deploy/cloud-init/site-example.yaml", "../deploy/cloud-init/site-example.sh"}}, a.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	const name = "canopy-east-p1-0-0"
	ids, err := a.boot(ctx, protocol.BootCommand{PlanID: "p1", Group: "atlas", VMType: "el9", Flavor: "c2", Names: []string{name}, HS06PerCore: 11.25})
	if err != nil || len(ids) != 1 {
		t.Fatal(ids, err)
	}
	s, _ := d.server(ids[0])
	ud := d.userDataOf(name)

	// The VM reads its settings back from the user-data, the flavor's HS06
	// rating (for its startd to advertise) included.
	set, err := vmproto.ParseUserData(ud)
	if err != nil {
		t.Fatal(err)
	}
	if set.AgentURL != agentSrv.URL || set.AgentCA != a.caPEM || set.EnrollToken == "" || set.Site != "east" || set.Group != "atlas" ||
		set.HS06PerCore != 11.25 {
		t.Fatalf("settings read back: %+v", set)
	}
	status, body := enroll(t, set.AgentURL, set.EnrollToken, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name})
	if status != http.StatusOK {
		t.Fatalf("enroll: status %d: %s", status, body)
	}
	var creds vmproto.EnrollResponse
	if err := json.Unmarshal([]byte(body), &creds); err != nil {
		t.Fatal(err)
	}
	if creds.Token == "" || creds.Condor == nil || creds.GossipKey != gossip.EncodeKey(gkeys.Pool) ||
		!creds.TokenExpires.Equal(clock.Now().Add(a.cfg.TokenTTL).UTC()) {
		t.Fatalf("enrollment answer %+v", creds)
	}
	claims, err := a.condor.signer.Key().Verify(creds.Condor.Token, "cm.example.org", clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "canopy-worker@cm.example.org" || claims.Scope != "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER" ||
		claims.Expires != clock.Now().Add(24*time.Hour).Unix() {
		t.Fatalf("HTCondor token claims %+v", claims)
	}
	// Spent: a job that read the user-data finds nothing to take.
	if status, _ := enroll(t, set.AgentURL, set.EnrollToken, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}); status != http.StatusForbidden ||
		enrollRefusal(hook) != reasonEnrollSpent {
		t.Fatalf("second enrollment: status %d, reason %q", status, enrollRefusal(hook))
	}
	secrets := map[string]string{"check-in token": creds.Token, "HTCondor token": creds.Condor.Token}

	tok, condorExp := creds.Token, creds.Condor.Expires
	vmCheckin := func(state string) vmproto.CheckinResponse {
		t.Helper()
		status, body := checkin(t, set.AgentURL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: state, CondorTokenExpires: condorExp})
		if status != http.StatusOK {
			t.Fatalf("check-in %s: status %d: %s", state, status, body)
		}
		var resp vmproto.CheckinResponse
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatalf("check-in %s answer %q: %v", state, body, err)
		}
		if resp.Token != "" {
			tok = resp.Token
			secrets["renewed check-in token"] = resp.Token
		}
		if resp.Condor != nil {
			condorExp = resp.Condor.Expires
			secrets["renewed HTCondor token"] = resp.Condor.Token
		}
		return resp
	}

	if resp := vmCheckin(vmproto.CheckinReady); resp.Retire || resp.Token != "" || resp.Condor != nil {
		t.Fatalf("first check-in: %+v", resp)
	}
	waitChanged(t, a, "the VM to report ready")
	if st, ok := a.vms.get(s.ID); !ok || !st.ready {
		t.Fatal("VM not ready")
	}
	// Two thirds of the check-in token's life later: a new one.
	clock.Add(a.cfg.TokenTTL*2/3 + time.Second)
	if resp := vmCheckin(vmproto.CheckinReady); resp.Token == "" || resp.Condor != nil || !resp.TokenExpires.Equal(clock.Now().Add(a.cfg.TokenTTL).UTC()) {
		t.Fatalf("check-in token not renewed: %+v", resp)
	}
	// Check-ins every 10 minutes: the HTCondor token is renewed at the
	// first one in the last third of its life, not before.
	enrolled := clock.Now().Add(-a.cfg.TokenTTL*2/3 - time.Second)
	for {
		clock.Add(10 * time.Minute)
		resp := vmCheckin(vmproto.CheckinReady)
		age := clock.Now().Sub(enrolled)
		if resp.Condor == nil {
			if age > 16*time.Hour+10*time.Minute {
				t.Fatalf("HTCondor token not renewed %s after it was minted", age)
			}
			continue
		}
		if age < 16*time.Hour {
			t.Fatalf("HTCondor token renewed %s after it was minted, before its last third", age)
		}
		if !resp.Condor.Expires.Equal(clock.Now().Add(24 * time.Hour).Truncate(time.Second).UTC()) {
			t.Fatalf("renewed HTCondor token expires %s", resp.Condor.Expires)
		}
		break
	}

	if _, refused, err := a.retire(ctx, protocol.RetireCommand{VMIDs: []string{s.ID}, Deadline: time.Hour, Reason: "demand fell"}); err != nil || len(refused) > 0 {
		t.Fatal(err, refused)
	}
	resp := vmCheckin(vmproto.CheckinReady)
	if !resp.Retire || resp.Reason != "demand fell" || resp.Deadline <= 0 || resp.Deadline > time.Hour {
		t.Fatalf("after the order: %+v", resp)
	}
	if resp := vmCheckin(vmproto.CheckinRetiring); !resp.Retire {
		t.Fatalf("while retiring: %+v", resp)
	}
	if due := a.vms.due(clock.Now(), a.cfg.RetireGrace); len(due) != 0 {
		t.Fatalf("due for deletion before draining: %v", due)
	}
	vmCheckin(vmproto.CheckinDrained)
	waitChanged(t, a, "the VM to report drained")
	if due := a.vms.due(clock.Now(), a.cfg.RetireGrace); len(due) != 1 || due[0].id != s.ID || due[0].deadline {
		t.Fatalf("due for deletion: %v", due)
	}
	if _, refused, err := a.deleteVMs(ctx, []string{s.ID}, "retired", "", sourceReaper); err != nil || len(refused) > 0 {
		t.Fatal(err, refused)
	}

	// The deleted VM's tokens, replayed, are refused: no check-in, no
	// renewal, no enrollment.
	status, body = checkin(t, agentSrv.URL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady})
	if status != http.StatusForbidden || refusal(hook) != string(vmtoken.ReasonUnknownVM) || strings.Contains(body, "condor") {
		t.Fatalf("replay after deletion: status %d, reason %q", status, refusal(hook))
	}
	if status, _ := enroll(t, agentSrv.URL, set.EnrollToken, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}); status != http.StatusForbidden {
		t.Fatalf("enrollment after deletion: status %d", status)
	}

	// No secret in the user-data (but the spent enrollment token) or in
	// the agent's log (not even that).
	key, _ := os.ReadFile("idtoken/testdata/signing-key")
	secrets["gossip key"] = gossip.EncodeKey(gkeys.Pool)
	secrets["vm token key"] = base64.StdEncoding.EncodeToString(testKey)
	secrets["signing key (base64)"] = base64.StdEncoding.EncodeToString(key)
	secrets["signing key (hex)"] = hex.EncodeToString(key)
	secrets["signing key"] = string(key)
	for what, secret := range secrets {
		for _, part := range secretParts(secret) {
			if bytes.Contains(ud, []byte(part)) {
				t.Errorf("user-data holds the %s", what)
			}
		}
	}
	secrets["enrollment token"] = set.EnrollToken
	if len(hook.AllEntries()) < 5 {
		t.Fatalf("only %d log entries", len(hook.AllEntries()))
	}
	for _, e := range hook.AllEntries() {
		line, err := e.String()
		if err != nil {
			t.Fatal(err)
		}
		for what, secret := range secrets {
			for _, part := range secretParts(secret) {
				if strings.Contains(line, part) {
					t.Errorf("log line holds the %s: %s", what, line)
				}
			}
		}
	}
}

// secretParts are the pieces of a secret to look for: the whole, and for
// a token its signature (a token's payload is not secret, its signature
// is what would let anyone use it).
func secretParts(secret string) []string {
	parts := []string{secret}
	if i := strings.LastIndexByte(secret, '.'); i > 0 && len(secret)-i > 16 {
		parts = append(parts, secret[i+1:])
	}
	return parts
}

// enrollRefusal returns the reason logged for the last refused enrollment.
func enrollRefusal(hook *test.Hook) string {
	for i := len(hook.AllEntries()) - 1; i >= 0; i-- {
		e := hook.AllEntries()[i]
		if e.Message == "VM enrollment refused" {
			r, _ := e.Data["reason"].(string)
			return r
		}
	}
	return ""
}
