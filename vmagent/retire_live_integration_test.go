//go:build integration

package vmagent

// vmagent against the live HTCondor test pool (deploy/testbed/htcondor/up.sh),
// run as root:
//
//	go test -tags integration -count=1 -v -run Live ./vmagent/
//
// The VM is a worker started by internal/condortest in its own UTS and
// mount namespaces; vmagent runs in the test process and reaches the
// worker's HTCondor through nsenter, as the VM's own root would.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
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

// liveAgent answers check-ins: ready until Retire is called, then a
// retirement order; it notes when it first hears each state.
type liveAgent struct {
	token  string
	retire atomic.Bool

	mu    sync.Mutex
	first map[string]time.Time
}

func (a *liveAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != vmproto.PathCheckin || r.Header.Get("Authorization") != "Bearer "+a.token {
		http.Error(w, "no", http.StatusForbidden)
		return
	}
	var req vmproto.CheckinRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	if _, ok := a.first[req.State]; !ok {
		a.first[req.State] = time.Now()
	}
	a.mu.Unlock()
	resp := vmproto.CheckinResponse{}
	if a.retire.Load() {
		resp = vmproto.CheckinResponse{Retire: true, Deadline: 10 * time.Minute, Reason: "demand fell"}
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func (a *liveAgent) firstSeen(state string) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.first[state]
	return t, ok
}

// TestLiveRetirement: a VM with a bare host name and one with a dotted host
// name each run a 20 s job; retirement is ordered while it runs. The job
// ends normally, vmagent reports the VM drained within seconds of the
// job's end (not before), and the VM's master exits and runs the power-off
// program within seconds too.
func TestLiveRetirement(t *testing.T) {
	for _, host := range []string{"livevm1", "livevm2.canopy.test"} {
		t.Run(host, func(t *testing.T) { liveRetirement(t, host) })
	}
}

func liveRetirement(t *testing.T, host string) {
	start := time.Now()
	p := condortest.Load(t)
	agent := &liveAgent{token: "tok.sig", first: map[string]time.Time{}}
	agentSrv := httptest.NewServer(agent)
	defer agentSrv.Close()

	// What the site agent would send this VM.
	s := vmproto.Settings{AgentURL: agentSrv.URL, Token: agent.token, CondorHost: p.Collector,
		Site: "live", Group: "atlas", VMType: "el9", CheckinEvery: 200 * time.Millisecond,
		CondorIDToken: p.Token(t, "condor@"+p.TrustDomain, nil, time.Hour)}
	ud, err := vmproto.RenderUserData(s)
	if err != nil {
		t.Fatal(err)
	}
	short := strings.SplitN(host, ".", 2)[0]
	name := "canopy-live-p1-0-" + short[len(short)-1:]
	md := fmt.Sprintf(`{"uuid": "1b4e28ba-2fa1-41d2-883f-0016d3cca42%s", "hostname": %q, "name": %q, "meta": {}}`,
		short[len(short)-1:], host, name)
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
	override := fmt.Sprintf("SEC_TOKEN_DIRECTORY = %s\n", filepath.Join(root, CondorTokenDir))
	if err := os.WriteFile(filepath.Join(confDir, "99-live-test.conf"), []byte(override), 0o644); err != nil {
		t.Fatal(err)
	}

	runner := &liveRunner{tools: condortools.Dirs{Bin: p.BinDir}, start: make(chan chan *condortest.Worker)}
	l := logrus.New()
	l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	l.SetOutput(testWriter{t})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	runDone := make(chan error, 1)
	go func() {
		runDone <- Run(ctx, Options{Root: root, Source: HTTPSource{BaseURL: mdSrv.URL}, Runner: runner,
			Log: logrus.NewEntry(l), RetirePoll: time.Second})
	}()
	defer func() {
		cancel()
		<-runDone
		for _, line := range runner.log {
			t.Log(line)
		}
	}()

	var w *condortest.Worker
	select {
	case reply := <-runner.start:
		w = p.StartWorker(t, condortest.WorkerOptions{Hostname: host, ConfigDir: confDir, Cpus: 2, MemoryMiB: 2048})
		reply <- w
	case err := <-runDone:
		t.Fatalf("vmagent ended before starting HTCondor: %v", err)
	case <-ctx.Done():
		t.Fatal("vmagent never started HTCondor")
	}
	slots := w.WaitSlots(t, time.Minute)
	if got := slots[0].String("CanopyVMName"); got != name {
		t.Fatalf("slot advertises CanopyVMName %q, want %q", got, name)
	}

	cluster := p.Submit(t, fmt.Sprintf(`executable = /bin/sleep
arguments = 20
should_transfer_files = YES
request_cpus = 1
request_memory = 64
request_disk = 1024
+CanopyGroup = "atlas"
requirements = TARGET.Machine == %q
queue
`, host))
	condortest.Eventually(t, time.Minute, 250*time.Millisecond, "the job running on "+host, func() (bool, error) {
		ads, err := p.QueryErr("condor_q", "-allusers", "-constraint", fmt.Sprintf("ClusterId == %d && JobStatus == 2", cluster), "-attributes", "ProcId")
		return len(ads) == 1, err
	})
	retireAt := time.Now()
	agent.retire.Store(true)
	t.Logf("job %d.0 running after %s; retirement ordered", cluster, retireAt.Sub(start).Round(time.Millisecond))

	var drainedAt time.Time
	condortest.Eventually(t, 2*time.Minute, 100*time.Millisecond, "vmagent reporting drained", func() (bool, error) {
		var ok bool
		drainedAt, ok = agent.firstSeen(vmproto.CheckinDrained)
		return ok, nil
	})
	select {
	case err := <-runDone:
		runDone <- err // for the deferred wait
		if err != nil {
			t.Fatalf("vmagent: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("vmagent still running a minute after reporting drained")
	}
	select {
	case <-w.Done():
	case <-time.After(time.Minute):
		t.Fatal("the worker's master still running a minute after vmagent reported drained")
	}

	h := p.History(t, "-constraint", fmt.Sprintf("ClusterId == %d", cluster),
		"-attributes", "JobStatus,ExitCode,CompletionDate,RemoteWallClockTime,LastRemoteHost")
	if len(h) != 1 {
		t.Fatalf("history: %v", h)
	}
	if st, _ := h[0].Int("JobStatus"); st != 4 {
		t.Errorf("JobStatus %d, want 4 (completed)", st)
	}
	if code, ok := h[0].Int("ExitCode"); !ok || code != 0 {
		t.Errorf("ExitCode %d (%v), want 0", code, ok)
	}
	if wall, _ := h[0].Int("RemoteWallClockTime"); wall < 20 {
		t.Errorf("RemoteWallClockTime %d s: the job did not run its 20 s", wall)
	}
	completed, _ := h[0].Int("CompletionDate")
	end := time.Unix(completed, 0) // whole seconds: the job ended in [end, end+1s)
	if !end.After(retireAt.Add(-time.Second)) {
		t.Errorf("job completed at %s, before the retirement was ordered at %s", end, retireAt)
	}
	drainLag := drainedAt.Sub(end)
	if drainLag < -time.Second {
		t.Errorf("vmagent reported drained at %s, before the job ended at %s", drainedAt, end)
	}
	runs := w.PoweroffRuns()
	if len(runs) != 1 {
		t.Fatalf("power-off program ran %d times, want once", len(runs))
	}
	offLag, exitLag := runs[0].Sub(end), w.ExitedAt().Sub(end)
	t.Logf("%s: job ended %s; drained reported +%s; power-off ran +%s; master exited +%s (retirement poll 1 s)",
		host, end.Format("15:04:05"), drainLag.Round(time.Millisecond), offLag.Round(time.Millisecond), exitLag.Round(time.Millisecond))
	const prompt = 10 * time.Second
	if drainLag > prompt || offLag > prompt || exitLag > prompt {
		t.Errorf("not prompt: drained +%s, power-off +%s, master exit +%s after the job's end (limit %s)", drainLag, offLag, exitLag, prompt)
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
