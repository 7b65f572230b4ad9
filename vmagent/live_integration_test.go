//go:build integration

package vmagent

// vmagent against the live HTCondor test pool (deploy/testbed/htcondor/up.sh),
// run as root:
//
//	go test -tags integration -count=1 -v -run Live ./vmagent/
//
// The VM is a worker started by internal/condortest in its own UTS and
// mount namespaces; vmagent runs in the test process and reaches the
// worker's HTCondor through nsenter, as the VM's own root would. Its site
// agent is liveAgent, over TLS, which enrolls it and gives it HTCondor
// tokens from condor_token_create (the real agent's Go-minted tokens are
// tested live in agent/idtoken; vmagent's tests may not use the agent's
// code).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/internal/condortest"
	"github.com/canopy-grid/canopy/internal/condortools"
	"github.com/canopy-grid/canopy/internal/pkitest"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// liveRunner runs vmagent's commands for a worker VM: condor_master asks
// the test goroutine to start the worker (StartWorker must run there);
// HTCondor's tools are found as ExecRunner finds them (bin and sbin) and
// run inside the worker; anything else (cvmfs_config) is only logged.
type liveRunner struct {
	tools condortools.Dirs
	start chan chan *condortest.Worker

	mu     sync.Mutex
	worker *condortest.Worker
	log    []string
}

func (r *liveRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	line := commandLine(name, args)
	if name == "condor_master" {
		reply := make(chan *condortest.Worker)
		select {
		case r.start <- reply:
		case <-ctx.Done():
			return nil, nil, -1, ctx.Err()
		}
		w := <-reply
		if w == nil {
			return nil, []byte("worker did not start"), 1, nil
		}
		r.mu.Lock()
		r.worker = w
		r.mu.Unlock()
		r.note("%s: started worker %s (pid %d)", line, w.Hostname, w.PID)
		return nil, nil, 0, nil
	}
	r.mu.Lock()
	w := r.worker
	r.mu.Unlock()
	if !strings.HasPrefix(name, "condor_") || w == nil {
		r.note("%s: not run", line)
		return nil, nil, 0, nil
	}
	cmd := w.CommandPath(ctx, r.tools.Path(name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code, err = ee.ExitCode(), nil
	}
	r.note("%s: exit %d %s", line, code, strings.TrimSpace(firstLines(stderr.Bytes(), 2)))
	return stdout.Bytes(), stderr.Bytes(), code, err
}

func (r *liveRunner) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

// liveAgent is the VM's site agent: it enrolls the VM once (a check-in
// token and an HTCondor token for the pool's worker identity, limited to
// what a worker needs, from condor_token_create), answers check-ins
// (ready until Retire, then a retirement order), renews the HTCondor
// token when the VM reports that a third of its lifetime is left (if
// renew), and notes what the VM reported.
type liveAgent struct {
	pool          *condortest.Pool
	enrollToken   string
	condorLife    time.Duration
	renew         bool
	retire        atomic.Bool
	checkinToken  string
	identity      string
	workerAuthz   []string
	renewalErrors atomic.Int32

	mu       sync.Mutex
	first    map[string]time.Time
	reports  []liveReport
	renewals []time.Time
	expiries []time.Time // of every HTCondor token given, in order
}

// liveReport is one check-in as the agent received it.
type liveReport struct {
	at   time.Time
	jobs *vmproto.JobCount
}

func newLiveAgent(t *testing.T, p *condortest.Pool, condorLife time.Duration, renew bool) *liveAgent {
	// The workers' own identity when the pool admits one (up.sh); these
	// tests are not about it (agent/idtoken's are), so an older pool's
	// condor@ identity, which ALLOW_DAEMON admits, does too.
	identity := p.WorkerIdentity
	if identity == "" {
		identity = "condor@" + p.TrustDomain
		t.Logf("the pool names no worker identity (an older up.sh): tokens for %s", identity)
	}
	return &liveAgent{pool: p, enrollToken: "enroll." + randomHex(t), checkinToken: "checkin." + randomHex(t), condorLife: condorLife,
		renew: renew, identity: identity, workerAuthz: []string{"ADVERTISE_STARTD", "ADVERTISE_MASTER"},
		first: map[string]time.Time{}}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// condorToken mints a token as the real agent would (its lifetime, the
// worker identity and authorizations).
func (a *liveAgent) condorToken() (*vmproto.CondorToken, error) {
	start := time.Now()
	tok, err := a.pool.TokenErr(a.identity, a.workerAuthz, a.condorLife)
	if err != nil {
		return nil, err
	}
	exp := start.Add(a.condorLife).Truncate(time.Second) // condor_token_create: iat + lifetime, whole seconds
	a.expiries = append(a.expiries, exp)
	return &vmproto.CondorToken{Token: tok, Expires: exp}, nil
}

func (a *liveAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch r.URL.Path {
	case vmproto.PathEnroll:
		if r.Header.Get("Authorization") != "Bearer "+a.enrollToken || len(a.expiries) > 0 {
			http.Error(w, "enrollment refused", http.StatusForbidden)
			return
		}
		ct, err := a.condorToken()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(vmproto.EnrollResponse{Token: a.checkinToken, TokenExpires: time.Now().Add(time.Hour), Condor: ct})
	case vmproto.PathCheckin:
		if r.Header.Get("Authorization") != "Bearer "+a.checkinToken {
			http.Error(w, "check-in refused", http.StatusForbidden)
			return
		}
		var req vmproto.CheckinRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		now := time.Now()
		if _, ok := a.first[req.State]; !ok {
			a.first[req.State] = now
		}
		a.reports = append(a.reports, liveReport{at: now, jobs: req.Jobs})
		resp := vmproto.CheckinResponse{}
		if a.retire.Load() {
			resp = vmproto.CheckinResponse{Retire: true, Deadline: 10 * time.Minute, Reason: "demand fell"}
		}
		if a.renew && req.CondorTokenExpires.Sub(now) < a.condorLife/3 {
			ct, err := a.condorToken()
			if err != nil {
				a.renewalErrors.Add(1)
			} else {
				resp.Condor = ct
				a.renewals = append(a.renewals, now)
			}
		}
		_ = json.NewEncoder(w).Encode(resp)
	default:
		http.NotFound(w, r)
	}
}

func (a *liveAgent) firstSeen(state string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.first[state]
	return t, ok
}

// reportsSince returns the check-ins received after t.
func (a *liveAgent) reportsSince(t time.Time) []liveReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []liveReport
	for _, r := range a.reports {
		if r.at.After(t) {
			out = append(out, r)
		}
	}
	return out
}

func (a *liveAgent) tokens() (expiries, renewals []time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.expiries...), append([]time.Time(nil), a.renewals...)
}

// liveVM is a VM: its worker and the vmagent running in it.
type liveVM struct {
	host, name, group string
	root              string
	agent             *liveAgent
	worker            *condortest.Worker
	runner            *liveRunner
	done              chan error
	cancel            context.CancelFunc
}

// startLiveVM boots a VM for host: its metadata, its user-data naming the
// agent over TLS, and vmagent running in the test process until the test
// ends (or the VM retires), which enrolls and starts the worker. extraConf
// is more of the worker's configuration, read after vmagent's.
func startLiveVM(t *testing.T, p *condortest.Pool, agent *liveAgent, host, extraConf string, every time.Duration) *liveVM {
	t.Helper()
	ca := pkitest.New(t)
	agentSrv := ca.Server(t, "live", agent)
	// A group of this test's own: jobs of other tests sharing the pool
	// stay off this VM.
	group := "live-" + randomHex(t)
	s := vmproto.Settings{AgentURL: agentSrv.URL, AgentCA: ca.PEM, EnrollToken: agent.enrollToken, CondorHost: p.Collector,
		CondorTrustDomain: p.TrustDomain, Site: "live", Group: group, VMType: "el9", CheckinEvery: every}
	ud, err := vmproto.RenderUserData(s)
	if err != nil {
		t.Fatal(err)
	}
	short := strings.SplitN(host, ".", 2)[0]
	name := "canopy-live-p1-0-" + short
	id := "1b4e28ba-2fa1-41d2-883f-" + fmt.Sprintf("%012x", time.Now().UnixNano()&0xffffffffffff)
	md := fmt.Sprintf(`{"uuid": %q, "hostname": %q, "name": %q, "meta": {}}`, id, host, name)
	mdSrv := metadataServer(t, md, ud)

	// The VM's root: readable by the worker's daemons (condor).
	root, err := os.MkdirTemp("", "vmagent-live-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	confDir := filepath.Join(root, filepath.Dir(CondorConfigPath))
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// vmagent's config names the VM's own /etc/condor; the worker's is
	// under root. Read after 50-canopy.conf.
	override := fmt.Sprintf("SEC_TOKEN_DIRECTORY = %s\n%s", filepath.Join(root, CondorTokenDir), extraConf)
	if err := os.WriteFile(filepath.Join(confDir, "99-live-test.conf"), []byte(override), 0o644); err != nil {
		t.Fatal(err)
	}

	vm := &liveVM{host: host, name: name, group: group, root: root, agent: agent, done: make(chan error, 1),
		runner: &liveRunner{tools: condortools.Dirs{Bin: p.BinDir}, start: make(chan chan *condortest.Worker)}}
	l := logrus.New()
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	l.SetOutput(testWriter{t})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	vm.cancel = cancel
	go func() {
		vm.done <- Run(ctx, Options{Root: root, Source: HTTPSource{BaseURL: mdSrv.URL}, Runner: vm.runner,
			Log: logrus.NewEntry(l), RetirePoll: time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		<-vm.done
		vm.done <- nil
		if t.Failed() {
			vm.runner.mu.Lock()
			for _, line := range vm.runner.log {
				t.Log(line)
			}
			vm.runner.mu.Unlock()
		}
	})
	select {
	case reply := <-vm.runner.start:
		vm.worker = p.StartWorker(t, condortest.WorkerOptions{Hostname: host, ConfigDir: confDir, Cpus: 2, MemoryMiB: 2048})
		reply <- vm.worker
	case err := <-vm.done:
		t.Fatalf("vmagent ended before starting HTCondor: %v", err)
	case <-ctx.Done():
		t.Fatal("vmagent never started HTCondor")
	}
	return vm
}

// submit submits a job of the VM's group that only this VM runs.
func (vm *liveVM) submit(t *testing.T, p *condortest.Pool, seconds int) int {
	t.Helper()
	return p.Submit(t, fmt.Sprintf(`executable = /bin/sleep
arguments = %d
should_transfer_files = YES
request_cpus = 1
request_memory = 64
request_disk = 1024
+CanopyGroup = %q
requirements = TARGET.Machine == %q
queue
`, seconds, vm.group, vm.host))
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
