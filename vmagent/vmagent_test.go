package vmagent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/pkitest"
	"github.com/canopy-grid/canopy/protocol/userdata"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// fakeAgent is a site agent's VM endpoint (served over TLS with a VM
// endpoint certificate from a test CA, see pkitest): it enrolls the VM
// once, then answers check-ins: ready until it has seen readyCheckins,
// then a retirement order. At check-in renewAt (if not zero) it answers
// with new check-in and HTCondor tokens; from then on only the new
// check-in token is accepted.
type fakeAgent struct {
	t             testing.TB
	enrollToken   string
	readyCheckins int
	renewAt       int
	retiring      chan struct{} // closed at the first "retiring" check-in

	mu       sync.Mutex
	token    string // the check-in token now valid
	enrolled int    // enrollments answered
	refused  int    // enrollments refused (token spent)
	states   []string
	reqs     []vmproto.CheckinRequest
}

// Tokens the fake agent gives.
const (
	fakeCheckinToken  = "checkin.one"
	fakeCheckinToken2 = "checkin.two"
	fakeCondorToken   = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJzdWIiOiJvbmUifQ.c2lnMQ"
	fakeCondorToken2  = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJzdWIiOiJ0d28ifQ.c2lnMg"
)

// fakeCondorExpires is when the fake agent's HTCondor tokens expire.
var fakeCondorExpires = []time.Time{time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)}

func (a *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.TLS == nil {
		http.Error(w, "TLS only", http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case vmproto.PathEnroll:
		if r.Header.Get("Authorization") != "Bearer "+a.enrollToken {
			http.Error(w, "enrollment refused: bad token", http.StatusForbidden)
			return
		}
		if a.enrolled > 0 {
			a.refused++
			http.Error(w, "enrollment refused: enrollment token already used", http.StatusForbidden)
			return
		}
		a.enrolled++
		a.token = fakeCheckinToken
		_ = json.NewEncoder(w).Encode(vmproto.EnrollResponse{Token: fakeCheckinToken, TokenExpires: time.Now().Add(time.Hour),
			Condor: &vmproto.CondorToken{Token: fakeCondorToken, Expires: fakeCondorExpires[0]}, GossipKey: ""})
	case vmproto.PathCheckin:
		if a.token == "" || r.Header.Get("Authorization") != "Bearer "+a.token {
			http.Error(w, "check-in refused: bad token", http.StatusForbidden)
			return
		}
		var req vmproto.CheckinRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.states = append(a.states, req.State)
		a.reqs = append(a.reqs, req)
		n := len(a.states)
		if req.State == vmproto.CheckinRetiring && a.retiring != nil {
			close(a.retiring)
			a.retiring = nil
		}
		resp := vmproto.CheckinResponse{}
		if n > a.readyCheckins {
			resp = vmproto.CheckinResponse{Retire: true, Deadline: time.Hour, Reason: "demand fell"}
		}
		if n == a.renewAt {
			a.token = fakeCheckinToken2
			resp.Token, resp.TokenExpires = fakeCheckinToken2, time.Now().Add(time.Hour)
			resp.Condor = &vmproto.CondorToken{Token: fakeCondorToken2, Expires: fakeCondorExpires[1]}
		}
		_ = json.NewEncoder(w).Encode(resp)
	default:
		http.NotFound(w, r)
	}
}

func (a *fakeAgent) States() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.states...)
}

func (a *fakeAgent) requests() []vmproto.CheckinRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]vmproto.CheckinRequest(nil), a.reqs...)
}

func (a *fakeAgent) enrollments() (ok, refused int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.enrolled, a.refused
}

// compact removes consecutive duplicates.
func compact(s []string) []string {
	var out []string
	for _, v := range s {
		if len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}

// fakeVM is a VM's metadata service whose user-data points at a fake
// agent over TLS (the agent's CA in the settings).
func fakeVM(t testing.TB, agent *fakeAgent, edit func(*vmproto.Settings)) (*httptest.Server, *httptest.Server) {
	t.Helper()
	ca := pkitest.New(t)
	agentSrv := ca.Server(t, "east", agent)
	s := fullSettings()
	s.AgentURL, s.AgentCA, s.EnrollToken, s.CheckinEvery = agentSrv.URL, ca.PEM, agent.enrollToken, 5*time.Millisecond
	if edit != nil {
		edit(&s)
	}
	own, err := vmproto.RenderUserData(s)
	if err != nil {
		t.Fatal(err)
	}
	ud, err := userdata.Compose([]userdata.Part{
		{Type: userdata.TypeCloudConfig, Filename: "canopy.yaml", Content: own},
		{Type: userdata.TypeShellScript, Filename: "site.sh", Content: []byte("#!/bin/sh\ntrue\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return agentSrv, metadataServer(t, readFile(t, "testdata/metadata/nova-meta_data.json"), ud)
}

// noJobCount reports the count as unknown without running anything.
func noJobCount(context.Context) *vmproto.JobCount { return nil }

func TestRunContextualizesChecksInAndRetires(t *testing.T) {
	retiring := make(chan struct{})
	agent := &fakeAgent{t: t, enrollToken: "enroll.tok", readyCheckins: 3, renewAt: 2, retiring: retiring}
	_, mdSrv := fakeVM(t, agent, nil)

	root := t.TempDir()
	r := newFakeRunner(t, map[string][]answer{
		"mount":         {{}},
		"condor_master": {{}},
		"condor_who": {
			recorded(t, "live02_worker1_condor_who-quick_idle"),
			recorded(t, "live07_worker1_condor_who-quick_retiring"),
			recorded(t, "live09_worker1_condor_who-quick_startd-exited"),
		},
		"condor_off": {
			recorded(t, "live06_worker1_condor_off-peaceful-startd"),
			recorded(t, "live29_try1_condor_off-peaceful-master-addr"),
		},
		"condor_status": {
			recorded(t, "live05_worker1_condor_status-direct-addr_2jobs"),
			recorded(t, "live08_worker1_condor_status-direct-addr_retiring"),
		},
	})
	log, hook := testLog()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The job finishes only once the agent has heard that the VM retires.
	polls := 0
	var tokenAtStart string
	r.onRun = func(line string) {
		switch line {
		case statusCmd:
			if polls++; polls == 2 {
				select {
				case <-retiring:
				case <-ctx.Done():
				}
			}
		case "condor_master":
			// HTCondor starts enrolled, with its token in place.
			b, _ := os.ReadFile(filepath.Join(root, CondorTokenPath))
			tokenAtStart = string(b)
		}
	}
	err := Run(ctx, Options{Root: root, Source: HTTPSource{BaseURL: mdSrv.URL}, Runner: r, Log: log, RetirePoll: time.Millisecond,
		Jobs: noJobCount})
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run ended by the test's timeout")
	}
	if tokenAtStart != fakeCondorToken+"\n" {
		t.Errorf("token file at condor_master: %q", tokenAtStart)
	}
	for _, p := range []string{CondorConfigPath, CondorTokenPath, CredentialsPath, FstabPath, CVMFSLocalConfigPath, CondorStartedPath} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if got, want := compact(agent.States()), []string{vmproto.CheckinReady, vmproto.CheckinRetiring, vmproto.CheckinDrained}; !reflect.DeepEqual(got, want) {
		t.Errorf("check-in states %q, want %q", got, want)
	}
	// Renewal at the second check-in: the new token file, the new expiry
	// reported from then on, the new check-in token used (the fake agent
	// refuses the old one).
	if got := readFile(t, filepath.Join(root, CondorTokenPath)); got != fakeCondorToken2+"\n" {
		t.Errorf("token file after renewal: %q", got)
	}
	reqs := agent.requests()
	if len(reqs) < 3 || !reqs[0].CondorTokenExpires.Equal(fakeCondorExpires[0]) || !reqs[1].CondorTokenExpires.Equal(fakeCondorExpires[0]) ||
		!reqs[2].CondorTokenExpires.Equal(fakeCondorExpires[1]) {
		t.Errorf("reported HTCondor token expiries: %v", reqs)
	}
	if !hasEntry(hook, "tokens renewed") || !hasEntry(hook, "enrolled") {
		t.Error("enrollment or renewal not logged")
	}
	for path, mode := range map[string]os.FileMode{CredentialsPath: 0o600, CondorTokenPath: 0o600, filepath.Dir(CredentialsPath): 0o700 | os.ModeDir} {
		if st, err := os.Stat(filepath.Join(root, path)); err != nil || st.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", path, st.Mode(), err, mode)
		}
	}
	calls := r.Calls()
	// Retirement: probe, stop, probe (jobs finish), probe (startd gone):
	// drained, reported; then the master is stopped at its own address.
	want := []string{"mount /mnt/canopy", "condor_master", whoCmd, statusCmd, offCmd, whoCmd, statusCmd, whoCmd,
		whoCmd, masterOffCmd}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("commands:\n%q\nwant\n%q", calls, want)
	}
	if !hasEntry(hook, "contextualized") || !hasEntry(hook, "retirement ordered") || !hasEntry(hook, "retired; reported drained") {
		t.Error("missing log lines")
	}
	// Nothing secret in the log.
	for _, e := range hook.AllEntries() {
		line, _ := e.String()
		for _, secret := range []string{"enroll.tok", fakeCheckinToken, fakeCheckinToken2, "c2lnMQ", "c2lnMg"} {
			if strings.Contains(line, secret) {
				t.Errorf("log line holds a secret: %s", line)
			}
		}
	}
}

// TestRunEnrollsOnce: a vmagent restarted in the same VM uses the
// credentials it stored instead of enrolling again; a VM whose enrollment
// is refused (a spent token) stops before HTCondor starts, saying why.
func TestRunEnrollsOnce(t *testing.T) {
	agent := &fakeAgent{t: t, enrollToken: "enroll.tok", readyCheckins: 1000}
	_, mdSrv := fakeVM(t, agent, nil)
	root := t.TempDir()
	run := func(ctx context.Context, root string, r CommandRunner) error {
		log, _ := testLog()
		return Run(ctx, Options{Root: root, Source: HTTPSource{BaseURL: mdSrv.URL}, Runner: r, Log: log, Jobs: noJobCount})
	}
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		r := newFakeRunner(t, map[string][]answer{"mount": {{}}, "condor_master": {{}}, "condor_reconfig": {{}}})
		go func() { done <- run(ctx, root, r) }()
		before := len(agent.States())
		waitUntil(t, 10*time.Second, "check-ins", func() bool { return len(agent.States()) > before+2 })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	if ok, refused := agent.enrollments(); ok != 1 || refused != 0 {
		t.Fatalf("%d enrollments, %d refused; want 1 and 0", ok, refused)
	}
	// Another VM (a fresh root) with the same, spent, user-data.
	r := newFakeRunner(t, nil) // no command may run
	err := run(context.Background(), t.TempDir(), r)
	if err == nil || !strings.Contains(err.Error(), "enrollment refused") || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("err %v", err)
	}
	if calls := r.Calls(); len(calls) != 0 {
		t.Fatalf("commands ran after a refused enrollment: %q", calls)
	}
}

// TestRunTrustsOnlyItsAgent: a VM refuses an agent whose certificate
// its settings' CA did not issue for its site, before sending its
// enrollment token.
func TestRunTrustsOnlyItsAgent(t *testing.T) {
	tests := []struct {
		name string
		edit func(s *vmproto.Settings)
		want string
	}{
		{"another CA", func(s *vmproto.Settings) { s.AgentCA = pkitest.New(t).PEM }, "unknown authority"},
		{"another site", func(s *vmproto.Settings) { s.Site = "west" }, "not site west's VM endpoint certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agent := &fakeAgent{t: t, enrollToken: "enroll.tok"}
			_, mdSrv := fakeVM(t, agent, tc.edit)
			log, _ := testLog()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err := Run(ctx, Options{Root: t.TempDir(), Source: HTTPSource{BaseURL: mdSrv.URL}, Runner: newFakeRunner(t, nil), Log: log})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if ok, refused := agent.enrollments(); ok+refused != 0 {
				t.Fatal("the enrollment token reached an agent the VM does not trust")
			}
		})
	}
}

// waitUntil polls cond every 5 ms until it holds or limit passes.
func waitUntil(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		<-time.After(5 * time.Millisecond)
	}
}

// TestRunRestartedVMAgent: a vmagent restarted within one boot does not
// start HTCondor again, and reconfigures it only if its config changed.
func TestRunRestartedVMAgent(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	r := newFakeRunner(t, map[string][]answer{"condor_master": {{}}, "condor_reconfig": {{}}})
	if err := startCondor(ctx, root, r, true); err != nil {
		t.Fatal(err)
	}
	if err := startCondor(ctx, root, r, false); err != nil {
		t.Fatal(err)
	}
	if err := startCondor(ctx, root, r, true); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Calls(), []string{"condor_master", "condor_reconfig"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
}

func TestRunFailsClearly(t *testing.T) {
	md := readFile(t, "testdata/metadata/nova-meta_data.json")
	tests := []struct {
		name string
		ud   []byte
		want string
	}{
		{"no user-data", nil, "no user-data"},
		{"no settings", []byte("#!/bin/sh\n"), "read settings from user-data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := testLog()
			srv := metadataServer(t, md, tt.ud)
			err := Run(context.Background(), Options{Root: t.TempDir(), Source: HTTPSource{BaseURL: srv.URL},
				Runner: newFakeRunner(t, nil), Log: log})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// BenchmarkBootToConfig measures what a VM does between the vmagent's start
// and a written, valid configuration: read the local metadata service
// (meta_data.json and a two-part user-data), parse the settings and write
// every file (HTCondor config and secrets, fstab, CVMFS) into a fresh root.
func BenchmarkBootToConfig(b *testing.B) {
	s := fullSettings()
	own, err := vmproto.RenderUserData(s)
	if err != nil {
		b.Fatal(err)
	}
	site, err := os.ReadFile("../deploy/cloud-init/site-example.yaml")
	if err != nil {
		b.Fatal(err)
	}
	ud, err := userdata.Compose([]userdata.Part{
		{Type: userdata.TypeCloudConfig, Filename: "canopy.yaml", Content: own},
		{Type: userdata.TypeCloudConfig, Filename: "site.yaml", Content: site},
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := metadataServer(b, readFile(b, "testdata/metadata/nova-meta_data.json"), ud)
	src := HTTPSource{BaseURL: srv.URL, Client: srv.Client()}
	log, _ := testLog()
	r := LogRunner{Log: log}
	dir := b.TempDir()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		root := filepath.Join(dir, fmt.Sprintf("r%d", i))
		md, data, err := src.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		set, err := vmproto.ParseUserData(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Contextualize(ctx, root, md, set, StaticProxies(set.Proxies), r, log); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecontextualize is the same on a root already configured: what
// a restarted vmagent does (reads, compares, writes nothing).
func BenchmarkRecontextualize(b *testing.B) {
	s := fullSettings()
	ud, err := vmproto.RenderUserData(s)
	if err != nil {
		b.Fatal(err)
	}
	srv := metadataServer(b, readFile(b, "testdata/metadata/nova-meta_data.json"), ud)
	src := HTTPSource{BaseURL: srv.URL, Client: srv.Client()}
	log, _ := testLog()
	r := LogRunner{Log: log}
	root := b.TempDir()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		md, data, err := src.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		set, err := vmproto.ParseUserData(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Contextualize(ctx, root, md, set, StaticProxies(set.Proxies), r, log); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetchAndParse is the reading half of BenchmarkBootToConfig:
// the metadata service's two answers and the settings, no file written.
func BenchmarkFetchAndParse(b *testing.B) {
	ud, err := vmproto.RenderUserData(fullSettings())
	if err != nil {
		b.Fatal(err)
	}
	srv := metadataServer(b, readFile(b, "testdata/metadata/nova-meta_data.json"), ud)
	src := HTTPSource{BaseURL: srv.URL, Client: srv.Client()}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, data, err := src.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := vmproto.ParseUserData(data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStoredCredentials: what a restarted vmagent finds: its own
// credentials, none for another server (an image made from another VM),
// and a lost HTCondor token file reported as no token so the agent sends
// a new one; a damaged file is an error naming it.
func TestStoredCredentials(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	stored := &Credentials{ServerID: testMetadata.UUID, Token: "tok.sig", TokenExpires: exp, CondorExpires: exp}
	tests := []struct {
		name       string
		setup      func(t *testing.T, root string)
		wantNil    bool
		wantCondor time.Time
		wantErr    string
	}{
		{"own, with its token file", func(t *testing.T, root string) {
			if _, err := WriteCondorToken(root, testIDToken); err != nil {
				t.Fatal(err)
			}
		}, false, exp, ""},
		{"own, token file lost", func(*testing.T, string) {}, false, time.Time{}, ""},
		{"another server's", func(t *testing.T, root string) {
			other := *stored
			other.ServerID = "00000000-0000-4000-8000-000000000000"
			if err := saveCredentials(root, &other); err != nil {
				t.Fatal(err)
			}
		}, true, time.Time{}, ""},
		{"damaged", func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, CredentialsPath), []byte("{"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false, time.Time{}, CredentialsPath},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := saveCredentials(root, stored); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, root)
			log, _ := testLog()
			// An enrollment would fail: no agent at this URL.
			s := fullSettings()
			s.AgentURL = "https://127.0.0.1:1"
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			c, err := obtainCredentials(ctx, root, &http.Client{}, s, testMetadata, log)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
			case tc.wantNil:
				if err == nil {
					t.Fatalf("credentials %+v from another server's file", c)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if c.Token != "tok.sig" || !c.CondorExpires.Equal(tc.wantCondor) {
					t.Fatalf("credentials %+v", c)
				}
			}
		})
	}
}
