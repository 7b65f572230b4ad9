package planner

import (
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// planCase is one table entry: a snapshot and the plan it must give.
type planCase struct {
	name    string
	s       Snapshot
	boots   string
	actions string
	notes   []string
}

func runCases(t *testing.T, cases []planCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkPlan(t, Decide(tc.s), tc.boots, tc.actions, tc.notes...)
		})
	}
}

func with(s Snapshot, f func(*Snapshot)) Snapshot {
	f(&s)
	return s
}

func TestShortfall(t *testing.T) {
	west := []Cloud{testCloud("west", 0)}
	runCases(t, []planCase{
		{name: "idle jobs without VMs boot the smallest fitting flavor",
			s:     snap(west, []Shape{testShape("a", 1, 3)}, nil),
			boots: "west/a/c1m2×3"},
		{name: "running jobs are not demand",
			s: snap(west, []Shape{{Group: "a", VMType: "default", Cpus: 1, MemoryMiB: 2048, Running: 50}}, nil)},
		{name: "idle VM covers idle jobs",
			s: snap(west, []Shape{testShape("a", 1, 4)}, []VM{testVM("1", "west", "a", VMIdle, 4)})},
		{name: "booting and starting VMs cover idle jobs",
			s: snap(west, []Shape{testShape("a", 2, 4)}, []VM{
				testVM("1", "west", "a", VMBooting, 4), {Site: "west", Name: "pending", Group: "a", VMType: "default", Cpus: 2, MemoryMiB: 4096, State: VMBooting, CreatedAt: t0},
				testVM("2", "west", "a", VMStarting, 2)})},
		{name: "partly covered: boot for the rest",
			s:     snap(west, []Shape{testShape("a", 1, 6)}, []VM{testVM("1", "west", "a", VMIdle, 4)}),
			boots: "west/a/c1m2×2"},
		{name: "VMs of another group or VM type do not cover",
			s: snap(west, []Shape{testShape("a", 1, 1)}, []VM{testVM("1", "west", "b", VMIdle, 4),
				func() VM { v := testVM("2", "west", "a", VMIdle, 4); v.VMType = "gpu"; return v }()}),
			boots: "west/a/c1m2×1"},
		{name: "retiring and error VMs do not cover",
			s: snap(west, []Shape{testShape("a", 1, 2)}, []VM{testVM("1", "west", "a", VMRetiring, 4),
				func() VM { v := testVM("2", "west", "a", VMError, 4); v.ErrorSince = t0; return v }()}),
			boots: "west/a/c1m2×2"},
		{name: "a busy VM covers only what its startd reports free",
			s: snap(west, []Shape{testShape("a", 1, 5)}, []VM{
				func() VM {
					v := testVM("1", "west", "a", VMBusy, 8)
					v.RunningJobs = 5
					v.FreeCpus, v.FreeMemoryMiB = 3, 6144
					return v
				}(),
				func() VM { v := testVM("2", "west", "a", VMBusy, 8); v.RunningJobs = 8; return v }()}),
			boots: "west/a/c1m2×2"},
		{name: "memory-starved VM covers nothing",
			s:     snap(west, []Shape{testShape("a", 1, 1)}, []VM{func() VM { v := testVM("1", "west", "a", VMIdle, 4); v.MemoryMiB = 1024; return v }()}),
			boots: "west/a/c1m2×1"},
		{name: "each VM covers once: big shapes get the VMs they fit",
			s: snap(west, []Shape{testShape("a", 1, 4), testShape("a", 4, 1)}, []VM{testVM("1", "west", "a", VMIdle, 4)}),
			// The 4-core job takes the idle VM; the four 1-core jobs boot.
			boots: "west/a/c1m2×4"},
		{name: "VM on a site the shape may not use does not cover",
			s: snap([]Cloud{testCloud("west", 0), testCloud("east", 1)},
				[]Shape{func() Shape { s := testShape("a", 1, 1); s.Clouds = []string{"east"}; return s }()},
				[]VM{testVM("1", "west", "a", VMIdle, 1)}),
			boots: "east/a/c1m2×1"},
		{name: "duplicate shapes are merged",
			s:     snap(west, []Shape{testShape("a", 1, 2), testShape("a", 1, 3)}, []VM{testVM("1", "west", "a", VMIdle, 1)}),
			boots: "west/a/c1m2×4"},
	})
}

func TestMatching(t *testing.T) {
	two := []Cloud{testCloud("west", 0), testCloud("east", 1)}
	runCases(t, []planCase{
		{name: "smallest flavor that fits",
			s:     snap(two, []Shape{testShape("a", 3, 1)}, nil),
			boots: "west/a/c4m8×1"},
		{name: "memory decides the flavor too",
			s:     snap(two, []Shape{{Group: "a", VMType: "default", Cpus: 1, MemoryMiB: 5000, Idle: 1}}, nil),
			boots: "west/a/c4m8×1"},
		{name: "disk decides the flavor too",
			s:     snap(two, []Shape{{Group: "a", VMType: "default", Cpus: 1, MemoryMiB: 1024, DiskKiB: 30 << 20, Idle: 1}}, nil),
			boots: "west/a/c4m8×1"},
		{name: "a 1-core job on a 2-core smallest flavor packs two",
			s: snap([]Cloud{func() Cloud {
				c := testCloud("west", 0)
				c.Flavors = c.Flavors[2:]
				return c
			}()}, []Shape{testShape("a", 1, 5)}, nil),
			boots: "west/a/c2m4×3"},
		{name: "shape asks for several jobs per VM",
			s:     snap(two, []Shape{func() Shape { s := testShape("a", 1, 20); s.JobsPerVM = 8; return s }()}, nil),
			boots: "west/a/c8m16×3"},
		{name: "VM type asks for several jobs per VM",
			s: with(snap(two, []Shape{testShape("a", 2, 4)}, nil), func(s *Snapshot) {
				s.VMTypes = []VMType{{Name: "default", JobsPerVM: 2}}
			}),
			boots: "west/a/c4m8×2"},
		{name: "group's VM type setting beats the global one",
			s: with(snap(two, []Shape{testShape("a", 2, 4)}, nil), func(s *Snapshot) {
				s.VMTypes = []VMType{{Name: "default", JobsPerVM: 2}, {Group: "a", Name: "default", JobsPerVM: 4}}
			}),
			boots: "west/a/c8m16×1"},
		{name: "cloud priority order",
			s:     snap([]Cloud{testCloud("west", 5), testCloud("east", 1)}, []Shape{testShape("a", 1, 2)}, nil),
			boots: "east/a/c1m2×2"},
		{name: "equal priority: by site name",
			s:     snap([]Cloud{testCloud("west", 0), testCloud("east", 0)}, []Shape{testShape("a", 1, 2)}, nil),
			boots: "east/a/c1m2×2"},
		{name: "target clouds",
			s:     snap(two, []Shape{func() Shape { s := testShape("a", 1, 2); s.Clouds = []string{"east"}; return s }()}, nil),
			boots: "east/a/c1m2×2"},
		{name: "alias stands for its sites",
			s: with(snap([]Cloud{testCloud("west", 0), testCloud("east", 1), testCloud("north", 2)},
				[]Shape{func() Shape { s := testShape("a", 1, 2); s.Clouds = []string{"eu"}; return s }()}, nil), func(s *Snapshot) {
				s.Aliases = map[string][]string{"eu": {"north", "east"}}
			}),
			boots: "east/a/c1m2×2"},
		{name: "group restricted to clouds",
			s: with(snap(two, []Shape{testShape("a", 1, 2)}, nil), func(s *Snapshot) {
				s.Groups = []Group{{Name: "a", Clouds: []string{"east"}}}
			}),
			boots: "east/a/c1m2×2"},
		{name: "fallback to the next cloud when the first is full",
			s: snap([]Cloud{func() Cloud { c := testCloud("west", 0); c.Caps.VMs = 2; return c }(), testCloud("east", 1)},
				[]Shape{testShape("a", 1, 5)}, nil),
			boots: "east/a/c1m2×3 west/a/c1m2×2",
			notes: []string{"cloud west full: no servers left under its admin cap"}},
		{name: "no flavor fits anywhere",
			s:     snap(two, []Shape{testShape("a", 16, 1)}, nil),
			notes: []string{"group a: 1 idle jobs in 1 shapes wait", "no flavor on"}},
		{name: "no cloud allowed",
			s:     snap(two, []Shape{func() Shape { s := testShape("a", 1, 2); s.Clouds = []string{"mars"}; return s }()}, nil),
			notes: []string{"no cloud the jobs may use"}},
	})
}

func TestLimits(t *testing.T) {
	cl := func(f func(*Cloud)) []Cloud {
		c := testCloud("west", 0)
		f(&c)
		return []Cloud{c, testCloud("east", 1)}
	}
	runCases(t, []planCase{
		{name: "project cores limit, usage counted",
			s: snap(cl(func(c *Cloud) {
				c.Limits = protocol.Limits{MaxCores: 10, MaxRAMMiB: -1, MaxInstances: -1, UsedCores: 6}
			}), []Shape{testShape("a", 2, 4)}, nil),
			boots: "east/a/c2m4×2 west/a/c2m4×2"},
		{name: "project limit: servers not yet listed count",
			s: snap(cl(func(c *Cloud) {
				c.Limits = protocol.Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: 3, UsedInstances: 1}
			}), []Shape{testShape("a", 1, 4)}, []VM{
				{Site: "west", Name: "p1", Group: "b", VMType: "default", Cpus: 1, MemoryMiB: 2048, State: VMBooting, CreatedAt: t0}}),
			boots: "east/a/c1m2×3 west/a/c1m2×1"},
		{name: "project RAM limit",
			s: snap(cl(func(c *Cloud) {
				c.Limits = protocol.Limits{MaxCores: -1, MaxRAMMiB: 4096, MaxInstances: -1}
			}), []Shape{testShape("a", 1, 3)}, nil),
			boots: "east/a/c1m2×1 west/a/c1m2×2"},
		{name: "zero limits (none reported yet) allow nothing",
			s:     snap(cl(func(c *Cloud) { c.Limits = protocol.Limits{} }), []Shape{testShape("a", 1, 1)}, nil),
			boots: "east/a/c1m2×1"},
		{name: "admin caps count every Canopy VM there",
			s: snap(cl(func(c *Cloud) { c.Caps = Caps{Cores: 4} }), []Shape{testShape("a", 1, 3)},
				[]VM{testVM("1", "west", "b", VMBusy, 2), testVM("2", "west", "b", VMRetiring, 1)}),
			boots: "east/a/c1m2×2 west/a/c1m2×1"},
		{name: "soft quota less foreign usage",
			s: snap(cl(func(c *Cloud) { c.SoftQuota = Caps{VMs: 10}; c.Foreign = Usage{VMs: 7} }), []Shape{testShape("a", 1, 5)},
				[]VM{testVM("1", "west", "b", VMBusy, 1)}),
			boots: "east/a/c1m2×3 west/a/c1m2×2"},
		{name: "the smallest of the limits applies",
			s: snap(cl(func(c *Cloud) {
				c.Limits = protocol.Limits{MaxCores: 100, MaxRAMMiB: -1, MaxInstances: -1}
				c.Caps = Caps{Cores: 50}
				c.SoftQuota = Caps{Cores: 3}
			}), []Shape{testShape("a", 1, 5)}, nil),
			boots: "east/a/c1m2×2 west/a/c1m2×3",
			notes: []string{"cloud west full: no cores left under its soft quota less foreign usage"}},
		{name: "group cap over all clouds",
			s: with(snap(cl(func(*Cloud) {}), []Shape{testShape("a", 1, 5), testShape("b", 1, 2)}, []VM{testVM("1", "east", "a", VMBusy, 1)}), func(s *Snapshot) {
				s.Groups = []Group{{Name: "a", Caps: Caps{VMs: 3}}}
			}),
			boots: "west/a/c1m2×2 west/b/c1m2×2",
			notes: []string{"group a at its servers cap"}},
		{name: "group cap on one cloud",
			s: with(snap(cl(func(*Cloud) {}), []Shape{testShape("a", 1, 5)}, nil), func(s *Snapshot) {
				s.Groups = []Group{{Name: "a", CloudCaps: map[string]Caps{"west": {Cores: 2}}}}
			}),
			boots: "east/a/c1m2×3 west/a/c1m2×2"},
	})
}

func TestRate(t *testing.T) {
	runCases(t, []planCase{
		{name: "in-flight cap counts booting and starting VMs",
			s: with(snap([]Cloud{testCloud("west", 0)}, []Shape{testShape("a", 1, 10)},
				[]VM{testVM("1", "west", "b", VMBooting, 1), testVM("2", "west", "b", VMStarting, 1), testVM("3", "west", "b", VMIdle, 1)}),
				func(s *Snapshot) { s.Config.MaxBootsPerCloud = 5 }),
			boots: "west/a/c1m2×3",
			notes: []string{"cloud west: 5 boots in flight, cap 5"}},
		{name: "clouds on one endpoint share the cap",
			s: with(snap([]Cloud{
				func() Cloud { c := testCloud("west", 0); c.Endpoint = "https://nova"; return c }(),
				func() Cloud { c := testCloud("east", 1); c.Endpoint = "https://nova"; c.MaxInFlight = 4; return c }(),
				testCloud("north", 2),
			}, []Shape{testShape("a", 1, 10)}, []VM{testVM("1", "east", "b", VMBooting, 1)}), func(s *Snapshot) { s.Config.MaxBootsPerCloud = 5 }),
			boots: "north/a/c1m2×5 west/a/c1m2×3"},
		{name: "idle-VM throttle stops a group's boots",
			s: snap([]Cloud{testCloud("west", 0)}, []Shape{testShape("a", 2, 10), testShape("b", 2, 1)},
				append(idleVMs("a", 10, 1), idleVMs("b", 9, 1)...)),
			boots: "west/b/c2m4×1",
			notes: []string{"group a throttled: 10 idle VMs, limit max(10, 0 busy × 10%)"}},
		{name: "throttle grows with busy VMs",
			s: snap([]Cloud{testCloud("west", 0)}, []Shape{testShape("a", 2, 1)},
				append(idleVMs("a", 10, 1), busyVMs("a", 110)...)),
			boots: "west/a/c2m4×1"},
		{name: "throttle off",
			s: with(snap([]Cloud{testCloud("west", 0)}, []Shape{testShape("a", 2, 1)}, idleVMs("a", 30, 1)),
				func(s *Snapshot) { s.Config.IdleThrottleMin = -1 }),
			boots: "west/a/c2m4×1"},
	})
}

func idleVMs(group string, n, cpus int) []VM {
	var out []VM
	for i := range n {
		out = append(out, testVM(group+"-idle-"+itoa(i), "west", group, VMIdle, cpus))
	}
	return out
}

func busyVMs(group string, n int) []VM {
	var out []VM
	for i := range n {
		out = append(out, testVM(group+"-busy-"+itoa(i), "west", group, VMBusy, 1))
	}
	return out
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func TestFairness(t *testing.T) {
	capped := func(vms int) []Cloud {
		c := testCloud("west", 0)
		c.Caps.VMs = vms
		return []Cloud{c}
	}
	t.Run("a huge queue does not starve a small one", func(t *testing.T) {
		p := Decide(snap(capped(20), []Shape{testShape("big", 1, 300000), testShape("small", 1, 30)}, nil))
		checkPlan(t, p, "west/big/c1m2×10 west/small/c1m2×10", "")
	})
	t.Run("small group done, big group gets the rest", func(t *testing.T) {
		p := Decide(snap(capped(20), []Shape{testShape("big", 1, 300000), testShape("small", 1, 3)}, nil))
		checkPlan(t, p, "west/big/c1m2×17 west/small/c1m2×3", "")
	})
	t.Run("shapes of a group take turns", func(t *testing.T) {
		p := Decide(snap(capped(4), []Shape{testShape("a", 1, 100), testShape("a", 2, 100)}, nil))
		checkPlan(t, p, "west/a/c1m2×2 west/a/c2m4×2", "")
	})
	t.Run("share weighting counts cores held", func(t *testing.T) {
		s := snap(capped(40), []Shape{testShape("a", 1, 1000), testShape("b", 1, 1000)}, busyVMs("a", 10))
		s.Config.Fairness = FairShare
		s.Config.MaxBootsPerCloud = 0
		s.Groups = []Group{{Name: "a", Share: 3}, {Name: "b", Share: 1}}
		// 30 new VMs: a holds 10 and gets to 30 (10 per share), b gets 10.
		checkPlan(t, Decide(s), "west/a/c1m2×20 west/b/c1m2×10", "")
	})
	t.Run("rotation ignores share", func(t *testing.T) {
		s := snap(capped(30), []Shape{testShape("a", 1, 1000), testShape("b", 1, 1000)}, nil)
		s.Config.MaxBootsPerCloud = 0
		s.Groups = []Group{{Name: "a", Share: 3}, {Name: "b", Share: 1}}
		checkPlan(t, Decide(s), "west/a/c1m2×15 west/b/c1m2×15", "")
	})
}

func TestLifecycle(t *testing.T) {
	west := []Cloud{testCloud("west", 0)}
	mk := func(id string, state VMState, f func(*VM)) VM {
		vm := testVM(id, "west", "a", state, 1)
		f(&vm)
		return vm
	}
	runCases(t, []planCase{
		{name: "come-alive: never registered within 2h",
			s: snap(west, nil, []VM{
				mk("old", VMStarting, func(vm *VM) { vm.CreatedAt = t0.Add(-2 * time.Hour) }),
				mk("young", VMStarting, func(vm *VM) { vm.CreatedAt = t0.Add(-119 * time.Minute) }),
				mk("oldboot", VMBooting, func(vm *VM) { vm.CreatedAt = t0.Add(-3 * time.Hour) }),
			}),
			actions: "delete:come-alive:old delete:come-alive:oldboot"},
		{name: "job-alive: registered but never ran a job",
			s: snap(west, []Shape{testShape("a", 1, 1)}, []VM{
				mk("never", VMIdle, func(vm *VM) { vm.JobsStarted = 0; vm.RegisteredAt = t0.Add(-30 * time.Minute) }),
				mk("ran", VMIdle, func(vm *VM) { vm.JobsStarted = 3; vm.RegisteredAt = t0.Add(-5 * time.Hour) }),
				mk("unknown", VMIdle, func(vm *VM) { vm.JobsStarted = 0; vm.RegisteredAt = time.Time{} }),
				mk("recent", VMIdle, func(vm *VM) { vm.JobsStarted = 0; vm.RegisteredAt = t0.Add(-29 * time.Minute) }),
			}),
			actions: "retire:job-alive:never"},
		{name: "error past error-delay",
			s: snap(west, nil, []VM{
				mk("e1", VMError, func(vm *VM) { vm.ErrorSince = t0.Add(-5 * time.Minute) }),
				mk("e2", VMError, func(vm *VM) { vm.ErrorSince = t0.Add(-4 * time.Minute) }),
				mk("e3", VMError, func(vm *VM) { vm.CreatedAt = t0.Add(-6 * time.Minute) }),
			}),
			actions: "delete:error-delay:e1 delete:error-delay:e3"},
		{name: "keep-alive default 10m",
			s: snap(west, nil, []VM{
				mk("i1", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-10 * time.Minute) }),
				mk("i2", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-9 * time.Minute) }),
			}),
			actions: "retire:keep-alive:i1"},
		{name: "keep-alive: idle demand that fits keeps the VM",
			s: snap(west, []Shape{testShape("a", 1, 1)}, []VM{
				mk("i1", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-time.Hour) }),
			})},
		{name: "keep-alive: demand that does not fit does not keep it",
			s: snap(west, []Shape{testShape("a", 2, 1)}, []VM{
				mk("i1", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-time.Hour) }),
			}),
			boots: "west/a/c2m4×1", actions: "retire:keep-alive:i1"},
		{name: "keep-alive: only the surplus goes, the oldest stays",
			s: snap(west, []Shape{testShape("a", 1, 1)}, []VM{
				mk("old", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-time.Hour); vm.CreatedAt = t0.Add(-5 * time.Hour) }),
				mk("mid", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-time.Hour); vm.CreatedAt = t0.Add(-3 * time.Hour) }),
				mk("new", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-time.Hour); vm.CreatedAt = t0.Add(-2 * time.Hour) }),
			}),
			actions: "retire:keep-alive:mid retire:keep-alive:new"},
		{name: "keep-alive: a ready VM takes the job before a booting one",
			s: snap(west, []Shape{testShape("a", 1, 1)}, []VM{
				mk("idle", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-time.Hour) }),
				mk("boot", VMBooting, func(vm *VM) { vm.CreatedAt = t0 }),
			})},
		{name: "keep-alive: cloud, then group, then job override",
			s: with(snap([]Cloud{func() Cloud { c := testCloud("west", 0); c.KeepAlive = time.Hour; return c }()}, nil, []VM{
				mk("cloud", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-59 * time.Minute) }),
				mk("group", VMIdle, func(vm *VM) { vm.Group = "g"; vm.IdleSince = t0.Add(-20 * time.Minute) }),
				mk("job", VMIdle, func(vm *VM) { vm.Group = "g"; vm.KeepAlive = 3 * time.Hour; vm.IdleSince = t0.Add(-2 * time.Hour) }),
				mk("jobdone", VMIdle, func(vm *VM) { vm.KeepAlive = 3 * time.Hour; vm.IdleSince = t0.Add(-3 * time.Hour) }),
			}), func(s *Snapshot) { s.Groups = []Group{{Name: "g", KeepAlive: 20 * time.Minute}} }),
			actions: "retire:keep-alive:group retire:keep-alive:jobdone"},
		{name: "keep-alive never below 2 minutes",
			s: with(snap(west, nil, []VM{
				mk("i1", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-119 * time.Second) }),
				mk("i2", VMIdle, func(vm *VM) { vm.IdleSince = t0.Add(-2 * time.Minute) }),
			}), func(s *Snapshot) { s.Config.KeepAlive = time.Second }),
			actions: "retire:keep-alive:i2"},
		{name: "max lifetime retires busy VMs too",
			s: with(snap(west, nil, []VM{
				mk("old", VMBusy, func(vm *VM) { vm.CreatedAt = t0.Add(-48 * time.Hour) }),
				mk("young", VMBusy, func(vm *VM) { vm.CreatedAt = t0.Add(-47 * time.Hour) }),
			}), func(s *Snapshot) { s.Config.MaxLifetime = 48 * time.Hour }),
			actions: "retire:max-lifetime:old"},
		{name: "cloud's max lifetime overrides",
			s: with(snap([]Cloud{func() Cloud { c := testCloud("west", 0); c.MaxLifetime = time.Hour; return c }()}, nil, []VM{
				mk("b", VMBusy, func(vm *VM) {}),
			}), func(s *Snapshot) { s.Config.MaxLifetime = 48 * time.Hour }),
			actions: "retire:max-lifetime:b"},
		{name: "stuck retiring VM deleted after deadline + error delay",
			s: snap(west, nil, []VM{
				mk("stuck", VMRetiring, func(vm *VM) { vm.RetiringSince = t0.Add(-24*time.Hour - 5*time.Minute) }),
				mk("fine", VMRetiring, func(vm *VM) { vm.RetiringSince = t0.Add(-24 * time.Hour) }),
				mk("unknown", VMRetiring, func(vm *VM) {}),
			}),
			actions: "delete:retire-timeout:stuck"},
		{name: "busy VMs are never retired by timers",
			s: snap(west, nil, []VM{mk("b", VMBusy, func(vm *VM) {
				vm.IdleSince = t0.Add(-48 * time.Hour)
				vm.JobsStarted = 0
				vm.RegisteredAt = t0.Add(-48 * time.Hour)
			})})},
		{name: "held VMs are never touched",
			s: snap(west, nil, []VM{
				mk("h1", VMError, func(vm *VM) { vm.Held = true; vm.ErrorSince = t0.Add(-time.Hour) }),
				mk("h2", VMIdle, func(vm *VM) { vm.Held = true; vm.IdleSince = t0.Add(-time.Hour) }),
				mk("h3", VMStarting, func(vm *VM) { vm.Held = true; vm.CreatedAt = t0.Add(-5 * time.Hour) }),
			})},
		{name: "VMs the cloud does not list cannot be acted on",
			s: snap(west, nil, []VM{mk("", VMStarting, func(vm *VM) { vm.CreatedAt = t0.Add(-5 * time.Hour) })})},
	})
	t.Run("reasons", func(t *testing.T) {
		p := Decide(snap(west, nil, []VM{mk("e1", VMError, func(vm *VM) { vm.ErrorSince = t0.Add(-7 * time.Minute) })}))
		if len(p.Deletes) != 1 || p.Deletes[0].Reason != "in error for 7m since 11:53, past error delay 5m" {
			t.Fatalf("deletes = %+v", p.Deletes)
		}
	})
}

func TestFailingClouds(t *testing.T) {
	two := []Cloud{testCloud("west", 0), testCloud("east", 1)}
	fail := func(site, image string, ago time.Duration) Failure {
		return Failure{Site: site, Image: image, At: t0.Add(-ago), Reason: "quota exceeded"}
	}
	runCases(t, []planCase{
		{name: "one failure: 1 minute backoff",
			s:     with(snap(two, []Shape{testShape("a", 1, 2)}, nil), func(s *Snapshot) { s.Failures = []Failure{fail("west", "", 59*time.Second)} }),
			boots: "east/a/c1m2×2",
			notes: []string{"cloud west backing off until 12:00 after 1 boot failures (last: quota exceeded)"}},
		{name: "one failure: backoff over",
			s:     with(snap(two, []Shape{testShape("a", 1, 2)}, nil), func(s *Snapshot) { s.Failures = []Failure{fail("west", "", time.Minute)} }),
			boots: "west/a/c1m2×2"},
		{name: "three failures: 4 minutes from the last",
			s: with(snap(two, []Shape{testShape("a", 1, 2)}, nil), func(s *Snapshot) {
				s.Failures = []Failure{fail("west", "", 10*time.Minute), fail("west", "", 3*time.Minute), fail("west", "", 9*time.Minute)}
			}),
			boots: "east/a/c1m2×2", notes: []string{"backing off until 12:01 after 3 boot failures"}},
		{name: "failures older than the window are forgotten",
			s: with(snap(two, []Shape{testShape("a", 1, 2)}, nil), func(s *Snapshot) {
				s.Failures = []Failure{fail("west", "", 2*time.Hour), fail("west", "", 61*time.Minute)}
			}),
			boots: "west/a/c1m2×2"},
		{name: "image failure backs off only that image there",
			s: with(snap(two, []Shape{testShape("a", 1, 1), func() Shape { s := testShape("b", 1, 1); s.Image = "bad"; return s }()}, nil),
				func(s *Snapshot) { s.Failures = []Failure{fail("west", "bad", 0)} }),
			boots: "east/b/c1m2×1 west/a/c1m2×1"},
		{name: "frozen: booted servers not listed",
			s: snap([]Cloud{func() Cloud {
				c := testCloud("west", 0)
				c.Unlisted, c.UnlistedSince = 3, t0.Add(-10*time.Minute)
				return c
			}(), testCloud("east", 1)}, []Shape{testShape("a", 1, 2)}, nil),
			boots: "east/a/c1m2×2", notes: []string{"cloud west frozen: 3 booted servers not listed since 11:50"}},
		{name: "not yet frozen",
			s: snap([]Cloud{func() Cloud {
				c := testCloud("west", 0)
				c.Unlisted, c.UnlistedSince = 3, t0.Add(-9*time.Minute)
				return c
			}(), testCloud("east", 1)}, []Shape{testShape("a", 1, 2)}, nil),
			boots: "west/a/c1m2×2"},
		{name: "every cloud failing: jobs wait",
			s: with(snap(two, []Shape{testShape("a", 1, 2)}, nil), func(s *Snapshot) {
				s.Failures = []Failure{fail("west", "", 0), fail("east", "", 0)}
			}),
			notes: []string{"group a: 2 idle jobs in 1 shapes wait; the most (2 of 1 cpu, 2048 MiB) because cloud west backing off"}},
	})
}

func TestBackoffDoubles(t *testing.T) {
	c := DefaultConfig()
	want := []time.Duration{0, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 30 * time.Minute, 30 * time.Minute}
	for n, w := range want {
		if got := c.Backoff(n); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, w)
		}
	}
	if got := c.Backoff(1000); got != 30*time.Minute {
		t.Errorf("Backoff(1000) = %s", got)
	}
}

func TestAdminControls(t *testing.T) {
	withCloud := func(f func(*Cloud)) []Cloud {
		c := testCloud("west", 0)
		f(&c)
		return []Cloud{c, testCloud("east", 1)}
	}
	runCases(t, []planCase{
		{name: "paused cloud: no boots, VMs stay",
			s: snap(withCloud(func(c *Cloud) { c.Paused = true }), []Shape{testShape("a", 1, 2)},
				[]VM{testVM("1", "west", "b", VMIdle, 1)}),
			boots: "east/a/c1m2×2", notes: []string{"cloud west paused: no new boots"}},
		{name: "disconnected cloud: no boots",
			s:     snap(withCloud(func(c *Cloud) { c.Connected = false }), []Shape{testShape("a", 1, 2)}, nil),
			boots: "east/a/c1m2×2", notes: []string{"cloud west: agent not connected"}},
		{name: "disabled cloud is drained",
			s: snap(withCloud(func(c *Cloud) { c.Disabled = true }), []Shape{testShape("a", 1, 1)}, []VM{
				testVM("idle", "west", "a", VMIdle, 1), testVM("busy", "west", "a", VMBusy, 1),
				testVM("boot", "west", "a", VMBooting, 1),
				func() VM { v := testVM("held", "west", "a", VMBusy, 1); v.Held = true; return v }()}),
			boots:   "east/a/c1m2×1",
			actions: "retire:cloud-disabled:busy retire:cloud-disabled:idle delete:cloud-disabled:boot",
			notes:   []string{"cloud west disabled: draining"}},
		{name: "paused group",
			s: with(snap(withCloud(func(*Cloud) {}), []Shape{testShape("a", 1, 2), testShape("b", 1, 1)}, nil),
				func(s *Snapshot) { s.Groups = []Group{{Name: "a", Paused: true}} }),
			boots: "west/b/c1m2×1", notes: []string{"group a paused"}},
		{name: "quota lowered: no boots, idle VMs retired first, running jobs kept",
			s: snap(withCloud(func(c *Cloud) { c.Caps.VMs = 2 }), []Shape{testShape("a", 1, 1)}, []VM{
				testVM("b1", "west", "a", VMBusy, 1), testVM("b2", "west", "a", VMBusy, 1),
				testVM("i1", "west", "a", VMIdle, 1), testVM("b3", "west", "a", VMBusy, 1)}),
			boots:   "east/a/c1m2×1",
			actions: "retire:over-quota:i1",
			notes:   []string{"cloud west over quota (servers admin cap 2, Canopy uses 4): no new boots"}},
		{name: "over quota past the deadline: busy VMs go, fewest jobs first",
			s: with(snap(withCloud(func(c *Cloud) { c.Caps.VMs = 1; c.OverQuotaSince = t0.Add(-2 * time.Hour) }), nil, []VM{
				func() VM { v := testVM("b1", "west", "a", VMBusy, 1); v.RunningJobs = 2; return v }(),
				testVM("b2", "west", "a", VMBusy, 1), testVM("b3", "west", "a", VMBusy, 1)}),
				func(s *Snapshot) { s.Config.OverQuotaDeadline = time.Hour }),
			actions: "retire:over-quota:b2 retire:over-quota:b3"},
		{name: "over quota but deadline not reached",
			s: with(snap(withCloud(func(c *Cloud) { c.Caps.VMs = 1; c.OverQuotaSince = t0.Add(-59 * time.Minute) }), nil, []VM{
				testVM("b2", "west", "a", VMBusy, 1), testVM("b3", "west", "a", VMBusy, 1)}),
				func(s *Snapshot) { s.Config.OverQuotaDeadline = time.Hour }),
		},
		{name: "over quota: retiring VMs already count as going",
			s: snap(withCloud(func(c *Cloud) { c.Caps.VMs = 2 }), nil, []VM{
				testVM("r1", "west", "a", VMRetiring, 1), testVM("r2", "west", "a", VMRetiring, 1),
				testVM("i1", "west", "a", VMIdle, 1), testVM("i2", "west", "a", VMIdle, 1)})},
		{name: "over quota: foreign usage grew past the soft quota",
			s: snap(withCloud(func(c *Cloud) { c.SoftQuota.Cores = 10; c.Foreign.Cores = 8 }), nil, []VM{
				testVM("i1", "west", "a", VMIdle, 2), testVM("s1", "west", "a", VMStarting, 2), testVM("b1", "west", "a", VMBusy, 2)}),
			actions: "retire:over-quota:i1 delete:over-quota:s1"},
		{name: "over quota: held VMs count but stay",
			s: snap(withCloud(func(c *Cloud) { c.Caps.VMs = 1 }), nil, []VM{
				func() VM { v := testVM("h", "west", "a", VMIdle, 1); v.Held = true; return v }(),
				testVM("i1", "west", "a", VMIdle, 1)}),
			actions: "retire:over-quota:i1"},
		{name: "group over its cap",
			s: with(snap(withCloud(func(*Cloud) {}), nil, []VM{
				testVM("i1", "west", "a", VMIdle, 1), testVM("i2", "east", "a", VMIdle, 1), testVM("b1", "west", "a", VMBusy, 1)}),
				func(s *Snapshot) { s.Groups = []Group{{Name: "a", Caps: Caps{VMs: 2}}} }),
			actions: "retire:over-quota:i2"},
		{name: "project limit lowered below use",
			s: snap(withCloud(func(c *Cloud) {
				c.Limits = protocol.Limits{MaxCores: 3, MaxRAMMiB: -1, MaxInstances: -1, UsedCores: 5}
			}), nil, []VM{testVM("i1", "west", "a", VMIdle, 2), testVM("b1", "west", "a", VMBusy, 2), testVM("x", "west", "a", VMIdle, 1)}),
			actions: "retire:over-quota:i1"},
	})
}

func TestRetireOrder(t *testing.T) {
	vms := []VM{
		func() VM { v := testVM("old", "west", "a", VMIdle, 1); v.CreatedAt = t0.Add(-5 * time.Hour); return v }(),
		func() VM { v := testVM("mid", "west", "a", VMIdle, 1); v.CreatedAt = t0.Add(-3 * time.Hour); return v }(),
		func() VM { v := testVM("new", "west", "a", VMIdle, 1); v.CreatedAt = t0.Add(-1 * time.Hour); return v }(),
	}
	c := testCloud("west", 0)
	c.Caps.VMs = 2
	for _, tc := range []struct {
		order RetireOrder
		want  string
	}{{RetireYoungest, "retire:over-quota:new"}, {RetireOldest, "retire:over-quota:old"}, {"", "retire:over-quota:new"}} {
		s := snap([]Cloud{c}, nil, vms)
		s.Config.RetireOrder = tc.order
		if got := actionSummary(Decide(s)); got != tc.want {
			t.Errorf("order %q: %s, want %s", tc.order, got, tc.want)
		}
	}
}

func TestStatusAndReasons(t *testing.T) {
	c := testCloud("west", 0)
	c.Caps = Caps{VMs: 3}
	s := snap([]Cloud{c, testCloud("east", 1)}, []Shape{testShape("a", 1, 5)}, []VM{testVM("1", "west", "a", VMBusy, 1)})
	p := Decide(s)
	if got := bootSummary(p); got != "east/a/c1m2×3 west/a/c1m2×2" {
		t.Fatalf("boots = %s", got)
	}
	east := p.Boots[0]
	if !strings.Contains(east.Reason, "3 VMs for 3 idle a/default jobs") || !strings.Contains(east.Reason, "fallback: cloud west full: no servers left under its admin cap") {
		t.Errorf("east boot reason = %q", east.Reason)
	}
	if east.Jobs != 3 {
		t.Errorf("east jobs = %d", east.Jobs)
	}
	west := p.Clouds[1]
	if west.Site != "west" || west.Booted != 2 || west.Used.VMs != 1 || west.Room.VMs != 0 || west.InFlight != 2 || west.MaxInFlight != 20 {
		t.Errorf("west status = %+v", west)
	}
	if len(p.Groups) != 1 || p.Groups[0] != (GroupStatus{Name: "a", Idle: 5, Shortfall: 5, Booted: 5, BootedJobs: 5}) {
		t.Errorf("groups = %+v", p.Groups)
	}
	if len(p.Shapes) != 1 || p.Shapes[0].BootedVMs != 5 || p.Shapes[0].Waiting != 0 {
		t.Errorf("shapes = %+v", p.Shapes)
	}
}

func TestDecideDoesNotModifyInput(t *testing.T) {
	sh := testShape("a", 1, 5)
	sh.Clouds = []string{"west", "east"}
	s := snap([]Cloud{testCloud("west", 1), testCloud("east", 0)}, []Shape{sh}, []VM{testVM("1", "west", "a", VMIdle, 1)})
	Decide(s)
	if s.Clouds[0].Site != "west" || s.Shapes[0].Clouds[0] != "west" {
		t.Fatalf("input modified: %+v %+v", s.Clouds, s.Shapes)
	}
}
