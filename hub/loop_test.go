package hub

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// scriptedSource returns the demand or error it is given.
type scriptedSource struct {
	d   demand.Demand
	err error
}

func (s *scriptedSource) Poll(context.Context, time.Time, []demand.PoolVM) (demand.Demand, error) {
	return s.d, s.err
}

// testEnv is a hub whose clock the test moves, and the directory its state
// lives in (to restart it).
type testEnv struct {
	t   *testing.T
	dir string
	h   *Hub
	now *time.Time
	cfg Config
}

func newEnv(t *testing.T, src Source, mutate ...func(*Config)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(filepath.Join(dir, "pki"), []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := Config{TLSDir: filepath.Join(dir, "pki"), StateFile: filepath.Join(dir, "hub.db"),
		Demand:  DemandConfig{Source: "trace", Trace: TraceConfig{File: "x"}},
		Planner: planner.Config{KeepAlive: time.Minute}}
	for _, m := range mutate {
		m(&cfg)
	}
	e := &testEnv{t: t, dir: dir, cfg: cfg}
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	e.now = &now
	e.start(src)
	return e
}

// start opens (or reopens, as after a crash) the hub on the env's state.
func (e *testEnv) start(src Source) {
	e.t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	h, err := New(e.cfg, src, log.WithField("t", e.t.Name()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { h.store.Close() })
	h.now = func() time.Time { return *e.now }
	h.loop.started = *e.now
	e.h = h
}

// crash drops the hub without any orderly stop (its file lock goes with
// the process, as after kill -9).
func (e *testEnv) crash() { _ = e.h.store.Close() }

func (e *testEnv) cycle() { e.h.loop.cycle(context.Background()) }

func (e *testEnv) advance(d time.Duration) { *e.now = e.now.Add(d) }

// connect gives the hub a connected cloud with one flavor and the VMs
// given, on a new session whose outgoing commands the test reads.
func (e *testEnv) connect(name string, vms ...protocol.VM) *session {
	l := e.h.linkFor(name)
	s := &session{id: int(e.h.sessionSeq.Add(1)), epoch: "ep-" + name, out: make(chan protocol.Message, 1024),
		done: make(chan struct{}), close: func(string) {}}
	l.mu.Lock()
	l.sess = s
	now := *e.now
	l.view.Store(&cloudView{Connected: true, Session: s.id, Epoch: s.epoch, ConnectedAt: now, LastHeartbeat: now})
	l.mu.Unlock()
	e.report(name, vms...)
	return s
}

// report delivers an inventory on the cloud's current session.
func (e *testEnv) report(name string, vms ...protocol.VM) {
	l := e.h.linkFor(name)
	s := l.current()
	for i := range vms {
		if vms[i].Hub == "" && !vms[i].Foreign {
			vms[i].Hub = e.h.cfg.ID
		}
	}
	inv := protocol.Inventory{Seq: uint64(e.now.Unix()), Flavors: []protocol.Flavor{{Name: "c2", VCPUs: 2, RAMMiB: 4096}},
		Limits: protocol.Limits{MaxCores: 100, MaxRAMMiB: -1, MaxInstances: -1}, VMs: vms, TakenAt: *e.now}
	e.h.receive(l, s, inv, e.h.log)
}

func (e *testEnv) setPolicy(name string, p *protocol.SitePolicy) {
	l := e.h.linkFor(name)
	l.update(l.current(), func(v *cloudView) {
		inv := *v.Inventory
		inv.Policy = p
		v.Inventory = &inv
	})
}

// disconnect ends the cloud's session.
func (e *testEnv) disconnect(name string) {
	l := e.h.linkFor(name)
	l.mu.Lock()
	if l.sess != nil {
		close(l.sess.done)
		l.sess = nil
	}
	v := *l.load()
	v.Connected = false
	l.view.Store(&v)
	l.mu.Unlock()
}

// drain returns the commands of one kind queued on s since the last drain
// (other messages are dropped).
func drain(s *session, op protocol.CommandKind) []protocol.Command {
	var out []protocol.Command
	for {
		select {
		case m := <-s.out:
			if c, ok := m.(protocol.Command); ok && c.Op == op {
				out = append(out, c)
			}
		default:
			return out
		}
	}
}

func vm(id, name string, mutate ...func(*protocol.VM)) protocol.VM {
	v := protocol.VM{ID: id, Name: name, Flavor: "c2", Group: "atlas", VMType: "el9", State: protocol.VMActive}
	for _, m := range mutate {
		m(&v)
	}
	return v
}

func readySince(t time.Time) func(*protocol.VM) {
	return func(v *protocol.VM) { v.Ready, v.ReadyAt = true, t }
}

func atlas(idle int) demand.Demand {
	return demand.Demand{Shapes: []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 1000, Idle: idle}}}
}

// inPool returns d with a pool view that lists the VMs idle (for an hour,
// after running a job).
func inPool(d demand.Demand, now time.Time, vms ...protocol.VM) demand.Demand {
	d.Machines = map[string]demand.Machine{}
	for _, v := range vms {
		d.Machines[v.Name] = demand.Machine{VMName: v.Name, State: demand.MachineIdle, IdleSince: now.Add(-time.Hour), JobsStarted: 1}
	}
	return d
}

// warm runs a cycle every 30 s for d, the cloud reporting the same VMs
// each time, so that the snapshot builder's clocks (which count only time
// with fresh evidence) run.
func (e *testEnv) warm(d time.Duration, cloud string, vms ...protocol.VM) {
	e.t.Helper()
	for end := e.now.Add(d); e.now.Before(end); {
		e.advance(30 * time.Second)
		e.report(cloud, vms...)
		e.cycle()
	}
}

func TestCycleBootsOnceForPendingDemand(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(4)})
	s := e.connect("west")
	e.cycle()
	boots := drain(s, protocol.CmdBoot)
	if len(boots) != 1 || len(boots[0].Boot.Names) != 2 {
		t.Fatalf("boots %+v", boots)
	}
	if boots[0].Epoch != "ep-west" || boots[0].Generation == 0 {
		t.Fatalf("boot not tagged with the agent's epoch and inventory: %+v", boots[0])
	}
	for _, n := range boots[0].Boot.Names {
		if !strings.HasPrefix(n, "canopy-west-p1-") {
			t.Fatalf("server name %q", n)
		}
	}
	// The cloud has not listed them yet: the next cycle must not boot again.
	e.advance(10 * time.Second)
	e.cycle()
	if n := len(drain(s, protocol.CmdBoot)); n != 0 {
		t.Fatalf("%d boot commands after a second cycle, want none", n)
	}
}

func TestFailedPollNeverRetires(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	v := vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour)))
	src.d = inPool(atlas(1), *e.now, v) // an idle job keeps the idle VM
	s := e.connect("west", v)
	e.warm(3*time.Minute, "west", v)
	src.d = inPool(demand.Demand{}, *e.now, v)
	src.err = errors.New("condor_q: exit status 1: Failed to connect to schedd")
	e.advance(30 * time.Second)
	e.report("west", v)
	e.cycle()
	if r := drain(s, protocol.CmdRetire); len(r) != 0 {
		t.Fatalf("retired after a failed poll: %+v", r)
	}
	if d := e.h.Demand(); !strings.Contains(d.Error, "schedd") {
		t.Fatalf("demand error not reported: %+v", d)
	}
	if ev := e.h.Status().Evidence; ev.PoolView != "failed" || ev.Counts.Unknown != 1 {
		t.Fatalf("evidence after a failed poll: %+v", ev)
	}
	// A good poll with no demand retires the VM, idle past its keep-alive.
	src.err = nil
	e.cycle()
	r := drain(s, protocol.CmdRetire)
	if len(r) != 1 || r[0].Retire.VMIDs[0] != "id-1" {
		t.Fatalf("retire commands %+v", r)
	}
}

func TestStaleScheddNeverRetires(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	v := vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour)))
	src.d = inPool(atlas(1), *e.now, v) // an idle job keeps the idle VM
	s := e.connect("west", v)
	e.warm(3*time.Minute, "west", v)
	// The queue that held the job cannot be read: the poll succeeds, with
	// that schedd not fresh.
	src.d = inPool(demand.Demand{}, *e.now, v)
	src.d.Schedds = []demand.ScheddState{{Name: "schedd1"}, {Name: "schedd2", Fresh: true}}
	e.advance(30 * time.Second)
	e.report("west", v)
	e.cycle()
	if r := drain(s, protocol.CmdRetire); len(r) != 0 {
		t.Fatalf("retired on a poll with a stale schedd: %+v", r)
	}
	src.d.Schedds[0].Fresh = true
	e.cycle()
	if r := drain(s, protocol.CmdRetire); len(r) != 1 {
		t.Fatalf("retire commands after a fresh poll %+v", r)
	}
}

func TestStaleDemandStopsBoots(t *testing.T) {
	src := &scriptedSource{d: demand.Demand{Shapes: []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 2, MemoryMiB: 1000, Idle: 1}}}}
	e := newEnv(t, src)
	s := e.connect("west")
	e.cycle() // good demand remembered, 1 boot
	if n := len(drain(s, protocol.CmdBoot)); n != 1 {
		t.Fatalf("%d boots for fresh demand", n)
	}
	e.h.loop.takeResults(*e.now)
	for name := range e.h.loop.st.Pending { // the boot failed
		e.h.loop.tx.DropPending(name)
	}
	src.err = errors.New("timeout")
	e.advance(e.h.cfg.DemandMaxAge + time.Second)
	e.report("west")
	e.cycle()
	if n := len(drain(s, protocol.CmdBoot)); n != 0 {
		t.Fatalf("%d boot commands on demand older than demand_max_age", n)
	}
}

// TestDisconnectedCloudGetsNothing: a cloud whose agent is away gets no
// boots, and nothing is queued for it cycle after cycle; its VMs are kept.
func TestDisconnectedCloudGetsNothing(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(4)})
	s := e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour))))
	e.disconnect("west")
	for len(s.out) > 0 {
		<-s.out // the squid lists sent on connect
	}
	for range 20 {
		e.advance(10 * time.Second)
		e.cycle()
	}
	if n := len(s.out); n != 0 {
		t.Fatalf("%d messages queued for a disconnected cloud", n)
	}
	// On reconnect it replans from the fresh inventory: the VM that was
	// idle is needed by the idle jobs; nothing old is replayed.
	s2 := e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour))))
	e.cycle()
	if d := drain(s2, protocol.CmdDelete); len(d) != 0 {
		t.Fatalf("deletes after reconnect: %+v", d)
	}
}

func TestHeldVMIsNeverRetired(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	v := vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour)))
	src.d = inPool(demand.Demand{}, *e.now, v)
	s := e.connect("west", v)
	e.h.loop.tx.PutHold(intent.Hold{VMID: "id-1", Site: "west", At: *e.now})
	e.cycle()
	e.warm(3*time.Minute, "west", v)
	if r := drain(s, protocol.CmdRetire); len(r) != 0 {
		t.Fatalf("held VM retired: %+v", r)
	}
	if vms := e.h.VMs(); len(vms) != 1 || !vms[0].Held {
		t.Fatalf("VMs %+v", vms)
	}
	e.h.loop.tx.DropHold("id-1")
	e.cycle()
	if r := drain(s, protocol.CmdRetire); len(r) != 1 {
		t.Fatalf("released VM not retired: %+v", r)
	}
}

func TestAgentPolicyApplies(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(40)})
	s := e.connect("west")
	e.setPolicy("west", &protocol.SitePolicy{CoresSoftMax: 6})
	e.cycle()
	cores := 0
	for _, c := range drain(s, protocol.CmdBoot) {
		cores += 2 * len(c.Boot.Names) // flavor c2
	}
	if cores == 0 || cores > 6 {
		t.Fatalf("booted %d cores under a soft maximum of 6", cores)
	}
	for name := range e.h.loop.st.Pending {
		e.h.loop.tx.DropPending(name)
	}
	e.setPolicy("west", &protocol.SitePolicy{Disabled: true})
	e.cycle()
	if n := len(drain(s, protocol.CmdBoot)); n != 0 {
		t.Fatalf("%d boots on a cloud its agent reports disabled", n)
	}
}

func TestErrorDelayCountsFromFirstInventoryInError(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	errVM := vm("id-e", "canopy-west-p1-0-0", func(v *protocol.VM) {
		v.State, v.Fault, v.CreatedAt = protocol.VMError, "No valid host was found.", e.now.Add(-time.Hour)
	})
	s := e.connect("west", errVM)
	e.cycle() // first seen in error now
	e.advance(time.Minute)
	_ = e.h.VMs() // reads must not move the clock of an error
	e.report("west", errVM)
	e.cycle()
	if d := drain(s, protocol.CmdDelete); len(d) != 0 {
		t.Fatalf("deleted 1 min after the error was first seen: %+v", d)
	}
	if vms := e.h.VMs(); len(vms) != 1 || vms[0].Fault != "No valid host was found." {
		t.Fatalf("fault not shown: %+v", vms)
	}
	// The mark is durable: a restarted hub still counts from the first
	// sighting, not from its own start.
	e.crash()
	e.start(&scriptedSource{})
	s = e.connect("west", errVM)
	e.advance(5 * time.Minute)
	e.report("west", errVM)
	e.cycle()
	if d := drain(s, protocol.CmdDelete); len(d) != 1 {
		t.Fatalf("not deleted past the error delay after a restart: %+v", d)
	}
}

// TestStoppedServerIsDeletedAfterErrorDelay: a SHUTOFF server (the startd
// powered the VM off) is not capacity and goes after the error delay.
func TestStoppedServerIsDeletedAfterErrorDelay(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	off := vm("id-s", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour)), func(v *protocol.VM) {
		v.State, v.CloudStatus = protocol.VMStopped, "SHUTOFF"
	})
	s := e.connect("west", off)
	e.cycle()
	if d := drain(s, protocol.CmdDelete); len(d) != 0 {
		t.Fatalf("stopped server deleted at once: %+v", d)
	}
	e.advance(e.h.cfg.Planner.ErrorDelay + time.Second)
	e.report("west", off)
	e.cycle()
	d := drain(s, protocol.CmdDelete)
	if len(d) != 1 || d[0].Delete.VMIDs[0] != "id-s" {
		t.Fatalf("stopped server not deleted after the error delay: %+v", d)
	}
	if ev := e.h.Status().Events; !hasEvent(ev, "stopped", "SHUTOFF") {
		t.Fatalf("the stop is not in the lifecycle log: %+v", ev)
	}
}

func hasEvent(ev []intent.Event, kind, detail string) bool {
	for _, x := range ev {
		if x.Kind == kind && strings.Contains(x.Detail, detail) {
			return true
		}
	}
	return false
}

// TestAnotherHubsServersAreForeign: servers carrying another hub's id are
// never retired or deleted, and count as foreign usage.
func TestAnotherHubsServersAreForeign(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	other := vm("id-o", "canopy-west-p9-0-0", readySince(e.now.Add(-time.Hour)), func(v *protocol.VM) { v.Hub = "other-hub" })
	s := e.connect("west", other)
	for range 3 {
		e.advance(time.Hour)
		e.report("west", other)
		e.cycle()
	}
	if r, d := drain(s, protocol.CmdRetire), drain(s, protocol.CmdDelete); len(r)+len(d) != 0 {
		t.Fatalf("another hub's server touched: retires %+v deletes %+v", r, d)
	}
	if st := e.h.Sites(); len(st) != 1 || st[0].ForeignVMs != 1 || st[0].VMs != 0 {
		t.Fatalf("sites %+v", st)
	}
}

// TestHubRestartKeepsBootsInFlight: a hub killed after ordering boots
// neither boots them again nor forgets them when it comes back.
func TestHubRestartKeepsBootsInFlight(t *testing.T) {
	src := &scriptedSource{d: atlas(4)}
	e := newEnv(t, src)
	s := e.connect("west")
	e.cycle()
	boots := drain(s, protocol.CmdBoot)
	if len(boots) != 1 {
		t.Fatalf("boots %+v", boots)
	}
	names := boots[0].Boot.Names
	e.crash()

	e.start(src)
	if got := len(e.h.loop.st.Pending); got != len(names) {
		t.Fatalf("%d boots in flight after restart, want %d", got, len(names))
	}
	// The agent is still carrying the command out: keep waiting for it.
	s = e.connect("west")
	l := e.h.linkFor("west")
	l.update(s, func(v *cloudView) { inv := *v.Inventory; inv.Running = []string{boots[0].ID}; v.Inventory = &inv })
	e.cycle()
	if b := drain(s, protocol.CmdBoot); len(b) != 0 {
		t.Fatalf("restarted hub booted again for demand in flight: %+v", b)
	}
	// Then the servers appear: they are adopted, nothing is booted twice.
	var vms []protocol.VM
	for i, n := range names {
		vms = append(vms, vm("id-"+string(rune('a'+i)), n, func(v *protocol.VM) { v.CreatedAt = *e.now }))
	}
	e.advance(10 * time.Second)
	e.report("west", vms...)
	e.cycle()
	if b := drain(s, protocol.CmdBoot); len(b) != 0 || len(e.h.loop.st.Pending) != 0 {
		t.Fatalf("after the servers appeared: boots %+v pending %+v", b, e.h.loop.st.Pending)
	}
}

// TestHubRestartKeepsBackoff: a cloud's failure backoff survives a restart.
func TestHubRestartKeepsBackoff(t *testing.T) {
	src := &scriptedSource{d: atlas(4)}
	e := newEnv(t, src)
	s := e.connect("west")
	e.cycle()
	b := drain(s, protocol.CmdBoot)
	e.h.inbox.put(inboxItem{cloud: "west", session: s.id, result: protocol.Result{CommandID: b[0].ID, Class: protocol.ErrClassQuota,
		Error: "Quota exceeded for cores"}})
	e.advance(5 * time.Second)
	e.cycle() // takes the failure in and saves it
	e.crash()

	e.start(src)
	s = e.connect("west")
	e.advance(5 * time.Second)
	e.cycle()
	if n := len(drain(s, protocol.CmdBoot)); n != 0 {
		t.Fatalf("%d boots on a cloud backing off, after a restart", n)
	}
	st := e.h.Sites()
	if len(st) != 1 || st[0].State != planner.CloudBackoff {
		t.Fatalf("cloud state after restart: %+v", st)
	}
}

// TestStartupGraceWaitsForConfiguredClouds: a restarted hub plans only
// once every configured cloud reported, or the grace passed.
func TestStartupGraceWaitsForConfiguredClouds(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(2)}, func(c *Config) {
		c.Sites = map[string]SiteConfig{"west": {}, "east": {}}
	})
	s := e.connect("west")
	e.cycle()
	if b := drain(s, protocol.CmdBoot); len(b) != 0 {
		t.Fatalf("planned before east reported: %+v", b)
	}
	if w := e.h.Status().Waiting; len(w) != 1 || w[0] != "east" {
		t.Fatalf("waiting for %v", w)
	}
	s2 := e.connect("east")
	e.cycle()
	if n := len(drain(s, protocol.CmdBoot)) + len(drain(s2, protocol.CmdBoot)); n != 1 {
		t.Fatalf("%d boot commands once every cloud reported", n)
	}
}

// TestUnackedBootDroppedAfterSessionLoss: a boot sent on a session that
// ended before the agent answered is forgotten once the agent reports
// afresh without it; a boot the agent acknowledged is kept.
func TestUnackedBootDroppedAfterSessionLoss(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(2)})
	s := e.connect("west")
	e.cycle()
	if len(drain(s, protocol.CmdBoot)) != 1 || len(e.h.loop.st.Pending) != 1 {
		t.Fatalf("pending %+v", e.h.loop.st.Pending)
	}
	e.disconnect("west")
	e.advance(10 * time.Second)
	e.connect("west")
	e.h.source.(*scriptedSource).d = demand.Demand{}
	e.cycle()
	if len(e.h.loop.st.Pending) != 0 {
		t.Fatalf("boot of a lost session still pending: %+v", e.h.loop.st.Pending)
	}
	if !hasEvent(e.h.Status().Events, "boot_dropped", "session") {
		t.Fatalf("no boot_dropped event: %+v", e.h.Status().Events)
	}
}

// TestRetireOrderResentAfterAgentRestart: an order the agent does not
// show (it restarted without it) is sent again once per session.
func TestRetireOrderResentAfterAgentRestart(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	v := vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour)))
	src.d = inPool(atlas(1), *e.now, v)
	s := e.connect("west", v)
	e.warm(3*time.Minute, "west", v)
	src.d = inPool(demand.Demand{}, *e.now, v)
	e.cycle()
	if r := drain(s, protocol.CmdRetire); len(r) != 1 {
		t.Fatalf("retires %+v", r)
	}
	e.advance(10 * time.Second)
	e.report("west", v)
	e.cycle()
	if r := drain(s, protocol.CmdRetire); len(r) != 0 {
		t.Fatalf("order resent on the same session: %+v", r)
	}
	e.disconnect("west")
	s = e.connect("west", v)
	e.cycle()
	r := drain(s, protocol.CmdRetire)
	if len(r) != 1 || r[0].Retire.VMIDs[0] != "id-1" || r[0].Retire.Deadline <= 0 {
		t.Fatalf("order not resent after reconnect: %+v", r)
	}
	// Once the server is gone the order ends, with an event.
	e.advance(10 * time.Second)
	e.report("west")
	e.cycle()
	if len(e.h.loop.st.Retire) != 0 || !hasEvent(e.h.Status().Events, "deleted", "") {
		t.Fatalf("order not closed: %+v", e.h.loop.st.Retire)
	}
}

// TestOneStoreWritePerCycle: a cycle that retires a thousand VMs writes
// the state file once.
func TestOneStoreWritePerCycle(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	var vms []protocol.VM
	for i := range 1000 {
		vms = append(vms, vm("id-"+itoa(i), "canopy-west-p1-0-"+itoa(i), readySince(e.now.Add(-time.Hour))))
	}
	src.d = inPool(atlas(2000), *e.now, vms...) // idle jobs keep every VM
	e.connect("west", vms...)
	e.warm(3*time.Minute, "west", vms...)
	src.d = inPool(demand.Demand{}, *e.now, vms...)
	before := testutil.ToFloat64(e.h.m.storeCommits)
	e.cycle()
	if got := len(e.h.loop.st.Retire); got != 1000 {
		t.Fatalf("%d retirement orders", got)
	}
	if n := testutil.ToFloat64(e.h.m.storeCommits) - before; n != 1 {
		t.Fatalf("%v store commits for one cycle, want 1", n)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestRetireDeadlineDeleteOverrides: a VM still retiring past its retire
// deadline is deleted with the deadline override (the agent deletes it
// even if it reports jobs); the planner's Delete.Deadline says so.
func TestRetireDeadlineDeleteOverrides(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	v := vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-30*time.Hour)), func(v *protocol.VM) { v.Retiring = true })
	src.d = inPool(demand.Demand{}, *e.now, v)
	e.h.loop.tx.PutRetire(intent.RetireOrder{VMID: "id-1", Site: "west", At: e.now.Add(-25 * time.Hour)})
	s := e.connect("west", v)
	e.cycle()
	d := drain(s, protocol.CmdDelete)
	if len(d) != 1 || d[0].Delete.Override != protocol.DeleteDeadline || d[0].Delete.VMIDs[0] != "id-1" {
		t.Fatalf("deletes %+v", d)
	}
}

// TestReconnectingAgentsVMsStayCapacity: between an agent's reconnect and
// its first inventory on the new session, its VMs are unknown, not gone:
// the idle jobs they would take are not booted for on another cloud.
func TestReconnectingAgentsVMsStayCapacity(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	v := vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour)))
	src.d = inPool(atlas(2), *e.now, v) // the VM's 2 cores take both jobs
	e.connect("west", v)
	east := e.connect("east")
	e.cycle()
	// West's agent reconnects: a new session, no inventory on it yet.
	l := e.h.linkFor("west")
	l.mu.Lock()
	nv := *l.load()
	nv.Session = int(e.h.sessionSeq.Add(1))
	l.view.Store(&nv)
	l.mu.Unlock()
	e.advance(10 * time.Second)
	e.report("east")
	e.cycle()
	if b := drain(east, protocol.CmdBoot); len(b) != 0 {
		t.Fatalf("booted on east for jobs west's VM takes: %+v", b)
	}
	if ev := e.h.Status().Evidence; ev.Counts.Unknown != 1 || len(ev.Clouds) != 1 || ev.Clouds[0].Site != "west" {
		t.Fatalf("evidence %+v", ev)
	}
}

// TestHoldOfGoneServerDropped: a hold outlives nothing: once its server is
// no longer listed by a fresh inventory, it is dropped with an event.
func TestHoldOfGoneServerDropped(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(*e.now)))
	e.h.loop.tx.PutHold(intent.Hold{VMID: "id-1", Site: "west", At: *e.now})
	e.cycle()
	if len(e.h.loop.st.Hold) != 1 {
		t.Fatal("hold lost while its server exists")
	}
	e.disconnect("west") // no evidence: the hold stays
	e.cycle()
	if len(e.h.loop.st.Hold) != 1 {
		t.Fatal("hold dropped while its cloud was not reporting")
	}
	e.connect("west")
	e.cycle()
	if len(e.h.loop.st.Hold) != 0 || !hasEvent(e.h.Status().Events, "hold_dropped", "") {
		t.Fatalf("hold of a gone server kept: %+v", e.h.loop.st.Hold)
	}
}

// TestInventoryDeltas: after a full inventory, deltas keep the hub's view
// in step; a missed delta is answered with a resync and not applied.
func TestInventoryDeltas(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	a := vm("id-1", "canopy-west-p1-0-0", readySince(*e.now))
	s := e.connect("west", a)
	l := e.h.linkFor("west")
	base := l.load().Inventory
	b := vm("id-2", "canopy-west-p1-0-1", func(v *protocol.VM) { v.Hub = e.h.cfg.ID })
	d := protocol.InventoryDelta{Seq: base.Seq + 1, Base: base.Seq, Changed: []protocol.VM{b}, TakenAt: *e.now,
		Checksum: protocol.VMChecksum(append(slices.Clone(base.VMs), b))}
	e.h.receive(l, s, d, e.h.log)
	if got := l.load().Inventory; got.Seq != base.Seq+1 || len(got.VMs) != 2 {
		t.Fatalf("delta not applied: %+v", got)
	}
	for len(s.out) > 0 {
		<-s.out
	}
	// A delta on a base the hub never saw.
	e.h.receive(l, s, protocol.InventoryDelta{Seq: base.Seq + 5, Base: base.Seq + 4, Removed: []string{"id-1"}}, e.h.log)
	if got := l.load().Inventory; got.Seq != base.Seq+1 || len(got.VMs) != 2 {
		t.Fatalf("missed delta applied: %+v", got)
	}
	select {
	case m := <-s.out:
		if _, ok := m.(protocol.Resync); !ok {
			t.Fatalf("sent %T, want a resync", m)
		}
	default:
		t.Fatal("no resync asked for")
	}
}

// TestFailedRetirementKeptAndShown: a VM whose vmagent could not stop
// taking jobs (condor_off failed) is kept past its keep-alive, and the
// status says why.
func TestFailedRetirementKeptAndShown(t *testing.T) {
	src := &scriptedSource{}
	e := newEnv(t, src)
	v := vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour)))
	src.d = inPool(demand.Demand{}, *e.now, v)
	s := e.connect("west", v)
	e.warm(3*time.Minute, "west", v)
	if r := drain(s, protocol.CmdRetire); len(r) != 1 {
		t.Fatalf("retires %+v", r)
	}
	v.Retiring, v.RetireState, v.RetireError = true, protocol.RetireFailed, "condor_off: AUTHENTICATE:1004 failed to authenticate"
	for range 6 {
		e.advance(10 * time.Minute)
		e.report("west", v)
		e.cycle()
		if d := drain(s, protocol.CmdDelete); len(d) != 0 {
			t.Fatalf("a VM whose retirement failed was deleted before its deadline: %+v", d)
		}
	}
	vms := e.h.VMs()
	if len(vms) != 1 || vms[0].RetireState != protocol.RetireFailed || !strings.Contains(vms[0].RetireError, "AUTHENTICATE") {
		t.Fatalf("status does not show the failed retirement: %+v", vms)
	}
}

// TestPreemptionRecognised: on a site with preemptible capacity, a VM that
// leaves the listing without an order of Canopy's was taken back by the
// cloud: an event, a preemption in the history the planner reads (not a
// boot failure). A VM Canopy retired that leaves is not; nor is one on a
// site that is not preemptible.
func TestPreemptionRecognised(t *testing.T) {
	tests := []struct {
		name        string
		preemptible bool
		retired     bool
		want        int
	}{
		{"preemptible site, taken back", true, false, 1},
		{"preemptible site, retired by Canopy", true, true, 0},
		{"ordinary site", false, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, &scriptedSource{}, func(c *Config) {
				c.Sites = map[string]SiteConfig{"spot": {Preemptible: tc.preemptible}}
			})
			a := vm("id-1", "canopy-spot-p1-0-0", readySince(e.now.Add(-time.Hour)))
			b := vm("id-2", "canopy-spot-p1-0-1", readySince(e.now.Add(-time.Hour)))
			e.connect("spot", a, b)
			e.cycle()
			if tc.retired {
				e.h.loop.tx.PutRetire(intent.RetireOrder{VMID: "id-2", Site: "spot", At: *e.now})
			}
			e.advance(10 * time.Second)
			e.report("spot", a)
			e.cycle()
			got := len(e.h.loop.hist.State().Preemptions)
			if got != tc.want || hasEvent(e.h.Status().Events, "preempted", "taken back") != (tc.want > 0) {
				t.Fatalf("%d preemptions recorded (events %+v), want %d", got, e.h.Status().Events, tc.want)
			}
			if n := len(e.h.loop.hist.State().Failures); n != 0 {
				t.Fatalf("%d boot failures recorded", n)
			}
			if tc.want > 0 {
				if p := e.h.loop.lastPlan; len(p.Clouds) != 1 || p.Clouds[0].Preempted != 1 {
					t.Fatalf("plan's clouds %+v: want spot with 1 preempted", p.Clouds)
				}
			}
		})
	}
}
