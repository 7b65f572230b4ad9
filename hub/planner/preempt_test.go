package planner

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestPreemptible covers preemptible placement and coverage.
func TestPreemptible(t *testing.T) {
	pre := func(c Cloud) Cloud { c.Preemptible = true; return c }
	optIn := func(sh Shape) Shape { sh.Preemptible = true; return sh }
	mixed := func(c Cloud) Cloud { c.PreemptibleFlavors = []string{"c2m4"}; return c }
	tests := []struct {
		name   string
		clouds []Cloud
		groups []Group
		shapes []Shape
		vms    []VM
		boots  string
		notes  []string
	}{{
		name:   "opted-in jobs go to preemptible capacity first",
		clouds: []Cloud{testCloud("west", 0), pre(testCloud("spot", 5))},
		shapes: []Shape{optIn(testShape("atlas", 1, 3))},
		boots:  "spot/atlas/c1m2×3",
	}, {
		name:   "opted-out jobs never go there",
		clouds: []Cloud{pre(testCloud("spot", 0)), testCloud("west", 5)},
		shapes: []Shape{testShape("atlas", 1, 3)},
		boots:  "west/atlas/c1m2×3",
	}, {
		name:   "only preemptible capacity: opted-out jobs wait, saying why",
		clouds: []Cloud{pre(testCloud("spot", 0))},
		shapes: []Shape{testShape("atlas", 1, 3)},
		notes:  []string{"cloud spot is preemptible and the jobs do not accept it"},
	}, {
		name:   "a group default opts its jobs in",
		clouds: []Cloud{testCloud("west", 0), pre(testCloud("spot", 5))},
		groups: []Group{{Name: "atlas", Preemptible: true}},
		shapes: []Shape{testShape("atlas", 1, 3)},
		boots:  "spot/atlas/c1m2×3",
	}, {
		name:   "a preemptible flavor: taken by opted-in jobs, avoided by the others",
		clouds: []Cloud{mixed(testCloud("west", 0))},
		shapes: []Shape{optIn(testShape("atlas", 1, 2)), testShape("belle", 1, 2)},
		boots:  "west/atlas/c2m4×1 west/belle/c1m2×2",
	}, {
		name:   "preemptible idle VMs do not cover opted-out jobs",
		clouds: []Cloud{pre(testCloud("spot", 0)), testCloud("west", 1)},
		shapes: []Shape{testShape("atlas", 1, 2)},
		vms:    []VM{testVM("s1", "spot", "atlas", VMIdle, 1), testVM("s2", "spot", "atlas", VMIdle, 1)},
		boots:  "west/atlas/c1m2×2",
	}, {
		name:   "and do cover opted-in ones",
		clouds: []Cloud{pre(testCloud("spot", 0)), testCloud("west", 1)},
		shapes: []Shape{optIn(testShape("atlas", 1, 2))},
		vms:    []VM{testVM("s1", "spot", "atlas", VMIdle, 1), testVM("s2", "spot", "atlas", VMIdle, 1)},
		boots:  "",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snap(tc.clouds, tc.shapes, tc.vms)
			s.Groups = tc.groups
			s.Config.IdleThrottleMin = -1
			checkPlan(t, Decide(s), tc.boots, "", tc.notes...)
		})
	}
}

// TestReclaim covers idle capacity yielding to waiting demand.
func TestReclaim(t *testing.T) {
	full := func(vms int) Cloud {
		c := testCloud("west", 0)
		c.Caps = Caps{VMs: vms}
		return c
	}
	idle := func(id, group string) VM { return testVM(id, "west", group, VMIdle, 1) }
	busy := func(id, group string) VM { return testVM(id, "west", group, VMBusy, 1) }
	preIdle := func(id, group string) VM { vm := idle(id, group); vm.Flavor = "c1m2"; return vm }
	many := func(n int, f func(string, string) VM, prefix, group string) []VM {
		var out []VM
		for i := range n {
			out = append(out, f(fmt.Sprintf("%s%02d", prefix, i), group))
		}
		return out
	}
	tests := []struct {
		name    string
		cloud   Cloud
		shapes  []Shape
		vms     []VM
		cfg     func(*Config)
		actions string
		notes   []string
	}{{
		name:    "another group's idle VMs yield to waiting jobs",
		cloud:   full(3),
		shapes:  []Shape{testShape("belle", 1, 1)},
		vms:     []VM{idle("a1", "atlas"), idle("a2", "atlas"), busy("a3", "atlas")},
		actions: "retire:reclaim:a1",
	}, {
		name:   "never a busy VM",
		cloud:  full(2),
		shapes: []Shape{testShape("belle", 1, 1)},
		vms:    []VM{busy("a1", "atlas"), busy("a2", "atlas")},
	}, {
		name:   "not from a group with idle jobs of its own",
		cloud:  full(2),
		shapes: []Shape{testShape("belle", 1, 1), testShape("atlas", 8, 1)},
		vms:    []VM{idle("a1", "atlas"), idle("a2", "atlas")},
	}, {
		name:   "not below the waiting group's share",
		cloud:  full(2),
		shapes: []Shape{testShape("belle", 1, 1)},
		vms:    []VM{idle("a1", "atlas"), busy("b1", "belle")},
	}, {
		name:   "not a VM whose state is unknown",
		cloud:  full(1),
		shapes: []Shape{testShape("belle", 1, 1)},
		vms: func() []VM {
			vm := idle("a1", "atlas")
			vm.Evidence, vm.Why = EvidenceUnknown, "pool view failed"
			return []VM{vm}
		}(),
	}, {
		name:    "within the disruption budget, saying what waits",
		cloud:   full(20),
		shapes:  []Shape{testShape("belle", 1, 5)},
		vms:     append(many(10, idle, "a", "atlas"), many(10, busy, "c", "cms")...),
		actions: "retire:reclaim:a00 retire:reclaim:a01",
		notes:   []string{"idle VMs could yield to waiting jobs; they wait on the disruption budget (2 VMs retiring, budget 2)"},
	}, {
		name:    "a budget in VMs",
		cloud:   full(20),
		shapes:  []Shape{testShape("belle", 1, 5)},
		vms:     append(many(10, idle, "a", "atlas"), many(10, busy, "c", "cms")...),
		cfg:     func(c *Config) { c.DisruptionBudgetVMs = 4 },
		actions: "retire:reclaim:a00 retire:reclaim:a01 retire:reclaim:a02 retire:reclaim:a03",
	}, {
		name:   "reclaiming off",
		cloud:  full(3),
		shapes: []Shape{testShape("belle", 1, 1)},
		vms:    []VM{idle("a1", "atlas"), idle("a2", "atlas"), busy("a3", "atlas")},
		cfg:    func(c *Config) { c.DisruptionBudget = -1 },
	}, {
		name: "preemptible VMs yield to jobs that do not accept them, first",
		cloud: func() Cloud {
			c := full(3)
			c.PreemptibleFlavors = []string{"c1m2"}
			return c
		}(),
		shapes:  []Shape{testShape("belle", 1, 1)},
		vms:     []VM{idle("a1", "atlas"), preIdle("p1", "atlas"), busy("a3", "atlas")},
		actions: "retire:reclaim:p1",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snap([]Cloud{tc.cloud}, tc.shapes, tc.vms)
			s.Config.IdleThrottleMin = -1
			if tc.cfg != nil {
				tc.cfg(&s.Config)
			}
			checkPlan(t, Decide(s), "", tc.actions, tc.notes...)
		})
	}
}

// genPreemptible marks some clouds and flavors preemptible and opts some
// groups' jobs in (all of a group's shapes alike), returning which groups
// accept preemptible capacity.
func genPreemptible(t *rapid.T, s *Snapshot) map[string]bool {
	for i := range s.Clouds {
		c := &s.Clouds[i]
		c.Preemptible = rapid.Float64Range(0, 1).Draw(t, "preCloud") < 0.3
		if rapid.Bool().Draw(t, "preFlavors") && len(c.Flavors) > 0 {
			c.PreemptibleFlavors = []string{rapid.SampledFrom(c.Flavors).Draw(t, "preFlavor").Name}
		}
	}
	in := map[string]bool{}
	for _, g := range propGroups {
		in[g] = rapid.Bool().Draw(t, "optIn")
	}
	for i := range s.Shapes {
		s.Shapes[i].Preemptible = in[s.Shapes[i].Group]
	}
	for i := range s.Groups {
		s.Groups[i].Preemptible = false
	}
	return in
}

// TestPropertyPreemptible: jobs that do not accept preemptible capacity
// are never placed on it, nor counted as covered by VMs on it.
func TestPropertyPreemptible(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		in := genPreemptible(t, &s)
		p := Decide(s)
		onPre := func(site, flavor string) bool {
			for _, c := range s.Clouds {
				if c.Site == site {
					return c.Preemptible || slices.Contains(c.PreemptibleFlavors, flavor)
				}
			}
			return false
		}
		for _, b := range p.Boots {
			if onPre(b.Site, b.Flavor) && !in[b.Group] {
				t.Fatalf("boot %s/%s on preemptible capacity for group %s, whose jobs do not accept it", b.Site, b.Flavor, b.Group)
			}
		}
		// Covered jobs of groups that do not accept preemptible capacity
		// fit in the free cores of their VMs that are not on it.
		going := map[string]bool{}
		for _, r := range p.Retires {
			going[r.Site+"/"+r.VMID] = true
		}
		for _, d := range p.Deletes {
			going[d.Site+"/"+d.VMID] = true
		}
		capacity := map[[2]string]int{}
		for _, vm := range s.VMs {
			if vm.ID != "" && going[vm.Site+"/"+vm.ID] || onPre(vm.Site, vm.Flavor) {
				continue
			}
			if c, _, _, ok := freeOf(&vm); ok {
				capacity[[2]string{vm.Group, vm.VMType}] += c
			}
		}
		covered := map[[2]string]int{}
		for _, st := range p.Shapes {
			if !in[st.Shape.Group] {
				covered[[2]string{st.Shape.Group, st.Shape.VMType}] += st.Covered * st.Shape.Cpus
			}
		}
		for k, c := range covered {
			if c > capacity[k] {
				t.Fatalf("bucket %v: %d cores of jobs covered, %d free off preemptible capacity", k, c, capacity[k])
			}
		}
	})
}

// TestPropertyReclaim: reclaiming retires only idle VMs with fresh
// evidence, running nothing, of a group without idle jobs, never held; and
// only while the cloud's VMs retiring (before the plan and by it) stay
// within the disruption budget.
func TestPropertyReclaim(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		if rapid.Bool().Draw(t, "focused") {
			s = genReclaimSnapshot(t)
		}
		genPreemptible(t, &s)
		s.Config.DisruptionBudget = rapid.SampledFrom([]int{0, 10, 50}).Draw(t, "budget")
		s.Config.DisruptionBudgetVMs = rapid.SampledFrom([]int{0, 0, 2}).Draw(t, "budgetVMs")
		p := Decide(s)
		idleJobs := map[string]int{}
		for _, sh := range s.Shapes {
			idleJobs[sh.Group] += sh.Idle
		}
		byID := map[string]VM{}
		perSite := map[string]int{}
		retiringBefore := map[string]int{}
		for _, vm := range s.VMs {
			perSite[vm.Site]++
			if vm.State == VMRetiring {
				retiringBefore[vm.Site]++
			}
			if vm.ID != "" {
				byID[vm.Site+"/"+vm.ID] = vm
			}
		}
		actions := map[string]int{}
		reclaims := map[string]int{}
		for _, r := range p.Retires {
			actions[r.Site]++
			if r.Rule != RuleReclaim {
				continue
			}
			reclaims[r.Site]++
			vm := byID[r.Site+"/"+r.VMID]
			if vm.State != VMIdle || vm.RunningJobs > 0 || vm.Held || vm.Evidence == EvidenceUnknown || vm.Evidence == EvidenceUnregistered {
				t.Fatalf("reclaim retired VM %s in state %s, %d jobs, held %v, evidence %q", vm.ID, vm.State, vm.RunningJobs, vm.Held, vm.Evidence)
			}
			if idleJobs[vm.Group] > 0 {
				t.Fatalf("reclaim retired VM %s of group %s, which has %d idle jobs", vm.ID, vm.Group, idleJobs[vm.Group])
			}
		}
		for _, d := range p.Deletes {
			actions[d.Site]++
		}
		for site, n := range reclaims {
			budget := max(1, perSite[site]*max(s.Config.DisruptionBudget, 0)/100)
			if s.Config.DisruptionBudget == 0 {
				budget = max(1, perSite[site]*DefaultDisruptionBudget/100)
			}
			if s.Config.DisruptionBudgetVMs > 0 {
				budget = s.Config.DisruptionBudgetVMs
			}
			if retiringBefore[site]+actions[site] > budget {
				t.Fatalf("site %s: %d reclaims with %d VMs retiring before and %d retired or deleted by the plan, budget %d",
					site, n, retiringBefore[site], actions[site], budget)
			}
		}
	})
}

// genReclaimSnapshot draws clouds kept full (their VM caps at what they
// hold) by VMs of all kinds, with one group holding idle VMs and no jobs
// and others waiting.
func genReclaimSnapshot(t *rapid.T) Snapshot {
	s := snap([]Cloud{testCloud("c0", 0), testCloud("c1", 1)}, nil, nil)
	s.Config.IdleThrottleMin = -1
	n := map[string]int{}
	for i := range rapid.IntRange(1, 40).Draw(t, "nVMs") {
		site := rapid.SampledFrom([]string{"c0", "c1"}).Draw(t, "site")
		vm := testVM(fmt.Sprintf("v%02d", i), site, rapid.SampledFrom([]string{"g0", "g0", "g1", "g2"}).Draw(t, "group"),
			rapid.SampledFrom([]VMState{VMIdle, VMIdle, VMBusy, VMRetiring, VMBooting}).Draw(t, "state"), 1)
		vm.Held = rapid.Float64Range(0, 1).Draw(t, "held") < 0.1
		vm.Evidence = rapid.SampledFrom([]Evidence{"", "", EvidenceUnknown}).Draw(t, "evidence")
		vm.Flavor = rapid.SampledFrom([]string{"c1m2", "c2m4"}).Draw(t, "flavor")
		s.VMs = append(s.VMs, vm)
		n[site]++
	}
	for i := range s.Clouds {
		s.Clouds[i].Caps = Caps{VMs: max(1, n[s.Clouds[i].Site])}
	}
	for _, g := range []string{"g1", "g2"} {
		if rapid.Bool().Draw(t, "waits") {
			s.Shapes = append(s.Shapes, testShape(g, 1, rapid.IntRange(1, 20).Draw(t, "idle")))
		}
	}
	return s
}

// TestPreemptionBackoff: a cloud that takes back too many VMs too fast is
// backed off; preemptions are counted, not failures.
func TestPreemptionBackoff(t *testing.T) {
	at := func(n int, ago time.Duration) []Preemption {
		var out []Preemption
		for i := range n {
			out = append(out, Preemption{Site: "spot", VMID: fmt.Sprint(i), At: t0.Add(-ago)})
		}
		return out
	}
	tests := []struct {
		name      string
		pre       []Preemption
		max       int
		wantState CloudState
		wantCount int
		boots     string
	}{
		{"a few preemptions: boots go on", at(3, time.Minute), 5, CloudOK, 3, "spot/atlas/c1m2×1"},
		{"too many within the window: backed off", at(5, time.Minute), 5, CloudBackoff, 5, "west/atlas/c1m2×1"},
		{"backoff over", at(5, 40*time.Minute), 5, CloudOK, 5, "spot/atlas/c1m2×1"},
		{"out of the window: not counted", at(9, 2*time.Hour), 5, CloudOK, 0, "spot/atlas/c1m2×1"},
		{"turned off", at(9, time.Minute), -1, CloudOK, 9, "spot/atlas/c1m2×1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spot := testCloud("spot", 0)
			spot.Preemptible = true
			sh := testShape("atlas", 1, 1)
			sh.Preemptible = true
			s := snap([]Cloud{spot, testCloud("west", 1)}, []Shape{sh}, nil)
			s.Preemptions = tc.pre
			s.Config.PreemptMax = tc.max
			p := Decide(s)
			checkPlan(t, p, tc.boots, "")
			for _, c := range p.Clouds {
				if c.Site == "spot" && (c.State != tc.wantState || c.Preempted != tc.wantCount) {
					t.Errorf("spot: state %s, %d preempted; want %s, %d (%s)", c.State, c.Preempted, tc.wantState, tc.wantCount, c.Reason)
				}
			}
		})
	}
}
