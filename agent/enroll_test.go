package agent

import (
	"bytes"
	"context"
	"crypto/tls"
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

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// TestEnrollIdentity: an enrollment is accepted once, for the server its
// token was minted for, and refused, with a precise reason logged and in
// the answer, in every other case.
func TestEnrollIdentity(t *testing.T) {
	type world struct {
		a     *Agent
		d     *vmCloud
		clock *testClock
	}
	tests := []struct {
		name string
		// setup boots what it needs and returns the token and request.
		setup      func(t *testing.T, w world) (string, vmproto.EnrollRequest)
		wantStatus int
		wantReason string // "" for accepted
	}{
		{"own token", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusOK, ""},
		{"no token", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, _ := bootServer(t, w.a, w.d, "vm-a", "atlas")
			return "", vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusUnauthorized, reasonNoToken},
		{"no server id", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			_, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.EnrollRequest{Server: "vm-a"}
		}, http.StatusBadRequest, reasonInvalid},
		{"spent", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			if _, ok := w.a.enrolls.claim(s.Metadata[driver.MetaTokenID], s.ID, w.clock.Now()); !ok {
				t.Fatal("claim")
			}
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, reasonEnrollSpent},
		{"expired", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			w.clock.Add(w.a.cfg.EnrollTTL + time.Second)
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, string(vmtoken.ReasonExpired)},
		{"a check-in token", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootVM(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongUse)},
		{"another server's token", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, _ := bootServer(t, w.a, w.d, "vm-a", "atlas")
			_, tokB := bootServer(t, w.a, w.d, "vm-b", "atlas")
			return tokB, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongServer)},
		{"another server's token and name", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, _ := bootServer(t, w.a, w.d, "vm-a", "atlas")
			_, tokB := bootServer(t, w.a, w.d, "vm-b", "atlas")
			return tokB, vmproto.EnrollRequest{ServerID: s.ID, Server: "vm-b"}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongServer)},
		{"no record of the token", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, _ := bootServer(t, w.a, w.d, "vm-a", "atlas")
			tok, err := w.a.signer.Mint(vmtoken.Claims{Site: "east", Server: "vm-a", Group: "atlas", Expires: w.clock.Now().Add(time.Hour),
				Nonce: "never-minted", Use: vmtoken.UseEnroll})
			if err != nil {
				t.Fatal(err)
			}
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, reasonEnrollUnknown},
		{"server not listed", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			if err := w.d.Delete(context.Background(), s.ID); err != nil {
				t.Fatal(err)
			}
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, string(vmtoken.ReasonUnknownVM)},
		{"server deleted by this agent", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			w.a.vms.forget(s.ID, w.clock.Now())
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, string(vmtoken.ReasonUnknownVM)},
		{"a later server of the same name", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			old, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			if err := w.d.Delete(context.Background(), old.ID); err != nil {
				t.Fatal(err)
			}
			s, _ := bootServer(t, w.a, w.d, "vm-a", "atlas")
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, string(vmtoken.ReasonReplayed)},
		{"server of another hub", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			w.a.setHubID("new-hub")
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, reasonForeignServer},
		{"hub not known yet", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			w.a.mu.Lock()
			w.a.hubID = ""
			w.a.mu.Unlock()
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, reasonForeignServer},
		{"server booted for another group", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			w.d.mu.Lock()
			srv := w.d.servers[s.ID]
			srv.Metadata = map[string]string{driver.MetaHub: "hub", driver.MetaGroup: "cms", driver.MetaTokenID: s.Metadata[driver.MetaTokenID]}
			w.d.servers[s.ID] = srv
			w.d.mu.Unlock()
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusForbidden, string(vmtoken.ReasonWrongGroup)},
		{"cloud cannot list servers", func(t *testing.T, w world) (string, vmproto.EnrollRequest) {
			s, tok := bootServer(t, w.a, w.d, "vm-a", "atlas")
			w.d.listErr = errors.New("nova: 503")
			return tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}
		}, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newVMCloud()
			clock := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			a, hook := newTestAgent(t, d, "east", clock)
			srv := vmServer(t, a)
			tok, req := tt.setup(t, world{a: a, d: d, clock: clock})
			status, body := enroll(t, srv.URL, tok, req)
			if status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", status, strings.TrimSpace(body), tt.wantStatus)
			}
			if got := enrollRefusal(hook); got != tt.wantReason {
				t.Fatalf("logged reason %q, want %q", got, tt.wantReason)
			}
			if tt.wantStatus == http.StatusForbidden && !strings.Contains(body, tt.wantReason) {
				t.Errorf("answer %q does not name the reason", body)
			}
			if tt.wantStatus != http.StatusOK {
				if tt.wantReason != reasonEnrollSpent && tt.wantReason != reasonEnrollUnknown {
					if e, ok := a.enrolls.get(d.servers[req.ServerID].Metadata[driver.MetaTokenID]); ok && !e.UsedAt.IsZero() {
						t.Error("a refused enrollment spent the token")
					}
				}
				return
			}
			var resp vmproto.EnrollResponse
			if err := json.Unmarshal([]byte(body), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.Condor == nil || resp.Token == "" {
				t.Fatalf("answer %+v", resp)
			}
			// The check-in token works; the enrollment token is spent.
			if status, body := checkin(t, srv.URL, resp.Token, vmproto.CheckinRequest{ServerID: req.ServerID, Server: req.Server,
				State: vmproto.CheckinReady, CondorTokenExpires: resp.Condor.Expires}); status != http.StatusOK {
				t.Fatalf("check-in with the enrolled token: %d %s", status, body)
			}
			if e, _ := a.enrolls.get(d.servers[req.ServerID].Metadata[driver.MetaTokenID]); e.UsedBy != req.ServerID {
				t.Errorf("enrollment record %+v", e)
			}
		})
	}
}

// TestEnrollOnceUnderRace: many enrollments with the same token at once:
// exactly one gets credentials.
func TestEnrollOnceUnderRace(t *testing.T) {
	d := newVMCloud()
	clock := &testClock{t: time.Now()}
	a, _ := newTestAgent(t, d, "east", clock)
	srv := vmServer(t, a)
	s, tok := bootServer(t, a, d, "vm-a", "atlas")
	const n = 20
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Go(func() {
			status, _ := enroll(t, srv.URL, tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name})
			statuses <- status
		})
	}
	wg.Wait()
	close(statuses)
	ok := 0
	for st := range statuses {
		switch st {
		case http.StatusOK:
			ok++
		case http.StatusForbidden:
		default:
			t.Errorf("status %d", st)
		}
	}
	if ok != 1 {
		t.Fatalf("%d enrollments succeeded, want 1", ok)
	}
	if got := testutil.ToFloat64(a.metrics.enrollsRefused.WithLabelValues(reasonEnrollSpent)); got != n-1 {
		t.Fatalf("%v refusals counted, want %d", got, n-1)
	}
}

// TestRenewal: what a check-in's answer renews, by the VM's situation.
func TestRenewal(t *testing.T) {
	tests := []struct {
		name string
		// since is how long after enrollment the check-in comes; condor
		// is the HTCondor token expiry the VM reports (relative to the
		// enrollment; 0: none).
		since, condor time.Duration
		noMinter      bool
		foreign       bool
		wantToken     bool
		wantCondor    bool
	}{
		{"fresh tokens", time.Minute, 24 * time.Hour, false, false, false, false},
		{"check-in token in its last third", 41 * time.Minute, 24 * time.Hour, false, false, true, false},
		{"HTCondor token in its last third", 10 * time.Minute, 10*time.Minute + 8*time.Hour - time.Second, false, false, false, true},
		{"HTCondor token just outside its last third", 10 * time.Minute, 10*time.Minute + 8*time.Hour + time.Second, false, false, false, false},
		{"VM holds no HTCondor token", time.Minute, 0, false, false, false, true},
		{"HTCondor token expired", time.Minute, -time.Hour, false, false, false, true},
		{"agent mints no HTCondor token", time.Minute, 0, true, false, false, false},
		{"server of another hub", 50 * time.Minute, 0, false, true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newVMCloud()
			start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			clock := &testClock{t: start}
			a, _ := newTestAgent(t, d, "east", clock)
			if tc.noMinter {
				a.condor = nil
			}
			srv := vmServer(t, a)
			s, tok := bootVM(t, a, d, "vm-a", "atlas")
			if tc.foreign {
				a.setHubID("new-hub")
			}
			var exp time.Time
			if tc.condor != 0 {
				exp = start.Add(tc.condor)
			}
			clock.Add(tc.since)
			status, body := checkin(t, srv.URL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady,
				CondorTokenExpires: exp})
			if status != http.StatusOK {
				t.Fatalf("check-in: %d %s", status, body)
			}
			var resp vmproto.CheckinResponse
			if err := json.Unmarshal([]byte(body), &resp); err != nil {
				t.Fatal(err)
			}
			if (resp.Token != "") != tc.wantToken || (resp.Condor != nil) != tc.wantCondor {
				t.Fatalf("renewed check-in token %v, HTCondor token %v; want %v, %v", resp.Token != "", resp.Condor != nil, tc.wantToken, tc.wantCondor)
			}
			if resp.Token != "" {
				if _, err := a.signer.Verify(resp.Token, "east", "vm-a", vmtoken.UseCheckin, clock.Now().Add(59*time.Minute)); err != nil {
					t.Errorf("renewed check-in token: %v", err)
				}
			}
		})
	}
}

// TestEnrollmentsDurable: a token is recorded before its server boots, a
// restarted agent still accepts it, and a spent token stays spent across
// a restart.
func TestEnrollmentsDurable(t *testing.T) {
	w := newStateWorld(t)
	w.a.condor = testCondorMinter(t, 24*time.Hour)
	// Boot through the agent: the records must be on disk when the cloud
	// is asked to boot.
	var pendingAtBoot []bool
	w.d.onBoot = func() { pendingAtBoot = append(pendingAtBoot, w.a.enrolls.pending()) }
	if r := w.exec(protocol.Command{ID: "b1", Op: protocol.CmdBoot, Boot: bootCmd("b1", "vm-a", "vm-b").Boot}); !r.OK {
		t.Fatalf("boot: %+v", r)
	}
	if len(pendingAtBoot) != 2 || pendingAtBoot[0] || pendingAtBoot[1] {
		t.Fatalf("enrollment records unsaved when the cloud booted: %v", pendingAtBoot)
	}
	tokens := map[string]string{}
	servers := map[string]driver.Server{}
	for id, s := range w.d.servers {
		set, err := vmproto.ParseUserData(w.d.userDataOf(s.Name))
		if err != nil {
			t.Fatal(err)
		}
		tokens[s.Name], servers[s.Name] = set.EnrollToken, w.d.servers[id]
	}
	w.restart()
	w.a.condor = testCondorMinter(t, 24*time.Hour)
	a := servers["vm-a"]
	if status, body := enroll(t, w.srv.URL, tokens["vm-a"], vmproto.EnrollRequest{ServerID: a.ID, Server: a.Name}); status != http.StatusOK {
		t.Fatalf("enrollment after a restart: %d %s", status, body)
	}
	w.restart()
	if status, _ := enroll(t, w.srv.URL, tokens["vm-a"], vmproto.EnrollRequest{ServerID: a.ID, Server: a.Name}); status != http.StatusForbidden ||
		enrollRefusal(w.hook) != reasonEnrollSpent {
		t.Fatalf("second enrollment after a restart: %d, reason %q", status, enrollRefusal(w.hook))
	}
	// Records are forgotten an hour after their tokens expire.
	w.clock.Add(w.a.cfg.EnrollTTL + enrollMemory + time.Minute)
	if err := w.a.flush(); err != nil {
		t.Fatal(err)
	}
	w.restart()
	if n := len(w.a.enrolls.byID); n != 0 {
		t.Fatalf("%d enrollment records kept past their memory", n)
	}
}

// TestEnrollRefusalsSummarised: a flood of replayed enrollment tokens
// writes one line per reason and a summary, and every refusal is counted.
func TestEnrollRefusalsSummarised(t *testing.T) {
	d := newVMCloud()
	clock := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	a, hook := newTestAgent(t, d, "east", clock)
	srv := vmServer(t, a)
	s, tok := bootServer(t, a, d, "vm-a", "atlas")
	if status, _ := enroll(t, srv.URL, tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name}); status != http.StatusOK {
		t.Fatal(status)
	}
	const flood = 100
	for range flood {
		enroll(t, srv.URL, tok, vmproto.EnrollRequest{ServerID: s.ID, Server: s.Name})
	}
	clock.Add(refusalLogEvery)
	a.enrollLog.flush()
	full, summaries := 0, 0
	for _, e := range hook.AllEntries() {
		switch {
		case e.Message == "VM enrollment refused":
			full++
			if d, _ := e.Data["detail"].(string); !strings.Contains(d, "used at") || !strings.Contains(d, s.ID) {
				t.Errorf("refusal detail %q does not say when and by whom the token was spent", d)
			}
		case strings.HasPrefix(e.Message, "VM enrollments refused"):
			summaries++
			if n, _ := e.Data["refused"].(map[string]int); n[reasonEnrollSpent] != flood-1 {
				t.Errorf("summary %v", n)
			}
		}
	}
	if full != 1 || summaries != 1 {
		t.Fatalf("%d full lines and %d summaries, want 1 and 1", full, summaries)
	}
	if got := testutil.ToFloat64(a.metrics.enrollsRefused.WithLabelValues(reasonEnrollSpent)); got != flood {
		t.Fatalf("counted %v, want %d", got, flood)
	}
}

// BenchmarkEnrollment is a VM's enrollment as the agent serves it: a new
// TLS connection (a fresh VM), the token checks, the server lookup (a
// cached listing), the spent mark committed to agent.db (one bbolt
// transaction with its fsync), and both tokens minted.
func BenchmarkEnrollment(b *testing.B) {
	cfg := writePKI(b, b.TempDir(), "west", "west")
	d := newVMCloud()
	l := logrus.New()
	l.SetOutput(io.Discard)
	a, err := New(cfg, d, logrus.NewEntry(l))
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	a.condor = testCondorMinter(b, 24*time.Hour)
	a.setHubID("hub")
	srv := vmServer(b, a)
	type vm struct {
		s   driver.Server
		tok string
	}
	vms := make([]vm, b.N)
	for i := range vms {
		s, tok := bootServer(b, a, d, fmt.Sprintf("vm-%d", i), "atlas")
		vms[i] = vm{s, tok}
	}
	if err := a.flush(); err != nil {
		b.Fatal(err)
	}
	conf := vmClient(b, srv.URL).Transport.(*http.Transport).TLSClientConfig
	commits := a.StateCommits()
	b.ResetTimer()
	for i := range vms {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}}
		body, _ := json.Marshal(vmproto.EnrollRequest{ServerID: vms[i].s.ID, Server: vms[i].s.Name})
		r, _ := http.NewRequest(http.MethodPost, srv.URL+vmproto.PathEnroll, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+vms[i].tok)
		resp, err := c.Do(r)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.StopTimer()
	if got := a.StateCommits() - commits; got < uint64(b.N) {
		b.Fatalf("%d commits for %d enrollments", got, b.N)
	}
}

// TestVMEndpointTLSOnly: the VM endpoint speaks TLS 1.3 only; plain HTTP
// and older TLS are refused before any handler runs, logged once per
// interval and counted.
func TestVMEndpointTLSOnly(t *testing.T) {
	d := newVMCloud()
	clock := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	a, hook := newTestAgent(t, d, "east", clock)
	srv := httptest.NewUnstartedServer(a.vmHandler())
	srv.TLS = a.vmTLS
	srv.Config.ErrorLog = vmEndpointErrorLog(a)
	srv.StartTLS()
	defer srv.Close()
	plain := "http://" + srv.Listener.Addr().String() + vmproto.PathCheckin
	conf := vmClient(t, tlsServer(t, a, a.vmHandler()).URL).Transport.(*http.Transport).TLSClientConfig.Clone()
	conf.MinVersion, conf.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	const n = 20
	for range n {
		if resp, err := http.Post(plain, "application/json", strings.NewReader("{}")); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "check-in") {
				t.Fatalf("plain HTTP answered %d %q", resp.StatusCode, b)
			}
		}
		if _, err := old.Post(srv.URL+vmproto.PathCheckin, "application/json", strings.NewReader("{}")); err == nil {
			t.Fatal("a TLS 1.2 client was served")
		}
	}
	waitCounted(t, func() bool {
		return testutil.ToFloat64(a.metrics.vmTLSErrors.WithLabelValues("TLS handshake failed")) >= 2*n
	})
	full := 0
	for _, e := range hook.AllEntries() {
		if e.Message == "VM endpoint connection refused" {
			full++
		}
	}
	if full != 1 {
		t.Fatalf("%d full log lines for %d refused connections, want 1", full, 2*n)
	}
	if got := testutil.ToFloat64(a.metrics.checkinsRefused.WithLabelValues(reasonNoToken)); got != 0 {
		t.Fatalf("a refused connection reached the check-in handler (%v)", got)
	}
}

// waitCounted polls cond every 10 ms for up to 5 s.
func waitCounted(t *testing.T, cond func() bool) {
	t.Helper()
	waitFor(t, 5*time.Second, "the refused connections to be counted", cond)
}

// TestRenewalRetry: a VM that keeps reporting an expiring HTCondor token
// (its answer lost, or a vmagent that ignores renewals) gets another only
// after a minute, not at every check-in.
func TestRenewalRetry(t *testing.T) {
	d := newVMCloud()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := &testClock{t: start}
	a, hook := newTestAgent(t, d, "east", clock)
	srv := vmServer(t, a)
	s, tok := bootVM(t, a, d, "vm-a", "atlas")
	exp := start.Add(time.Hour) // within the last third of a 24 h token
	var got []time.Duration
	for range 30 {
		status, body := checkin(t, srv.URL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady,
			CondorTokenExpires: exp})
		if status != http.StatusOK {
			t.Fatalf("check-in: %d %s", status, body)
		}
		var resp vmproto.CheckinResponse
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Condor != nil {
			got = append(got, clock.Now().Sub(start))
		}
		clock.Add(5 * time.Second)
	}
	if want := []time.Duration{0, time.Minute, 2 * time.Minute}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tokens sent at %v, want %v", got, want)
	}
	minted := 0
	for _, e := range hook.AllEntries() {
		if e.Message == "HTCondor token minted" {
			minted++
		}
	}
	if minted != 3 {
		t.Fatalf("%d tokens minted and logged, want 3", minted)
	}
}
