package planner

import (
	"strings"
	"testing"
	"time"
)

// TestJobAttributes: the jobs' own +VMInstanceType, +VMKeepAlive and
// +VMMaxLifetime (Shape.Flavor, KeepAlive, MaxLifetime) choose the flavor,
// reach the boots, and retire VMs gracefully at the jobs' lifetime.
func TestJobAttributes(t *testing.T) {
	west := []Cloud{testCloud("west", 0)}
	shape := func(mod func(*Shape)) Shape {
		sh := testShape("a", 1, 2)
		mod(&sh)
		return sh
	}
	mk := func(id string, state VMState, mod func(*VM)) VM {
		vm := testVM(id, "west", "a", state, 1)
		mod(&vm)
		return vm
	}
	runCases(t, []planCase{
		{name: "a named flavor is booted though a smaller one fits",
			s:     snap(west, []Shape{shape(func(sh *Shape) { sh.Flavor = "c4m8" })}, nil),
			boots: "west/a/c4m8×1"},
		{name: "a named flavor holds as many jobs as fit, not the pack",
			s:     snap(west, []Shape{shape(func(sh *Shape) { sh.Flavor = "c2m4"; sh.Idle = 5; sh.JobsPerVM = 4 })}, nil),
			boots: "west/a/c2m4×3"},
		{name: "a flavor the cloud does not offer boots nothing there",
			s:     snap([]Cloud{testCloud("west", 0)}, []Shape{shape(func(sh *Shape) { sh.Flavor = "m1.huge" })}, nil),
			notes: []string{"flavor m1.huge the jobs ask for is not offered on west or does not fit them"}},
		{name: "a named flavor too small for one job boots nothing",
			s:     snap(west, []Shape{shape(func(sh *Shape) { sh.Flavor = "c1m2"; sh.Cpus = 2; sh.MemoryMiB = 4096 })}, nil),
			notes: []string{"flavor c1m2 the jobs ask for is not offered on west or does not fit them"}},
		{name: "the next cloud that offers the flavor takes the jobs",
			s: snap([]Cloud{func() Cloud { c := testCloud("west", 0); c.Flavors = c.Flavors[:2]; return c }(), testCloud("east", 1)},
				[]Shape{shape(func(sh *Shape) { sh.Flavor = "c4m8" })}, nil),
			boots: "east/a/c4m8×1"},
		{name: "shapes that differ in flavor are booted apart",
			s:     snap(west, []Shape{shape(func(sh *Shape) { sh.Idle = 1 }), shape(func(sh *Shape) { sh.Idle = 1; sh.Flavor = "c2m4" })}, nil),
			boots: "west/a/c1m2×1 west/a/c2m4×1"},
		{name: "the jobs' max lifetime retires a busy VM, gracefully",
			s: snap(west, nil, []VM{
				mk("old", VMBusy, func(vm *VM) { vm.MaxLifetime = 30 * time.Minute; vm.CreatedAt = t0.Add(-31 * time.Minute) }),
				mk("young", VMBusy, func(vm *VM) { vm.MaxLifetime = 30 * time.Minute; vm.CreatedAt = t0.Add(-29 * time.Minute) }),
				mk("none", VMBusy, func(vm *VM) { vm.CreatedAt = t0.Add(-100 * time.Hour) }),
			}),
			actions: "retire:max-lifetime:old"},
		{name: "the shorter of the cloud's and the jobs' max lifetime applies",
			s: with(snap([]Cloud{func() Cloud { c := testCloud("west", 0); c.MaxLifetime = time.Hour; return c }()}, nil, []VM{
				mk("jobshort", VMIdle, func(vm *VM) { vm.MaxLifetime = 10 * time.Minute; vm.CreatedAt = t0.Add(-11 * time.Minute) }),
				mk("joblong", VMBusy, func(vm *VM) { vm.MaxLifetime = 10 * time.Hour; vm.CreatedAt = t0.Add(-61 * time.Minute) }),
				mk("jobyoung", VMBusy, func(vm *VM) { vm.MaxLifetime = 10 * time.Hour; vm.CreatedAt = t0.Add(-59 * time.Minute) }),
			}), func(s *Snapshot) { s.Config.MaxLifetime = 48 * time.Hour }),
			actions: "retire:max-lifetime:joblong retire:max-lifetime:jobshort"},
		{name: "an unknown VM goes at the jobs' max lifetime too, by retirement",
			s: snap(west, nil, []VM{
				mk("dark", VMBusy, func(vm *VM) {
					vm.MaxLifetime = time.Hour
					vm.CreatedAt = t0.Add(-2 * time.Hour)
					vm.Evidence, vm.Why = EvidenceUnknown, "agent silent"
				}),
			}),
			actions: "retire:max-lifetime:dark"},
		{name: "a retiring VM past the jobs' max lifetime waits for its retirement",
			s: snap(west, nil, []VM{
				mk("r", VMRetiring, func(vm *VM) {
					vm.RunningJobs = 1
					vm.MaxLifetime = time.Minute
					vm.CreatedAt = t0.Add(-5 * time.Hour)
					vm.RetiringSince = t0.Add(-time.Hour)
				}),
			})},
		{name: "the jobs' keep-alive per VM",
			s: snap(west, nil, []VM{
				mk("short", VMIdle, func(vm *VM) { vm.KeepAlive = 3 * time.Minute; vm.IdleSince = t0.Add(-4 * time.Minute) }),
				mk("long", VMIdle, func(vm *VM) { vm.KeepAlive = time.Hour; vm.IdleSince = t0.Add(-50 * time.Minute) }),
			}),
			actions: "retire:keep-alive:short"},
	})

	t.Run("boots carry the jobs' keep-alive and max lifetime", func(t *testing.T) {
		p := Decide(snap(west, []Shape{
			shape(func(sh *Shape) { sh.Idle = 1; sh.KeepAlive = 5 * time.Minute; sh.MaxLifetime = 2 * time.Hour }),
			shape(func(sh *Shape) { sh.Idle = 1; sh.KeepAlive = 5 * time.Minute }),
		}, nil))
		if len(p.Boots) != 2 {
			t.Fatalf("boots = %+v, want 2 (max lifetimes differ)", p.Boots)
		}
		var got []string
		for _, b := range p.Boots {
			got = append(got, b.KeepAlive.String()+"/"+b.MaxLifetime.String())
		}
		if s := strings.Join(got, " "); s != "5m0s/0s 5m0s/2h0m0s" {
			t.Errorf("boots keep-alive/max lifetime = %s, want 5m0s/0s 5m0s/2h0m0s", s)
		}
	})
	t.Run("max lifetime reason names the jobs", func(t *testing.T) {
		p := Decide(snap(west, nil, []VM{mk("old", VMBusy, func(vm *VM) {
			vm.MaxLifetime = 30 * time.Minute
			vm.CreatedAt = t0.Add(-31 * time.Minute)
		})}))
		if len(p.Retires) != 1 || len(p.Deletes) != 0 || !strings.Contains(p.Retires[0].Reason, "reached job max lifetime 30m") {
			t.Fatalf("plan = %+v", p)
		}
	})
}
