package planner

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// genTree draws a quota tree over the snapshot's groups: a top group
// "exp" with a quota, the property groups placed under it or under each
// other (acyclic by construction: a group's parent comes before it in
// treeOrder), some of them not borrowing. Groups without settings get some
// so that they can be placed.
func genTree(t *rapid.T, s *Snapshot) {
	if !rapid.Bool().Draw(t, "tree") {
		return
	}
	top := Group{Name: "exp"}
	if rapid.Bool().Draw(t, "topCaps") {
		top.Caps = Caps{Cores: rapid.IntRange(0, 60).Draw(t, "topCores"), VMs: rapid.IntRange(0, 30).Draw(t, "topVMs")}
	}
	if rapid.Float64Range(0, 1).Draw(t, "topOQ") < 0.3 {
		top.OverQuotaSince = t0.Add(-genDur(t, "topOQAgo", 180))
	}
	s.Groups = append(s.Groups, top)
	placed := []string{"exp"}
	for _, name := range propGroups {
		i := slices.IndexFunc(s.Groups, func(g Group) bool { return g.Name == name })
		if i < 0 {
			s.Groups = append(s.Groups, Group{Name: name})
			i = len(s.Groups) - 1
		}
		g := &s.Groups[i]
		if rapid.Float64Range(0, 1).Draw(t, "inTree") < 0.85 {
			g.Parent = rapid.SampledFrom(placed).Draw(t, "parent")
			g.NoBorrow = rapid.Float64Range(0, 1).Draw(t, "noBorrow") < 0.3
			if rapid.Bool().Draw(t, "childCaps") {
				g.Caps = Caps{Cores: rapid.IntRange(0, 30).Draw(t, "cCores"), VMs: rapid.IntRange(0, 15).Draw(t, "cVMs")}
			}
		}
		placed = append(placed, name)
	}
}

// ancestry is the group and its ancestors, nearest first, as the snapshot's
// Parent fields give them (the generators make no cycles).
func ancestry(s Snapshot, group string) []string {
	out := []string{group}
	for range len(s.Groups) + 1 {
		i := slices.IndexFunc(s.Groups, func(g Group) bool { return g.Name == out[len(out)-1] })
		if i < 0 || s.Groups[i].Parent == "" || slices.Contains(out, s.Groups[i].Parent) {
			break
		}
		out = append(out, s.Groups[i].Parent)
	}
	return out
}

// inSubtree reports whether group lies in the subtree of root.
func inSubtree(s Snapshot, group, root string) bool {
	return slices.Contains(ancestry(s, group), root)
}

// checkTreeLimits verifies, independently of the planner, the group
// quotas of a tree (a flat list is a tree of top groups):
//   - a group that does not borrow (a top group, or one set NoBorrow): its
//     subtree's VMs and boots within its quota, unless it was already over
//     and gets no boots: children never exceed the parent;
//   - per parent and resource, the subtrees of its subgroups with a quota
//     within the sum of those quotas when any of them borrows: borrowing
//     never exceeds what the siblings leave unused.
func checkTreeLimits(t *rapid.T, s Snapshot, p Plan) {
	type use [3]int // cores, VMs, HS06
	flavorCores := map[[2]string]int{}
	for _, c := range s.Clouds {
		for _, f := range c.Flavors {
			flavorCores[[2]string{c.Site, f.Name}] = f.VCPUs
		}
	}
	usage := func(in func(group string) bool) (before, booted use) {
		for _, vm := range s.VMs {
			if in(vm.Group) {
				before[0] += vm.Cpus
				before[1]++
				before[2] += testHS06(s, vm.Site, vm.Flavor, vm.Cpus)
			}
		}
		for _, b := range p.Boots {
			if in(b.Group) {
				cores := flavorCores[[2]string{b.Site, b.Flavor}]
				booted[0] += b.Count * cores
				booted[1] += b.Count
				booted[2] += b.Count * testHS06(s, b.Site, b.Flavor, cores)
			}
		}
		return
	}
	within := func(what string, before, booted use, limit use) {
		for d, name := range []string{"cores", "vms", "HS06"} {
			if limit[d] > 0 && booted[d] > 0 && before[d]+booted[d] > limit[d] {
				t.Fatalf("%s %s: %d in use + %d booted > quota %d", what, name, before[d], booted[d], limit[d])
			}
		}
	}
	for _, g := range s.Groups {
		if g.Parent != "" && !g.NoBorrow {
			continue
		}
		before, booted := usage(func(group string) bool { return inSubtree(s, group, g.Name) })
		within("subtree of "+g.Name, before, booted, use{g.Caps.Cores, g.Caps.VMs, g.Caps.HS06})
	}
	for _, par := range s.Groups {
		for d := range 3 {
			q := func(g Group) int { return [3]int{g.Caps.Cores, g.Caps.VMs, g.Caps.HS06}[d] }
			var kids []string
			sum, borrowing := 0, false
			for _, c := range s.Groups {
				if c.Parent == par.Name && q(c) > 0 {
					kids = append(kids, c.Name)
					sum += q(c)
					borrowing = borrowing || !c.NoBorrow
				}
			}
			if !borrowing {
				continue
			}
			before, booted := usage(func(group string) bool {
				return slices.ContainsFunc(kids, func(k string) bool { return inSubtree(s, group, k) })
			})
			var limit use
			limit[d] = sum
			within(fmt.Sprintf("pool of %s's subgroups %v", par.Name, kids), before, booted, limit)
		}
	}
}

// TestPropertyQuotaTree: on snapshots built around a quota tree, every
// plan keeps the tree's bounds, retires no busy VM for quota before the
// deadline, and a group inside an exceeded bound gets no boot.
func TestPropertyQuotaTree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var s Snapshot
		if rapid.Bool().Draw(t, "focused") {
			s = genTreeSnapshot(t)
		} else {
			s = genSnapshot(t)
			if !slices.ContainsFunc(s.Groups, func(g Group) bool { return g.Parent != "" }) {
				genTreeAlways(t, &s)
			}
		}
		p := Decide(s)
		checkTreeLimits(t, s, p)

		// A non-borrowing group whose subtree already exceeds its quota
		// (counting every VM that stays on after the plan) gets no boot
		// anywhere below it.
		going := map[string]bool{}
		for _, r := range p.Retires {
			going[r.Site+"/"+r.VMID] = true
		}
		for _, d := range p.Deletes {
			going[d.Site+"/"+d.VMID] = true
		}
		for _, g := range s.Groups {
			if g.Parent != "" && !g.NoBorrow || g.Caps.VMs <= 0 {
				continue
			}
			n := 0
			for _, vm := range s.VMs {
				if inSubtree(s, vm.Group, g.Name) {
					n++
				}
			}
			if n < g.Caps.VMs {
				continue
			}
			for _, b := range p.Boots {
				if inSubtree(s, b.Group, g.Name) {
					t.Fatalf("group %s holds %d VMs, quota %d, yet %s below it boots %d", g.Name, n, g.Caps.VMs, b.Group, b.Count)
				}
			}
		}
	})
}

// genTreeSnapshot draws a snapshot where the tree is what binds: clouds
// without limits, no idle throttle, small quotas, plenty of demand, VMs
// (busy, idle, booting) spread over the groups.
func genTreeSnapshot(t *rapid.T) Snapshot {
	s := snap([]Cloud{testCloud("c0", 0), testCloud("c1", 1)}, nil, nil)
	genRatings(t, &s)
	s.Config.IdleThrottleMin = -1
	s.Config.MaxBootsPerCloud = 0
	s.Config.OverQuotaDeadline = rapid.SampledFrom([]time.Duration{0, time.Hour}).Draw(t, "oqDeadline")
	names := []string{"exp", "g0", "g1", "g2", "g3"}
	for i, name := range names {
		g := Group{Name: name}
		if i > 0 {
			g.Parent = rapid.SampledFrom(names[:i]).Draw(t, "parent")
			g.NoBorrow = rapid.Float64Range(0, 1).Draw(t, "noBorrow") < 0.25
		}
		if rapid.Float64Range(0, 1).Draw(t, "hasQuota") < 0.8 {
			g.Caps = Caps{Cores: rapid.SampledFrom([]int{0, 4, 8, 16}).Draw(t, "qCores"),
				VMs: rapid.IntRange(0, 8).Draw(t, "qVMs"), HS06: rapid.SampledFrom([]int{0, 0, 20, 60, 150}).Draw(t, "qHS06")}
		}
		if rapid.Float64Range(0, 1).Draw(t, "oq") < 0.3 {
			g.OverQuotaSince = t0.Add(-genDur(t, "oqAgo", 180))
		}
		s.Groups = append(s.Groups, g)
	}
	for range rapid.IntRange(1, 5).Draw(t, "nShapes") {
		s.Shapes = append(s.Shapes, testShape(rapid.SampledFrom(names).Draw(t, "sgroup"),
			rapid.SampledFrom([]int{1, 2, 4}).Draw(t, "scpus"), rapid.IntRange(1, 30).Draw(t, "sidle")))
	}
	for i := range rapid.IntRange(0, 20).Draw(t, "nVMs") {
		vm := testVM(fmt.Sprintf("v%d", i), rapid.SampledFrom([]string{"c0", "c1"}).Draw(t, "vsite"),
			rapid.SampledFrom(names).Draw(t, "vgroup"), rapid.SampledFrom([]VMState{VMBusy, VMIdle, VMBooting}).Draw(t, "vstate"),
			rapid.SampledFrom([]int{1, 2, 4}).Draw(t, "vcpus"))
		vm.CreatedAt = t0.Add(-genDur(t, "age", 300))
		s.VMs = append(s.VMs, vm)
	}
	return s
}

// genTreeAlways places the property groups in a tree under "exp".
func genTreeAlways(t *rapid.T, s *Snapshot) {
	s.Groups = slices.DeleteFunc(s.Groups, func(g Group) bool { return g.Name == "exp" })
	before := len(s.Groups)
	for range 3 {
		genTree(t, s)
		if len(s.Groups) > before || slices.ContainsFunc(s.Groups, func(g Group) bool { return g.Parent != "" }) {
			return
		}
	}
	s.Groups = append(s.Groups, Group{Name: "exp", Caps: Caps{VMs: 10}})
	for _, name := range propGroups {
		if i := slices.IndexFunc(s.Groups, func(g Group) bool { return g.Name == name }); i >= 0 {
			s.Groups[i].Parent = "exp"
		} else {
			s.Groups = append(s.Groups, Group{Name: name, Parent: "exp", Caps: Caps{VMs: 4}})
		}
	}
}

// TestQuotaTree covers the tree's rules one by one.
func TestQuotaTree(t *testing.T) {
	clouds := []Cloud{testCloud("west", 0)}
	// Two activities under one experiment; 1-core jobs on 1-core VMs.
	tree := func(exp Caps, prod, ana Group) []Group {
		prod.Name, prod.Parent = "prod", "atlas"
		ana.Name, ana.Parent = "ana", "atlas"
		return []Group{{Name: "atlas", Caps: exp}, prod, ana}
	}
	busy := func(id, group string) VM { return testVM(id, "west", group, VMBusy, 1) }
	idle := func(id, group string) VM { return testVM(id, "west", group, VMIdle, 1) }
	tests := []struct {
		name    string
		groups  []Group
		shapes  []Shape
		vms     []VM
		cfg     func(*Config)
		boots   string
		actions string
		notes   []string
	}{{
		name:   "parent bounds the sum of its children",
		groups: tree(Caps{VMs: 5}, Group{}, Group{}),
		shapes: []Shape{testShape("prod", 1, 10), testShape("ana", 1, 10)},
		// Turns by name: ana, prod, ana, prod, ana.
		boots: "west/ana/c1m2×3 west/prod/c1m2×2",
		notes: []string{"group atlas and its subgroups at its servers quota"},
	}, {
		name:   "a child borrows its sibling's unused quota",
		groups: tree(Caps{}, Group{Caps: Caps{VMs: 2}}, Group{Caps: Caps{VMs: 4}}),
		shapes: []Shape{testShape("prod", 1, 10)},
		vms:    []VM{busy("a1", "ana")},
		// prod 2 + ana's unused 3.
		boots: "west/prod/c1m2×5",
		notes: []string{"subgroups of atlas (pooled servers quota 6) at its servers quota"},
	}, {
		name:   "borrowing stops at the parent's limit",
		groups: tree(Caps{VMs: 4}, Group{Caps: Caps{VMs: 2}}, Group{Caps: Caps{VMs: 4}}),
		shapes: []Shape{testShape("prod", 1, 10)},
		vms:    []VM{busy("a1", "ana")},
		boots:  "west/prod/c1m2×3",
	}, {
		name:   "borrow: false keeps a child within its own quota",
		groups: tree(Caps{}, Group{Caps: Caps{VMs: 2}, NoBorrow: true}, Group{Caps: Caps{VMs: 4}}),
		shapes: []Shape{testShape("prod", 1, 10)},
		boots:  "west/prod/c1m2×2",
		notes:  []string{"group prod at its servers cap"},
	}, {
		name:   "a lender's own demand is met from what is left",
		groups: tree(Caps{}, Group{Caps: Caps{VMs: 2}}, Group{Caps: Caps{VMs: 2}}),
		shapes: []Shape{testShape("prod", 1, 10), testShape("ana", 1, 1)},
		vms:    []VM{busy("p1", "prod"), busy("p2", "prod"), busy("p3", "prod")},
		// Pool 4, 3 used: one boot, for whoever's turn comes first.
		boots: "west/ana/c1m2×1",
	}, {
		name:   "quota lowered below use: no boots, idle VMs go, busy ones stay",
		groups: tree(Caps{VMs: 2}, Group{}, Group{}),
		shapes: []Shape{testShape("prod", 1, 5)},
		vms:    []VM{busy("p1", "prod"), busy("p2", "prod"), idle("a1", "ana"), busy("a2", "ana")},
		// 4 VMs, quota 2: the idle one goes; the busy ones stay (no deadline).
		actions: "retire:over-quota:a1",
		notes: []string{"group atlas and its subgroups over quota (servers cap 2, uses 4): no new boots",
			"because group atlas and its subgroups at its servers quota"},
	}, {
		name: "quota lowered below use with a deadline passed: busy VMs drain",
		groups: func() []Group {
			g := tree(Caps{VMs: 2}, Group{}, Group{})
			g[0].OverQuotaSince = t0.Add(-2 * time.Hour)
			return g
		}(),
		vms: []VM{busy("p1", "prod"), busy("p2", "prod"), idle("a1", "ana"), busy("a2", "ana")},
		cfg: func(c *Config) { c.OverQuotaDeadline = time.Hour },
		// The idle VM and then the youngest busy one (same age: by ID).
		actions: "retire:over-quota:a1 retire:over-quota:a2",
	}, {
		name:   "a grandchild counts towards every ancestor",
		groups: append(tree(Caps{VMs: 3}, Group{}, Group{}), Group{Name: "prod-mc", Parent: "prod"}),
		shapes: []Shape{testShape("prod-mc", 1, 10)},
		vms:    []VM{busy("a1", "ana")},
		boots:  "west/prod-mc/c1m2×2",
	}, {
		name:   "a cycle is broken, not followed",
		groups: []Group{{Name: "a", Parent: "b", Caps: Caps{VMs: 1}}, {Name: "b", Parent: "a", Caps: Caps{VMs: 3}}},
		shapes: []Shape{testShape("a", 1, 10)},
		// Linked in name order: a under b; b's link would close a cycle,
		// so b is a top group (quota 3) and a, with no sibling to borrow
		// from, stays within its own quota.
		boots: "west/a/c1m2×1",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snap(clouds, tc.shapes, tc.vms)
			s.Groups = tc.groups
			s.Config.IdleThrottleMin = -1
			if tc.cfg != nil {
				tc.cfg(&s.Config)
			}
			checkPlan(t, Decide(s), tc.boots, tc.actions, tc.notes...)
		})
	}
}

// TestQuotaTreeStatus: the owner of an exceeded bound is reported over
// quota (History keeps since when), its subgroups are not.
func TestQuotaTreeStatus(t *testing.T) {
	s := snap([]Cloud{testCloud("west", 0)}, nil, []VM{
		testVM("p1", "west", "prod", VMBusy, 1), testVM("p2", "west", "prod", VMBusy, 1)})
	s.Groups = []Group{{Name: "atlas", Caps: Caps{VMs: 1}}, {Name: "prod", Parent: "atlas"}}
	p := Decide(s)
	var over []string
	for _, g := range p.Groups {
		if g.OverQuota {
			over = append(over, g.Name)
		}
	}
	if got := strings.Join(over, ","); got != "atlas" {
		t.Fatalf("groups over quota = %q, want atlas", got)
	}
	if len(p.Retires)+len(p.Deletes) != 0 {
		t.Fatalf("busy VMs shed without a deadline: %s", actionSummary(p))
	}
}
