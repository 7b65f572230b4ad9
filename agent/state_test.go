package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/canopy-grid/canopy/agent/agentdb"
	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/pki"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// writePKI creates a CA in dir and a certificate for certSite, and returns
// an agent config for site using them, with its state in dir/state.
func writePKI(t *testing.T, dir, site, certSite string) Config {
	t.Helper()
	pkiDir := filepath.Join(dir, "pki")
	if err := pki.InitCA(pkiDir, []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.IssueAgent(certSite, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, certSite+".crt"), filepath.Join(dir, certSite+".key")
	if err := os.WriteFile(certPath, iss.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, iss.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return Config{Site: site, StateDir: filepath.Join(dir, "state"), CondorHost: "cm:9618", CheckinEvery: 10 * time.Second,
		Hub:          HubLink{Addr: "127.0.0.1:1", CA: filepath.Join(pkiDir, pki.CACertFile), Cert: certPath, Key: keyPath},
		GossipListen: "127.0.0.1:0", RetireGrace: 2 * time.Second}
}

// waitFor polls cond every 10 ms until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// stateWorld is an agent with a real state file, a cloud, a clock and a
// VM endpoint that follows the agent across restarts.
type stateWorld struct {
	t     *testing.T
	cfg   Config
	d     *vmCloud
	clock *testClock
	hook  *test.Hook
	a     *Agent
	cur   atomic.Pointer[Agent]
	srv   *httptest.Server
}

func newStateWorld(t *testing.T) *stateWorld {
	t.Helper()
	w := &stateWorld{t: t, cfg: writePKI(t, t.TempDir(), "west", "west"), d: newVMCloud(),
		clock: &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	w.start()
	w.a.setHubID("hub")
	w.a.vmURL = "http://127.0.0.1:1"
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.cur.Load().vmHandler().ServeHTTP(rw, r)
	}))
	t.Cleanup(func() {
		w.srv.Close()
		_ = w.a.Close()
	})
	return w
}

// start runs New on the world's config, as an agent process start does.
func (w *stateWorld) start() {
	w.t.Helper()
	l, hook := test.NewNullLogger()
	a, err := New(w.cfg, w.d, logrus.NewEntry(l))
	if err != nil {
		w.t.Fatal(err)
	}
	a.now = w.clock.Now
	a.vmURL = "http://127.0.0.1:1"
	w.a, w.hook = a, hook
	w.cur.Store(a)
}

// crash ends the agent as kill -9 would: nothing more is written.
func (w *stateWorld) crash() {
	w.t.Helper()
	if err := w.a.db.Close(); err != nil {
		w.t.Fatal(err)
	}
}

func (w *stateWorld) restart() {
	w.crash()
	w.start()
}

// boot boots a VM as the agent does and returns it and its token.
func (w *stateWorld) boot(name string) (driver.Server, string) {
	return bootVM(w.t, w.a, w.d, name, "atlas")
}

func (w *stateWorld) checkin(s driver.Server, tok, state string, jobs *vmproto.JobCount, errMsg string) vmproto.CheckinResponse {
	w.t.Helper()
	status, body := checkin(w.t, w.srv.URL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: state, Jobs: jobs, Error: errMsg})
	if status != http.StatusOK {
		w.t.Fatalf("check-in %s %s: %d %s", s.Name, state, status, body)
	}
	return vmproto.CheckinResponse{}
}

func (w *stateWorld) exec(cmd protocol.Command) *protocol.Result {
	w.t.Helper()
	if cmd.Epoch == "" {
		cmd.Epoch = w.a.epoch
	}
	r, _ := w.a.execute(context.Background(), cmd)
	if r == nil {
		w.t.Fatalf("command %s: no result", cmd.ID)
	}
	return r
}

func retireCmd(id string, deadline time.Duration, vms ...string) protocol.Command {
	return protocol.Command{ID: id, Op: protocol.CmdRetire, Retire: &protocol.RetireCommand{VMIDs: vms, Deadline: deadline, Reason: "demand fell"}}
}

func deleteCmd(id, override string, vms ...string) protocol.Command {
	return protocol.Command{ID: id, Op: protocol.CmdDelete, Delete: &protocol.DeleteCommand{VMIDs: vms, Reason: "test", Override: override}}
}

func jobs(running, claimed int) *vmproto.JobCount {
	return &vmproto.JobCount{Running: running, Claimed: claimed, At: time.Date(2026, 3, 1, 11, 59, 59, 0, time.UTC)}
}

// vmView is what the hub sees of one VM, for comparisons across restarts.
type vmView struct {
	Ready                    bool
	ReadyAt, LastSeen        time.Time
	Retiring, Unreachable    bool
	RetireState, RetireError string
	Jobs                     string
	Foreign                  bool
	Hub, CloudStatus         string
	State                    protocol.VMState
}

func viewOf(inv protocol.Inventory) map[string]vmView {
	out := map[string]vmView{}
	for _, vm := range inv.VMs {
		v := vmView{Ready: vm.Ready, ReadyAt: vm.ReadyAt, LastSeen: vm.LastSeen, Retiring: vm.Retiring, Unreachable: vm.Unreachable,
			RetireState: vm.RetireState, RetireError: vm.RetireError, Foreign: vm.Foreign, Hub: vm.Hub, CloudStatus: vm.CloudStatus, State: vm.State}
		if vm.Jobs != nil {
			v.Jobs = fmt.Sprintf("%d/%d@%s", vm.Jobs.Running, vm.Jobs.Claimed, vm.Jobs.At.Format(time.RFC3339Nano))
		}
		out[vm.Name] = v
	}
	return out
}

// TestRestartChangesNothingTheHubSees: an agent killed right after an
// inventory reports, once restarted, the very same VMs: ready and since
// when, last check-in, job counts, retirement progress and errors,
// ownership. Its commands of the previous run are answered from the state
// file, tokens of servers it deleted stay refused, and its second line
// still holds.
func TestRestartChangesNothingTheHubSees(t *testing.T) {
	w := newStateWorld(t)
	ctx := context.Background()
	type vm struct {
		s   driver.Server
		tok string
	}
	vms := map[string]vm{}
	for _, name := range []string{"idle", "busy", "draining", "failed", "drained", "silent"} {
		s, tok := w.boot(name)
		vms[name] = vm{s, tok}
	}
	for _, name := range []string{"idle", "busy", "draining", "failed", "drained"} {
		w.clock.Add(time.Second)
		j := jobs(0, 0)
		if name == "busy" || name == "draining" {
			j = jobs(2, 2)
		}
		w.checkin(vms[name].s, vms[name].tok, vmproto.CheckinReady, j, "")
	}
	if r := w.exec(retireCmd("r1", time.Hour, vms["draining"].s.ID, vms["failed"].s.ID, vms["drained"].s.ID)); !r.OK {
		t.Fatalf("retire: %+v", r)
	}
	w.checkin(vms["draining"].s, vms["draining"].tok, vmproto.CheckinRetiring, jobs(1, 1), "")
	w.checkin(vms["failed"].s, vms["failed"].tok, vmproto.CheckinFailed, nil, "condor_off: permission denied")
	w.checkin(vms["drained"].s, vms["drained"].tok, vmproto.CheckinDrained, jobs(0, 0), "")
	// A server another hub booted, in the same project.
	other, _ := w.d.Boot(ctx, driver.BootSpec{Name: "theirs", Metadata: map[string]string{driver.MetaHub: "other-hub"}})
	// A boot whose result the hub may replay after the restart.
	if r := w.exec(bootCmd("b1", "fresh")); !r.OK {
		t.Fatalf("boot: %+v", r)
	}
	// A VM deleted by this agent; its token must stay refused.
	gone, goneTok := w.boot("gone")
	w.checkin(gone, goneTok, vmproto.CheckinReady, jobs(0, 0), "")
	if r := w.exec(deleteCmd("d1", "", gone.ID)); !r.OK {
		t.Fatalf("delete: %+v", r)
	}

	before, err := w.a.takeInventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldEpoch := w.a.epoch
	w.restart()

	after, err := w.a.inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vb, va := viewOf(before), viewOf(after)
	if len(vb) != 8 || len(va) != len(vb) {
		t.Fatalf("inventories list %d and %d VMs", len(vb), len(va))
	}
	for name, b := range vb {
		a := va[name]
		if !a.ReadyAt.Equal(b.ReadyAt) || !a.LastSeen.Equal(b.LastSeen) {
			t.Errorf("%s: times %v/%v after restart, %v/%v before", name, a.ReadyAt, a.LastSeen, b.ReadyAt, b.LastSeen)
		}
		a.ReadyAt, a.LastSeen, b.ReadyAt, b.LastSeen = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if a != b {
			t.Errorf("%s after restart:\n %+v\nbefore:\n %+v", name, a, b)
		}
	}
	// Spot checks that the views say what they should.
	if v := vb["busy"]; !v.Ready || !strings.HasPrefix(v.Jobs, "2/2@") || v.Retiring {
		t.Errorf("busy: %+v", v)
	}
	if v := vb["failed"]; v.RetireState != protocol.RetireFailed || v.RetireError != "condor_off: permission denied" {
		t.Errorf("failed: %+v", v)
	}
	if v := vb["draining"]; v.RetireState != protocol.RetireDraining || !strings.HasPrefix(v.Jobs, "1/1@") {
		t.Errorf("draining: %+v", v)
	}
	if v := vb["drained"]; v.RetireState != protocol.RetireDrained {
		t.Errorf("drained: %+v", v)
	}
	if v := vb["silent"]; v.Ready || v.Jobs != "" || v.Foreign {
		t.Errorf("silent: %+v", v)
	}
	if v := vb["theirs"]; !v.Foreign || v.Hub != "other-hub" {
		t.Errorf("theirs: %+v", v)
	}

	if w.a.epoch == oldEpoch {
		t.Fatal("the restarted agent kept its epoch")
	}
	// A command planned on the previous run is stale...
	boots := w.d.n
	if r := w.exec(protocol.Command{ID: "b2", Op: protocol.CmdBoot, Epoch: oldEpoch, Boot: bootCmd("b2", "late").Boot}); r.OK ||
		r.Class != protocol.ErrClassStale || w.d.n != boots {
		t.Fatalf("stale boot: %+v (boots %d -> %d)", r, boots, w.d.n)
	}
	// ... but one it carried out is answered from the state file.
	if r, fresh := w.a.execute(ctx, protocol.Command{ID: "b1", Op: protocol.CmdBoot, Epoch: oldEpoch, Boot: bootCmd("b1", "fresh").Boot}); fresh ||
		r == nil || !r.OK || len(r.VMIDs) != 1 || w.d.n != boots {
		t.Fatalf("replayed boot after restart: fresh=%v %+v", fresh, r)
	}
	// The deleted server's token is still refused.
	if status, _ := checkin(t, w.srv.URL, goneTok, vmproto.CheckinRequest{ServerID: gone.ID, Server: gone.Name, State: vmproto.CheckinReady}); status != http.StatusForbidden {
		t.Fatalf("deleted VM's token after restart: %d", status)
	}
	// The second line holds on what the previous run learnt: busy's two
	// jobs are as fresh as before the restart.
	if r := w.exec(deleteCmd("d2", "", vms["busy"].s.ID, vms["draining"].s.ID, other.ID)); r.OK || r.Class != protocol.ErrClassRefused ||
		len(r.Refused) != 3 || len(r.VMIDs) != 0 {
		t.Fatalf("delete after restart: %+v", r)
	}
	// The hub's id came back from the state file too: own servers are not
	// foreign before any Welcome.
	if id := w.a.currentHubID(); id != "hub" {
		t.Fatalf("hub id after restart: %q", id)
	}
}

// TestIntentDurableBeforeOK: a retirement order and a deletion are in the
// state file when their command answers, however soon the agent dies;
// check-in changes are written within flushEvery.
func TestIntentDurableBeforeOK(t *testing.T) {
	w := newStateWorld(t)
	s1, tok1 := w.boot("vm-1")
	s2, _ := w.boot("vm-2")
	if r := w.exec(retireCmd("r1", time.Hour, s1.ID)); !r.OK {
		t.Fatalf("retire: %+v", r)
	}
	if r := w.exec(deleteCmd("d1", "", s2.ID)); !r.OK {
		t.Fatalf("delete: %+v", r)
	}
	w.restart()
	st, ok := w.a.vms.get(s1.ID)
	if !ok || st.retireState != protocol.RetireOrdered || !st.retireBy.Equal(w.clock.Now().Add(time.Hour)) || st.reason != "demand fell" {
		t.Fatalf("retirement after restart: %+v (found %v)", st, ok)
	}
	if !w.a.vms.wasDeleted(s2.ID) {
		t.Fatal("deletion not recorded")
	}

	// Check-ins: batched, written by the flush loop within a second.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { w.a.flushLoop(ctx); close(done) }()
	commits := w.a.StateCommits()
	w.checkin(s1, tok1, vmproto.CheckinRetiring, jobs(3, 4), "")
	waitFor(t, 10*time.Second, "the check-in to be written", func() bool { return w.a.StateCommits() > commits })
	cancel()
	<-done
	w.restart()
	st, _ = w.a.vms.get(s1.ID)
	if st.jobs == nil || st.jobs.Running != 3 || st.jobs.Claimed != 4 || st.retireState != protocol.RetireDraining {
		t.Fatalf("check-in after restart: %+v", st)
	}
}

// TestCorruptStateRefusesToStart: an unreadable state file stops the
// agent with an error naming the file; nothing is silently dropped.
func TestCorruptStateRefusesToStart(t *testing.T) {
	tests := []struct {
		name  string
		spoil func(t *testing.T, path string)
		want  string
	}{
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "unreadable"},
		{"bad record", func(t *testing.T, path string) {
			db, err := agentdb.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Commit(&agentdb.Batch{VMs: map[string]*agentdb.VM{"x": {Retire: &agentdb.Retirement{State: "sleeping"}}}}); err != nil {
				t.Fatal(err)
			}
		}, `bucket vms, key "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writePKI(t, t.TempDir(), "west", "west")
			if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(cfg.StateDir, agentdb.FileName)
			tt.spoil(t, path)
			l, _ := test.NewNullLogger()
			_, err := New(cfg, newVMCloud(), logrus.NewEntry(l))
			var ce *agentdb.CorruptError
			if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New on a spoilt state file: %v", err)
			}
		})
	}
}

// TestCheckinLoadBatchesWrites: many VMs checking in cost about one
// transaction per flushEvery, not one per check-in. It logs the measured
// rate (the figure in the issue note).
func TestCheckinLoadBatchesWrites(t *testing.T) {
	w := newStateWorld(t)
	w.a.now = time.Now // before booting: tokens are minted on this clock
	const n = 500
	type vm struct {
		s   driver.Server
		tok string
	}
	vms := make([]vm, n)
	for i := range vms {
		s, tok := w.boot(fmt.Sprintf("vm-%03d", i))
		vms[i] = vm{s, tok}
	}
	if err := w.a.flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.a.flushLoop(ctx); close(done) }()
	start, commits := time.Now(), w.a.StateCommits()
	// Three rounds of 500 check-ins: ten times the load of 500 VMs
	// checking in every 10 s, if the rounds take 3 s.
	const rounds = 3
	for round := range rounds {
		roundStart := time.Now()
		work := make(chan vm)
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for v := range work {
					status, body := checkin(t, w.srv.URL, v.tok, vmproto.CheckinRequest{ServerID: v.s.ID, Server: v.s.Name,
						State: vmproto.CheckinReady, Jobs: &vmproto.JobCount{Running: round, Claimed: round, At: time.Now()}})
					if status != http.StatusOK {
						t.Errorf("check-in: %d %s", status, body)
					}
				}
			})
		}
		for _, v := range vms {
			work <- v
		}
		close(work)
		wg.Wait()
		if rest := time.Second - time.Since(roundStart); rest > 0 {
			<-time.After(rest) // one round per second: pacing the load
		}
	}
	cancel()
	<-done
	elapsed := time.Since(start)
	got := w.a.StateCommits() - commits
	t.Logf("%d check-ins from %d VMs in %s: %d state commits (%.1f per second)", rounds*n, n, elapsed.Round(time.Millisecond),
		got, float64(got)/elapsed.Seconds())
	if limit := uint64(elapsed/flushEvery) + 2; got > limit {
		t.Fatalf("%d commits in %s, want at most %d", got, elapsed, limit)
	}
	st, _ := w.a.vms.get(vms[n-1].s.ID)
	if st.jobs == nil || st.jobs.Running != rounds-1 {
		t.Fatalf("last check-in not recorded: %+v", st)
	}
}

// TestSiteMustMatchCertificate: an agent configured for one site with
// another site's certificate refuses to start, naming both.
func TestSiteMustMatchCertificate(t *testing.T) {
	cfg := writePKI(t, t.TempDir(), "west", "east")
	l, _ := test.NewNullLogger()
	_, err := New(cfg, newVMCloud(), logrus.NewEntry(l))
	if err == nil || !strings.Contains(err.Error(), `site is "west"`) || !strings.Contains(err.Error(), `identifies site "east"`) {
		t.Fatalf("New: %v", err)
	}
	// The matching certificate starts.
	cfg = writePKI(t, t.TempDir(), "east", "east")
	a, err := New(cfg, newVMCloud(), logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
}
