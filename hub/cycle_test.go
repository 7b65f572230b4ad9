package hub

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/demand"
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

func testHub(t *testing.T, src Source) (*Hub, *time.Time) {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(filepath.Join(dir, "pki"), []string{"localhost"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	h, err := New(Config{TLSDir: filepath.Join(dir, "pki"), StateFile: filepath.Join(dir, "hub.db"),
		Demand:  DemandConfig{Source: "trace", Trace: TraceConfig{File: "x"}},
		Planner: planner.Config{KeepAlive: time.Minute}}, src, log.WithField("t", t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.store.Close() })
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	return h, &now
}

// connectSite gives the hub a connected site with one flavor and the VMs given.
func connectSite(h *Hub, name string, vms ...protocol.VM) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.siteLocked(name)
	s.conn = protocol.NewConn(strings.NewReader(""), io.Discard)
	s.lastHeartbeat, s.invAt = h.now(), h.now()
	s.inv = protocol.Inventory{Flavors: []protocol.Flavor{{Name: "c2", VCPUs: 2, RAMMiB: 4096}},
		Limits: protocol.Limits{MaxCores: 100, MaxRAMMiB: -1, MaxInstances: -1}, VMs: vms}
}

func commands(h *Hub, site string, op protocol.CommandKind) []protocol.Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []protocol.Command
	for _, c := range h.sites[site].outstanding {
		if c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

func TestCycleBootsOnceForPendingDemand(t *testing.T) {
	src := &scriptedSource{d: demand.Demand{Shapes: []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 1000, Idle: 4}}}}
	h, _ := testHub(t, src)
	connectSite(h, "west")
	h.cycle(context.Background())
	boots := commands(h, "west", protocol.CmdBoot)
	if len(boots) != 1 || len(boots[0].Boot.Names) != 2 {
		t.Fatalf("boots %+v", boots)
	}
	for _, n := range boots[0].Boot.Names {
		if !strings.HasPrefix(n, "canopy-west-p1-") {
			t.Fatalf("server name %q", n)
		}
	}
	// The cloud has not listed them yet: the next cycle must not boot again.
	h.cycle(context.Background())
	if n := len(commands(h, "west", protocol.CmdBoot)); n != 1 {
		t.Fatalf("%d boot commands after a second cycle, want 1", n)
	}
}

func TestFailedPollNeverRetires(t *testing.T) {
	idleVM := protocol.VM{ID: "id-1", Name: "canopy-west-p1-0-0", Flavor: "c2", Group: "atlas", VMType: "el9",
		State: protocol.VMActive, Ready: true}
	src := &scriptedSource{}
	h, now := testHub(t, src)
	idleVM.ReadyAt = now.Add(-time.Hour)
	connectSite(h, "west", idleVM)

	src.err = errors.New("condor_q: exit status 1: Failed to connect to schedd")
	h.cycle(context.Background())
	if r := commands(h, "west", protocol.CmdRetire); len(r) != 0 {
		t.Fatalf("retired after a failed poll: %+v", r)
	}
	if d := h.Demand(); !strings.Contains(d.Error, "schedd") {
		t.Fatalf("demand error not reported: %+v", d)
	}
	// A good poll with no demand retires the VM idle for an hour.
	src.err = nil
	h.cycle(context.Background())
	r := commands(h, "west", protocol.CmdRetire)
	if len(r) != 1 || r[0].Retire.VMIDs[0] != "id-1" {
		t.Fatalf("retire commands %+v", r)
	}
}

func TestStaleScheddNeverRetires(t *testing.T) {
	idleVM := protocol.VM{ID: "id-1", Name: "canopy-west-p1-0-0", Flavor: "c2", Group: "atlas", VMType: "el9",
		State: protocol.VMActive, Ready: true}
	src := &scriptedSource{d: demand.Demand{Stale: []string{"schedd2.example.org"}}}
	h, now := testHub(t, src)
	idleVM.ReadyAt = now.Add(-time.Hour)
	connectSite(h, "west", idleVM)
	h.cycle(context.Background())
	if r := commands(h, "west", protocol.CmdRetire); len(r) != 0 {
		t.Fatalf("retired on a poll with a stale schedd: %+v", r)
	}
	src.d.Stale = nil
	h.cycle(context.Background())
	if r := commands(h, "west", protocol.CmdRetire); len(r) != 1 {
		t.Fatalf("retire commands after a fresh poll %+v", r)
	}
}

func TestStaleDemandStopsBoots(t *testing.T) {
	src := &scriptedSource{d: demand.Demand{Shapes: []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 2, MemoryMiB: 1000, Idle: 1}}}}
	h, now := testHub(t, src)
	connectSite(h, "west")
	h.cycle(context.Background()) // good demand remembered, 1 boot
	h.mu.Lock()
	h.sites["west"].pending = map[string]*pendingVM{} // pretend the boot failed
	h.mu.Unlock()
	src.err = errors.New("timeout")
	*now = now.Add(h.cfg.DemandMaxAge + time.Second)
	connectSite(h, "west")
	h.cycle(context.Background())
	if n := len(commands(h, "west", protocol.CmdBoot)); n != 1 {
		t.Fatalf("%d boot commands, want only the first (demand is stale)", n)
	}
}

func TestDisconnectedSiteGetsNoBoots(t *testing.T) {
	src := &scriptedSource{d: demand.Demand{Shapes: []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 1000, Idle: 4}}}}
	h, _ := testHub(t, src)
	connectSite(h, "west")
	h.mu.Lock()
	h.sites["west"].conn = nil
	h.mu.Unlock()
	h.cycle(context.Background())
	if n := len(commands(h, "west", protocol.CmdBoot)); n != 0 {
		t.Fatalf("%d boots sent to a disconnected site", n)
	}
}

func TestHeldVMIsNeverRetired(t *testing.T) {
	src := &scriptedSource{}
	h, now := testHub(t, src)
	connectSite(h, "west", protocol.VM{ID: "id-1", Name: "canopy-west-p1-0-0", Flavor: "c2", Group: "atlas", VMType: "el9",
		State: protocol.VMActive, Ready: true, ReadyAt: now.Add(-time.Hour)})
	if err := h.SetHeld("id-1", true); err != nil {
		t.Fatal(err)
	}
	h.cycle(context.Background())
	if r := commands(h, "west", protocol.CmdRetire); len(r) != 0 {
		t.Fatalf("held VM retired: %+v", r)
	}
	if vms := h.VMs(); len(vms) != 1 || !vms[0].Held {
		t.Fatalf("VMs %+v", vms)
	}
	if err := h.SetHeld("id-1", false); err != nil {
		t.Fatal(err)
	}
	h.cycle(context.Background())
	if r := commands(h, "west", protocol.CmdRetire); len(r) != 1 {
		t.Fatalf("released VM not retired: %+v", r)
	}
}

func TestAgentPolicyApplies(t *testing.T) {
	src := &scriptedSource{d: demand.Demand{Shapes: []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 1000, Idle: 40}}}}
	h, _ := testHub(t, src)
	connectSite(h, "west")
	h.mu.Lock()
	h.sites["west"].inv.Policy = &protocol.SitePolicy{CoresSoftMax: 6}
	h.mu.Unlock()
	h.cycle(context.Background())
	cores := 0
	for _, c := range commands(h, "west", protocol.CmdBoot) {
		cores += 2 * len(c.Boot.Names) // flavor c2
	}
	if cores == 0 || cores > 6 {
		t.Fatalf("booted %d cores under a soft maximum of 6", cores)
	}
	h.mu.Lock()
	h.sites["west"].inv.Policy = &protocol.SitePolicy{Disabled: true}
	h.sites["west"].outstanding = map[string]protocol.Command{}
	h.sites["west"].pending = map[string]*pendingVM{}
	h.mu.Unlock()
	h.cycle(context.Background())
	if n := len(commands(h, "west", protocol.CmdBoot)); n != 0 {
		t.Fatalf("%d boots on a cloud its agent reports disabled", n)
	}
}

func TestErrorDelayCountsFromFirstInventoryInError(t *testing.T) {
	src := &scriptedSource{}
	h, now := testHub(t, src)
	connectSite(h, "west")
	errVM := protocol.VM{ID: "id-e", Name: "canopy-west-p1-0-0", Flavor: "c2", Group: "atlas", VMType: "el9",
		State: protocol.VMError, Fault: "No valid host was found.", CreatedAt: now.Add(-time.Hour)}
	h.mu.Lock()
	s := h.sites["west"]
	inv := s.inv
	inv.VMs = []protocol.VM{errVM}
	h.mu.Unlock()
	h.handle(s, s.session, inv, h.log)
	// Reads (status page, metrics) must not move the clock of an error.
	*now = now.Add(time.Minute)
	_ = h.VMs()
	h.cycle(context.Background())
	if d := commands(h, "west", protocol.CmdDelete); len(d) != 0 {
		t.Fatalf("deleted 1 min after the error was first seen: %+v", d)
	}
	// A later inventory still in error keeps the first-seen time.
	*now = now.Add(5 * time.Minute)
	h.handle(s, s.session, inv, h.log)
	h.cycle(context.Background())
	if d := commands(h, "west", protocol.CmdDelete); len(d) != 1 {
		t.Fatalf("not deleted past the error delay: %+v", d)
	}
}
