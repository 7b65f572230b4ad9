package snapshot

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const hubID = "hub-1"

// world is what one build sees; a test changes it between builds.
type world struct {
	now     time.Time
	clouds  map[string]*cloudW
	order   []string
	demand  demand.Demand
	ok      bool
	intent  *intent.State
	planner planner.Config
}

type cloudW struct {
	connected bool
	inv       *protocol.Inventory // nil: none yet
	at        time.Time           // when the hub received it; zero: now
}

func newWorld(sites ...string) *world {
	w := &world{now: t0, clouds: map[string]*cloudW{}, ok: true, intent: intent.New(), planner: planner.DefaultConfig(),
		demand: demand.Demand{Machines: map[string]demand.Machine{}}}
	for _, s := range sites {
		w.clouds[s] = &cloudW{connected: true, inv: &protocol.Inventory{
			Flavors: []protocol.Flavor{{Name: "c4", VCPUs: 4, RAMMiB: 8192}, {Name: "c1", VCPUs: 1, RAMMiB: 2048}},
			Limits:  protocol.Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: -1}}}
		w.order = append(w.order, s)
	}
	return w
}

func (w *world) input() Input {
	in := Input{Now: w.now, HubID: hubID, Config: w.planner, Demand: w.demand, DemandOK: w.ok, Intent: w.intent}
	for _, s := range w.order {
		c := w.clouds[s]
		at := c.at
		if at.IsZero() {
			at = w.now
		}
		if c.inv != nil && c.at.IsZero() {
			c.inv.TakenAt = w.now
		}
		in.Clouds = append(in.Clouds, Cloud{Settings: planner.Cloud{Site: s}, Connected: c.connected, Inventory: c.inv, InventoryAt: at})
	}
	return in
}

// vmW is one of Canopy's VMs: active, ready for an hour, 4 cores.
func vmW(id string, mut ...func(*protocol.VM)) protocol.VM {
	v := protocol.VM{ID: id, Name: "vm-" + id, Flavor: "c4", Group: "atlas", VMType: "el9", State: protocol.VMActive,
		Hub: hubID, Ready: true, ReadyAt: t0.Add(-time.Hour), CreatedAt: t0.Add(-65 * time.Minute)}
	for _, m := range mut {
		m(&v)
	}
	return v
}

// checkin sets the VM's own job count, taken ago before the inventory.
func checkin(running int, ago time.Duration) func(*protocol.VM) {
	return func(v *protocol.VM) { v.Jobs = &protocol.VMJobs{Running: running, Claimed: running, At: t0.Add(-ago)} }
}

// set puts the VMs in the site's inventory; check-in times follow now.
func (w *world) set(site string, vms ...protocol.VM) {
	out := make([]protocol.VM, len(vms))
	for i, v := range vms {
		if v.Jobs != nil {
			j := *v.Jobs
			j.At = w.now.Add(j.At.Sub(t0))
			v.Jobs = &j
		}
		out[i] = v
	}
	w.clouds[site].inv.VMs = out
}

// pool lists machines: running jobs (0: idle since an hour), with the
// free cores of busy ones.
func (w *world) pool(running map[string]int) {
	w.demand.Machines = map[string]demand.Machine{}
	for name, n := range running {
		m := demand.Machine{VMName: "vm-" + name, RunningJobs: n, JobsStarted: 1, State: demand.MachineIdle}
		if n > 0 {
			m.State, m.FreeCpus, m.FreeMemoryMiB = demand.MachineBusy, 4-n, 8192-2048*n
		} else {
			m.IdleSince = w.now.Add(-time.Hour)
		}
		w.demand.Machines[m.VMName] = m
	}
}

func find(s planner.Snapshot, id string) (planner.VM, bool) {
	for _, vm := range s.VMs {
		if vm.ID == id {
			return vm, true
		}
	}
	return planner.VM{}, false
}

// want is what a VM must look like after the last build.
type want struct {
	id      string
	ev      planner.Evidence
	state   planner.VMState
	running int
	why     string // substring of Why
}

func checkVMs(t *testing.T, s planner.Snapshot, wants []want) {
	t.Helper()
	for _, w := range wants {
		vm, ok := find(s, w.id)
		if !ok {
			t.Errorf("VM %s missing from the snapshot", w.id)
			continue
		}
		if vm.Evidence != w.ev || vm.State != w.state || vm.RunningJobs != w.running || !strings.Contains(vm.Why, w.why) {
			t.Errorf("VM %s: evidence %s state %s running %d why %q; want %s %s %d %q",
				w.id, vm.Evidence, vm.State, vm.RunningJobs, vm.Why, w.ev, w.state, w.running, w.why)
		}
	}
}

// TestEvidenceRules: one table entry per rule of the builder; each runs
// its builds one minute apart and checks the VMs and the report after the
// last.
func TestEvidenceRules(t *testing.T) {
	busy2 := checkin(2, 5*time.Second)
	cases := []struct {
		name   string
		steps  []func(w *world)
		wants  []want
		report func(t *testing.T, r Report, s planner.Snapshot)
	}{
		{name: "foreign: another hub's and unmarked servers are usage, not Canopy's",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("mine"), vmW("other", func(v *protocol.VM) { v.Hub = "hub-2" }),
					vmW("nohub", func(v *protocol.VM) { v.Hub = "" }), vmW("marked", func(v *protocol.VM) { v.Foreign = true }))
				w.pool(map[string]int{"mine": 0})
			}},
			wants: []want{{id: "mine", ev: planner.EvidenceRegistered, state: planner.VMIdle}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if len(s.VMs) != 1 || s.Clouds[0].Foreign != (planner.Usage{Cores: 12, RAMMiB: 3 * 8192, VMs: 3}) {
					t.Errorf("VMs %d, foreign %+v", len(s.VMs), s.Clouds[0].Foreign)
				}
			}},
		{name: "cloud not connected: its VMs are unknown, it takes no boots",
			steps: []func(*world){
				func(w *world) { w.set("west", vmW("a")); w.pool(map[string]int{"a": 1}) },
				func(w *world) { w.clouds["west"].connected = false },
			},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMBusy, running: 1, why: "agent not connected"}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if s.Clouds[0].Connected || len(r.Clouds) != 1 || r.Clouds[0].Unknown != 1 || !strings.Contains(r.Clouds[0].Reason, "not connected") {
					t.Errorf("cloud %+v, report %+v", s.Clouds[0], r.Clouds)
				}
				if len(r.Unknown) != 0 {
					t.Errorf("a silent cloud's VMs are listed one by one: %+v", r.Unknown)
				}
			}},
		{name: "inventory older than the maximum age: unknown",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("a"))
				w.pool(map[string]int{"a": 0})
				w.clouds["west"].at = w.now.Add(-91 * time.Second)
			}},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMIdle, why: "inventory 1m31s old"}}},
		{name: "no inventory yet: no VMs, cloud reported",
			steps: []func(*world){func(w *world) { w.clouds["west"].inv = nil }},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if len(s.VMs) != 0 || s.Clouds[0].Connected || len(r.Clouds) != 1 || !strings.Contains(r.Clouds[0].Reason, "no inventory") {
					t.Errorf("VMs %+v, report %+v", s.VMs, r)
				}
			}},
		{name: "in the pool: registered, busy with the startd's free part, or idle",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("b"), vmW("i"))
				w.pool(map[string]int{"b": 3, "i": 0})
			}},
			wants: []want{{id: "b", ev: planner.EvidenceRegistered, state: planner.VMBusy, running: 3},
				{id: "i", ev: planner.EvidenceRegistered, state: planner.VMIdle}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if b, _ := find(s, "b"); b.FreeCpus != 1 || b.FreeMemoryMiB != 2048 {
					t.Errorf("busy VM's free part %d cpus %d MiB", b.FreeCpus, b.FreeMemoryMiB)
				}
				if r.Counts != (EvidenceCounts{Registered: 2}) || r.PoolView != PoolOK {
					t.Errorf("report %+v", r)
				}
			}},
		{name: "in the pool, idle there, but its fresh check-in counts jobs: busy",
			steps: []func(*world){func(w *world) { w.set("west", vmW("a", busy2)); w.pool(map[string]int{"a": 0}) }},
			wants: []want{{id: "a", ev: planner.EvidenceRegistered, state: planner.VMBusy, running: 2}}},
		{name: "not in the pool, fresh check-in with jobs: unknown, busy",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("a", busy2), vmW("b"), vmW("c"))
				w.pool(map[string]int{"b": 0, "c": 0})
			}},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMBusy, running: 2, why: "VM reports 2 jobs, the pool does not list it"}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if r.PoolView != PoolOK || len(r.Unknown) != 1 || r.Unknown[0].ID != "a" || r.Counts.Unknown != 1 {
					t.Errorf("report %+v", r)
				}
			}},
		{name: "not in the pool, fresh check-in of no job: unregistered",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("a", checkin(0, 30*time.Second)), vmW("b"))
				w.pool(map[string]int{"b": 0})
			}},
			wants: []want{{id: "a", ev: planner.EvidenceUnregistered, state: planner.VMStarting}}},
		{name: "a count in the inventory is fresh evidence; the agent drops stale ones",
			steps: []func(*world){func(w *world) {
				// The agent reports a count only while the VM's check-ins
				// are fresh (by its own clock, however far from the hub's
				// it runs); "stale" checked in too long ago: no count.
				w.set("west", vmW("fresh", checkin(2, time.Hour)), vmW("stale"), vmW("b"))
				w.clouds["west"].inv.TakenAt = w.now.Add(-time.Hour)
				w.clouds["west"].at = w.now
				w.pool(map[string]int{"b": 0})
			}},
			wants: []want{{id: "fresh", ev: planner.EvidenceUnknown, state: planner.VMBusy, running: 2, why: "VM reports 2 jobs"},
				{id: "stale", ev: planner.EvidenceUnregistered, state: planner.VMStarting}}},
		{name: "left the pool without a fresh check-in: unknown, last known state",
			steps: []func(*world){
				func(w *world) {
					w.set("west", vmW("a"), vmW("b"), vmW("c"))
					w.pool(map[string]int{"a": 1, "b": 0, "c": 0})
				},
				func(w *world) { w.pool(map[string]int{"b": 0, "c": 0}) },
			},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMBusy, running: 1, why: "left the pool"}}},
		{name: "never in the pool, no check-in: unregistered",
			steps: []func(*world){func(w *world) { w.set("west", vmW("a")) }},
			wants: []want{{id: "a", ev: planner.EvidenceUnregistered, state: planner.VMStarting}}},
		{name: "failed poll: unknown, last known state",
			steps: []func(*world){
				func(w *world) { w.set("west", vmW("a"), vmW("n")); w.pool(map[string]int{"a": 2}) },
				func(w *world) { w.ok = false; w.demand.Machines = nil },
			},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMBusy, running: 2, why: "poll failed"},
				{id: "n", ev: planner.EvidenceUnknown, state: planner.VMStarting, why: "poll failed"}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if r.PoolView != PoolFailed || r.Counts.Unknown != 2 {
					t.Errorf("report %+v", r)
				}
			}},
		{name: "collector query failed: unknown",
			steps: []func(*world){
				func(w *world) { w.set("west", vmW("a")); w.pool(map[string]int{"a": 0}) },
				func(w *world) { w.demand.PoolErr = "condor_status: timeout"; w.demand.Machines = nil },
			},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMIdle, why: "condor_status: timeout"}}},
		{name: "rebooting: unknown, last known state",
			steps: []func(*world){
				func(w *world) { w.set("west", vmW("a")); w.pool(map[string]int{"a": 1}) },
				func(w *world) {
					w.set("west", vmW("a", func(v *protocol.VM) { v.State = protocol.VMRebooting }))
					w.pool(nil)
				},
			},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMBusy, running: 1, why: "rebooting"}}},
		{name: "error and stopped: in error since the durable mark",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("e", func(v *protocol.VM) { v.State = protocol.VMError }),
					vmW("s", func(v *protocol.VM) { v.State = protocol.VMStopped }),
					vmW("j", busy2, func(v *protocol.VM) { v.State = protocol.VMError }))
				w.intent.Error["e"] = intent.ErrorMark{VMID: "e", Site: "west", Since: t0.Add(-time.Hour)}
			}},
			wants: []want{{id: "e", ev: planner.EvidenceUnregistered, state: planner.VMError},
				{id: "s", ev: planner.EvidenceUnregistered, state: planner.VMError},
				{id: "j", ev: planner.EvidenceUnknown, state: planner.VMError, why: "cloud reports it error, but it runs 2 jobs"}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if e, _ := find(s, "e"); !e.ErrorSince.Equal(t0.Add(-time.Hour)) {
					t.Errorf("error since %s", e.ErrorSince)
				}
				if v, _ := find(s, "s"); !v.ErrorSince.Equal(t0) {
					t.Errorf("stopped since %s", v.ErrorSince)
				}
			}},
		{name: "deleting, and told to retire: retiring",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("d", func(v *protocol.VM) { v.State = protocol.VMDeleting }), vmW("r"), vmW("u"))
				w.pool(map[string]int{"d": 0, "r": 1})
				w.intent.Retire["r"] = intent.RetireOrder{VMID: "r", Site: "west", At: t0.Add(-time.Hour)}
				w.intent.Retire["u"] = intent.RetireOrder{VMID: "u", Site: "west", At: t0.Add(-time.Hour)}
				w.ok = false
			}},
			wants: []want{{id: "d", ev: planner.EvidenceUnknown, state: planner.VMRetiring, why: "poll failed"},
				{id: "r", ev: planner.EvidenceUnknown, state: planner.VMRetiring, why: "poll failed"},
				{id: "u", ev: planner.EvidenceUnknown, state: planner.VMRetiring}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if v, _ := find(s, "r"); !v.RetiringSince.Equal(t0.Add(-time.Hour)) {
					t.Errorf("retiring since %s", v.RetiringSince)
				}
			}},
		{name: "implausible: the pool lost most of the VMs it listed",
			steps: []func(*world){
				func(w *world) {
					w.set("west", vmW("a"), vmW("b"), vmW("c"), vmW("d"))
					w.pool(map[string]int{"a": 1, "b": 1, "c": 0, "d": 0})
				},
				func(w *world) { w.pool(map[string]int{"a": 1}) },
			},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMBusy, running: 1, why: "implausible"},
				{id: "c", ev: planner.EvidenceUnknown, state: planner.VMIdle, why: "the pool lists 1 of the 4 VMs it listed before"}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if r.PoolView != PoolImplausible || r.Counts.Unknown != 4 {
					t.Errorf("report %+v", r)
				}
			}},
		{name: "plausible: half the VMs left the pool",
			steps: []func(*world){
				func(w *world) {
					w.set("west", vmW("a"), vmW("b"), vmW("c"), vmW("d"))
					w.pool(map[string]int{"a": 1, "b": 1, "c": 0, "d": 0})
				},
				func(w *world) { w.pool(map[string]int{"a": 1, "b": 1}) },
			},
			wants: []want{{id: "c", ev: planner.EvidenceUnknown, state: planner.VMIdle, why: "left the pool"},
				{id: "a", ev: planner.EvidenceRegistered, state: planner.VMBusy, running: 1}}},
		{name: "implausible: most ready VMs with fresh check-ins are missing",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("a", checkin(0, time.Second)), vmW("b", checkin(0, time.Second)), vmW("c", checkin(0, time.Second)),
					vmW("new", checkin(0, time.Second), func(v *protocol.VM) { v.ReadyAt = t0.Add(-time.Minute) }))
				w.pool(map[string]int{"a": 0})
			}},
			wants: []want{{id: "b", ev: planner.EvidenceUnknown, state: planner.VMIdle, why: "the pool lists 1 of the 3 ready VMs whose own check-ins are fresh"}}},
		{name: "implausible: the pool lists none while the queue runs jobs",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("a"))
				w.demand.Shapes = []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 1, Running: 3}}
			}},
			wants: []want{{id: "a", ev: planner.EvidenceUnknown, state: planner.VMIdle, why: "lists none of Canopy's 1 ready VMs while the queue shows 3 running jobs"}}},
		{name: "booting in the cloud: unregistered",
			steps: []func(*world){func(w *world) {
				w.set("west", vmW("a", func(v *protocol.VM) { v.State, v.Ready = protocol.VMBooting, false }))
				w.ok = false
			}},
			wants: []want{{id: "a", ev: planner.EvidenceUnregistered, state: planner.VMBooting}}},
		{name: "pending boots are booting VMs without an id",
			steps: []func(*world){func(w *world) {
				w.intent.Pending["canopy-west-p1-0-0"] = intent.PendingBoot{Name: "canopy-west-p1-0-0", Site: "west", Cpus: 4, AckedAt: t0}
			}},
			report: func(t *testing.T, r Report, s planner.Snapshot) {
				if len(s.VMs) != 1 || s.VMs[0].ID != "" || s.VMs[0].State != planner.VMBooting || s.Clouds[0].Unlisted != 1 {
					t.Errorf("VMs %+v clouds %+v", s.VMs, s.Clouds)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("west")
			b := NewBuilder()
			var s planner.Snapshot
			var r Report
			for i, step := range tc.steps {
				if i > 0 {
					w.now = w.now.Add(time.Minute)
				}
				step(w)
				s, r = b.Build(w.input())
			}
			checkVMs(t, s, tc.wants)
			if tc.report != nil {
				tc.report(t, r, s)
			}
		})
	}
}

// TestClocks: the evidence clocks count only time between two builds that
// saw the same fresh evidence, and are forgotten with the VM.
func TestClocks(t *testing.T) {
	w := newWorld("west")
	b := NewBuilder()
	// at builds at t0 + min minutes and returns VM a.
	at := func(min int) planner.VM {
		t.Helper()
		w.now = t0.Add(time.Duration(min) * time.Minute)
		s, _ := b.Build(w.input())
		a, ok := find(s, "a")
		if !ok {
			t.Fatalf("+%dm: VM a missing", min)
		}
		return a
	}
	starting := vmW("a", func(v *protocol.VM) { v.Ready, v.ReadyAt = false, time.Time{} })
	w.set("west", starting)
	at(0)
	at(1)
	w.clouds["west"].connected = false
	at(2)
	if a := at(3); a.Evidence != planner.EvidenceUnknown || a.Unregistered != time.Minute || a.UnknownFor != time.Minute {
		t.Fatalf("while the cloud is silent: %+v", a)
	}
	w.clouds["west"].connected = true
	at(4)
	if a := at(5); a.Unregistered != 2*time.Minute || a.UnknownFor != 0 {
		t.Fatalf("back: unregistered %s unknown %s", a.Unregistered, a.UnknownFor)
	}

	// Registered without a job: the effective registration and idle times
	// move with fresh time only.
	w.set("west", vmW("a"))
	w.demand.Machines = map[string]demand.Machine{"vm-a": {VMName: "vm-a", State: demand.MachineIdle, IdleSince: t0.Add(-time.Hour)}}
	if a := at(6); !a.RegisteredAt.Equal(w.now) || !a.IdleSince.Equal(w.now) {
		t.Fatalf("first seen registered: registered at %s, idle since %s", a.RegisteredAt, a.IdleSince)
	}
	at(7)
	w.ok = false
	at(8)
	w.ok = true
	if a := at(9); !a.RegisteredAt.Equal(w.now.Add(-time.Minute)) || !a.IdleSince.Equal(w.now.Add(-time.Minute)) || a.JobsStarted != 0 {
		t.Fatalf("registered at %s, idle since %s; want both a minute ago", a.RegisteredAt, a.IdleSince)
	}
	// A job resets the idle clock; the pool's idle time is the floor.
	w.demand.Machines = map[string]demand.Machine{"vm-a": {VMName: "vm-a", State: demand.MachineBusy, RunningJobs: 1, JobsStarted: 1}}
	at(10)
	w.demand.Machines = map[string]demand.Machine{"vm-a": {VMName: "vm-a", State: demand.MachineIdle, IdleSince: t0.Add(10*time.Minute + 30*time.Second), JobsStarted: 1}}
	if a := at(11); !a.IdleSince.Equal(t0.Add(10*time.Minute+30*time.Second)) || !a.RegisteredAt.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("after a job: idle since %s, registered at %s", a.IdleSince, a.RegisteredAt)
	}

	// A VM gone from the inventory is forgotten: back, its clocks restart.
	w.set("west", starting)
	w.demand.Machines = map[string]demand.Machine{}
	if a := at(12); a.Evidence != planner.EvidenceUnknown || !strings.Contains(a.Why, "left the pool") {
		t.Fatalf("left the pool: %+v", a)
	}
	at(13)
	w.set("west")
	w.now = t0.Add(14 * time.Minute)
	b.Build(w.input())
	w.set("west", starting)
	if a := at(15); a.Unregistered != 0 || a.Evidence != planner.EvidenceUnregistered {
		t.Fatalf("a VM that came back kept its clocks: %+v", a)
	}
	// A cloud that lists nothing (no inventory yet) keeps its VMs' clocks.
	at(16)
	inv := w.clouds["west"].inv
	w.clouds["west"].inv = nil
	w.now = t0.Add(17 * time.Minute)
	b.Build(w.input())
	w.clouds["west"].inv = inv
	if a := at(18); a.Unregistered != time.Minute {
		t.Fatalf("clocks lost over a cloud without inventory: %+v", a)
	}
}

// TestUnknownIsNotIdle runs the planner on what the builder concludes in
// the situations that used to cost running jobs.
func TestUnknownIsNotIdle(t *testing.T) {
	// ten VMs of 4 cores, each running 2 of the queue's 20 jobs.
	ten := func(w *world, idle int, mut ...func(*protocol.VM)) {
		var vms []protocol.VM
		running := map[string]int{}
		for i := range 10 {
			id := fmt.Sprintf("v%d", i)
			vms = append(vms, vmW(id, mut...))
			running[id] = 2
		}
		w.set("west", vms...)
		w.pool(running)
		w.demand.Shapes = []planner.Shape{{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 2048, Running: 20, Idle: idle}}
	}
	emptyPool := func(w *world) { w.demand.Machines = map[string]demand.Machine{} }
	cases := []struct {
		name  string
		steps []func(w *world)
		view  string
	}{
		{name: "collector empty while the queue shows 20 running jobs on 10 VMs",
			steps: []func(*world){func(w *world) { ten(w, 15) }, emptyPool}, view: PoolImplausible},
		{name: "collector empty, hub just restarted, VMs' check-ins count the jobs",
			steps: []func(*world){func(w *world) { ten(w, 0, checkin(2, time.Second)); emptyPool(w) }}, view: PoolImplausible},
		{name: "collector empty, hub just restarted, no check-in counts",
			steps: []func(*world){func(w *world) { ten(w, 0); emptyPool(w) }}, view: PoolImplausible},
		{name: "collector empty for an hour",
			steps: []func(*world){func(w *world) { ten(w, 15) }, emptyPool, emptyPool, emptyPool, func(w *world) { w.now = w.now.Add(time.Hour) }},
			view:  PoolImplausible},
		{name: "agent restarted: VMs report not ready, the pool shows them running",
			steps: []func(*world){func(w *world) {
				ten(w, 15, func(v *protocol.VM) { v.Ready, v.ReadyAt, v.CreatedAt = false, time.Time{}, t0.Add(-5*time.Hour) })
			}}, view: PoolOK},
		{name: "a VM's check-ins say 2 jobs while the pool lost it",
			steps: []func(*world){func(w *world) { ten(w, 15, checkin(2, time.Second)) }, func(w *world) {
				delete(w.demand.Machines, "vm-v3")
				w.now = w.now.Add(3 * time.Hour)
			}}, view: PoolOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("west")
			b := NewBuilder()
			var s planner.Snapshot
			var r Report
			for i, step := range tc.steps {
				if i > 0 {
					w.now = w.now.Add(time.Minute)
				}
				step(w)
				s, r = b.Build(w.input())
			}
			if r.PoolView != tc.view {
				t.Errorf("pool view %s (%s), want %s", r.PoolView, r.PoolReason, tc.view)
			}
			p := planner.Decide(s)
			if len(p.Retires)+len(p.Deletes)+len(p.Boots) != 0 {
				t.Fatalf("retires %+v deletes %+v boots %+v", p.Retires, p.Deletes, p.Boots)
			}
			if tc.view == PoolOK {
				return
			}
			for _, vm := range s.VMs {
				if vm.Evidence != planner.EvidenceUnknown {
					t.Errorf("VM %s: evidence %s on an implausible pool view", vm.ID, vm.Evidence)
				}
			}
		})
	}
}

// TestReportBounded: the report lists at most MaxReportVMs unknown VMs.
func TestReportBounded(t *testing.T) {
	w := newWorld("west")
	var vms []protocol.VM
	for i := range MaxReportVMs + 5 {
		vms = append(vms, vmW(fmt.Sprint(i), checkin(1, time.Second)))
	}
	w.set("west", append(vms, vmW("in"))...)
	w.pool(map[string]int{"in": 0})
	w.demand.Machines["vm-0"] = demand.Machine{VMName: "vm-0", RunningJobs: 1, State: demand.MachineBusy}
	// Most check-ins are missing from the pool: the view is implausible.
	_, r := NewBuilder().Build(w.input())
	if r.PoolView != PoolImplausible || len(r.Unknown) != MaxReportVMs || r.UnknownLeftOut != 6 || r.Counts.Unknown != MaxReportVMs+6 {
		t.Fatalf("view %s, %d listed, %d left out, counts %+v", r.PoolView, len(r.Unknown), r.UnknownLeftOut, r.Counts)
	}
}

// TestHoldExpiry: a manual hold expires planner.Config.HoldMax after it was
// put or renewed; without HoldMax it never does. An expired hold returns
// the VM to the planner's rules: an idle VM past its keep-alive is retired,
// a busy one is not.
func TestHoldExpiry(t *testing.T) {
	tests := []struct {
		name     string
		holdMax  time.Duration
		heldAgo  time.Duration
		running  int
		wantHeld bool
		wantGone bool
	}{
		{"no hold_max: a hold never expires", 0, 1000 * time.Hour, 0, true, false},
		{"within hold_max", 24 * time.Hour, 23 * time.Hour, 0, true, false},
		{"expired: the idle VM goes by its keep-alive", 24 * time.Hour, 25 * time.Hour, 0, false, true},
		{"expired: a busy VM stays", 24 * time.Hour, 25 * time.Hour, 2, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld("west")
			w.planner.HoldMax = tc.holdMax
			w.set("west", vmW("v1"))
			w.pool(map[string]int{"v1": tc.running}) // idle for an hour when running nothing
			w.intent.Begin().PutHold(intent.Hold{VMID: "v1", Site: "west", At: w.now.Add(-tc.heldAgo)})
			// Two builds 15 minutes apart: idle time counts only with fresh
			// evidence, and a hold put 15 minutes before the second.
			b := NewBuilder()
			b.Build(w.input())
			w.now = w.now.Add(15 * time.Minute)
			w.intent.Begin().PutHold(intent.Hold{VMID: "v1", Site: "west", At: w.now.Add(-tc.heldAgo)})
			s, _ := b.Build(w.input())
			vm, ok := find(s, "v1")
			if !ok || vm.Held != tc.wantHeld {
				t.Fatalf("VM %+v (found %v): held %v, want %v", vm, ok, vm.Held, tc.wantHeld)
			}
			p := planner.Decide(s)
			if gone := len(p.Retires)+len(p.Deletes) > 0; gone != tc.wantGone {
				t.Fatalf("retires %+v deletes %+v, want the VM gone: %v", p.Retires, p.Deletes, tc.wantGone)
			}
		})
	}
}
