package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// vmCloud is a cloud whose servers are entries in a map (for the VM endpoint tests).
type vmCloud struct {
	mu      sync.Mutex
	servers map[string]driver.Server
	n       int
	listErr error
}

func newVMCloud() *vmCloud { return &vmCloud{servers: map[string]driver.Server{}} }

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
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	s := driver.Server{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", d.n), Name: spec.Name, Status: driver.StatusActive,
		Metadata: spec.Metadata, CreatedAt: time.Now()}
	d.servers[s.ID] = s
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

// newTestAgent is an agent for site east with d as its cloud, without a
// hub session: enough for its VM endpoint.
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
	return a, hook
}

// bootVM does what the agent's boot does for one server: mint its token
// and record the token's id in the server's metadata.
func bootVM(t *testing.T, a *Agent, d *vmCloud, name, group string) (driver.Server, string) {
	t.Helper()
	tok, id, err := a.mintVMToken(name, group)
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

func checkin(t *testing.T, url, tok string, req vmproto.CheckinRequest) (int, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	r, err := http.NewRequest(http.MethodPost, url+vmproto.PathCheckin, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
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
			tok, _, err := west.mintVMToken("vm-a", "atlas")
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
				Nonce: s.Metadata[driver.MetaTokenID]})
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
				Nonce: s.Metadata[driver.MetaTokenID]})
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
			tok, _, err := w.a.mintVMToken("vm-a", "atlas")
			if err != nil {
				t.Fatal(err)
			}
			s, _ := w.d.Boot(context.Background(), driver.BootSpec{Name: "vm-a", Metadata: map[string]string{driver.MetaHub: "hub", driver.MetaGroup: "atlas"}})
			return tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady}
		}, http.StatusForbidden, string(vmtoken.ReasonReplayed)},
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
			srv := httptest.NewServer(a.vmHandler())
			defer srv.Close()
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
	srv := httptest.NewServer(a.vmHandler())
	defer srv.Close()
	_, tok := bootVM(t, a, d, "vm-a", "atlas")
	for name, body := range map[string]string{
		"too big":       `{"server_id":"` + strings.Repeat("a", maxCheckinBody) + `"}`,
		"unknown field": `{"server_id":"x","server":"vm-a","state":"ready","admin":true}`,
		"not JSON":      `server=vm-a`,
	} {
		r, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/checkin", strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
}

// TestCheckinListsServersSparingly: check-ins reuse a recent server
// listing instead of asking the cloud each time.
func TestCheckinListsServersSparingly(t *testing.T) {
	d := &countingDriver{vmCloud: newVMCloud()}
	clock := &testClock{t: time.Now()}
	a, _ := newTestAgent(t, d, "east", clock)
	srv := httptest.NewServer(a.vmHandler())
	defer srv.Close()
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

// TestRetirementThroughCheckins plays a VM's side of the check-in contract
// (protocol/vmproto) against the agent's real check-in handler: the VM
// reads its settings from the user-data the agent rendered and reports
// ready, the hub orders its retirement, the VM learns it at its next
// check-in, drains and reports, the agent deletes the server, and the VM's
// token is refused from then on. The vmagent's side of the same exchange is
// tested in package vmagent; the real binaries together in deploy/demo.
func TestRetirementThroughCheckins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := newVMCloud()
	clock := &testClock{t: time.Now()}
	a, hook := newTestAgent(t, d, "east", clock)
	agentSrv := httptest.NewServer(a.vmHandler())
	defer agentSrv.Close()

	// Boot as the agent does: token, user-data, metadata.
	r, err := NewUserDataRenderer(VMContext{Proxies: [][]string{{"http://squid.example.org:3128"}},
		UserDataParts: []string{"../deploy/cloud-init/site-example.yaml", "../deploy/cloud-init/site-example.sh"}})
	if err != nil {
		t.Fatal(err)
	}
	s, tok := bootVM(t, a, d, "canopy-east-p1-0-0", "atlas")
	ud, err := r.Render(vmproto.Settings{AgentURL: agentSrv.URL, Token: tok, CondorHost: a.cfg.CondorHost, Site: "east",
		Group: "atlas", VMType: "el9", CheckinEvery: a.cfg.CheckinEvery})
	if err != nil {
		t.Fatal(err)
	}

	// The VM reads its settings back from the user-data.
	set, err := vmproto.ParseUserData(ud)
	if err != nil {
		t.Fatal(err)
	}
	if set.AgentURL != agentSrv.URL || set.Token != tok || set.Site != "east" || set.Group != "atlas" {
		t.Fatalf("settings read back: %+v", set)
	}
	vmCheckin := func(state string) vmproto.CheckinResponse {
		t.Helper()
		status, body := checkin(t, set.AgentURL, set.Token, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: state})
		if status != http.StatusOK {
			t.Fatalf("check-in %s: status %d: %s", state, status, body)
		}
		var resp vmproto.CheckinResponse
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatalf("check-in %s answer %q: %v", state, body, err)
		}
		return resp
	}

	if resp := vmCheckin(vmproto.CheckinReady); resp.Retire {
		t.Fatalf("retirement before any order: %+v", resp)
	}
	waitChanged(t, a, "the VM to report ready")
	if st, ok := a.vms.get(s.ID); !ok || !st.ready {
		t.Fatal("VM not ready")
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

	// The retired VM's token, replayed, is refused.
	status, _ := checkin(t, agentSrv.URL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady})
	if status != http.StatusForbidden || refusal(hook) != string(vmtoken.ReasonUnknownVM) {
		t.Fatalf("replay after deletion: status %d, reason %q", status, refusal(hook))
	}
}
