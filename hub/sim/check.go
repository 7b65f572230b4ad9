package sim

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/canopy-grid/canopy/hub/planner"
)

// maxViolationNotes is how many violations the summary spells out.
const maxViolationNotes = 20

func (e *engine) violation(msg string) {
	e.sum.Violations++
	if len(e.sum.FirstViolations) < maxViolationNotes {
		e.sum.FirstViolations = append(e.sum.FirstViolations, e.now.Format(time.DateTime)+" "+msg)
	}
}

// use is an amount of cores, memory and servers.
type use struct{ cores, ram, vms, hs06 int }

// check verifies a plan against the simulated world, independently of the
// planner's own bookkeeping: no boot on a cloud that may not take one or
// for a group or shape that may not use it, and no boot past any limit
// (cloud caps, soft quota less foreign usage, project limits, group caps,
// in-flight caps).
func (e *engine) check(s planner.Snapshot, p planner.Plan) {
	if len(p.Boots) == 0 {
		return
	}
	cfg := e.tr.Config
	booted := make([]use, len(e.clouds))
	bootedGroup := map[string]use{}
	for _, b := range p.Boots {
		ci, ok := e.cloudOf[b.Site]
		if !ok {
			e.violation(fmt.Sprintf("boot on unknown cloud %s", b.Site))
			continue
		}
		c := &e.clouds[ci]
		sp := &c.spec
		switch {
		case sp.Disconnected:
			e.violation(fmt.Sprintf("boot on disconnected cloud %s", b.Site))
		case sp.Paused:
			e.violation(fmt.Sprintf("boot on paused cloud %s", b.Site))
		case sp.Disabled:
			e.violation(fmt.Sprintf("boot on disabled cloud %s", b.Site))
		}
		sc := &s.Clouds[ci]
		if sc.Unlisted >= max(1, cfg.FreezeMinUnlisted) && !sc.UnlistedSince.IsZero() && e.now.Sub(sc.UnlistedSince) >= cfgOr(cfg.FreezeAfter, planner.DefaultFreezeAfter) {
			e.violation(fmt.Sprintf("boot on frozen cloud %s", b.Site))
		}
		if e.backingOff(s, b.Site, "") || (b.Image != "" && e.backingOff(s, b.Site, b.Image)) {
			e.violation(fmt.Sprintf("boot on %s while backing off", b.Site))
		}
		for _, g := range e.groups {
			if g.Name == b.Group && len(g.Clouds) > 0 && !allowed(expand(e.tr.Aliases, g.Clouds), b.Site) {
				e.violation(fmt.Sprintf("boot for group %s on %s, outside its clouds", b.Group, b.Site))
			}
			if g.Name == b.Group && g.Paused {
				e.violation(fmt.Sprintf("boot for paused group %s", b.Group))
			}
		}
		onPre := sp.Preemptible || slices.Contains(sp.PreemptibleFlavors, b.Flavor)
		groupPre := slices.ContainsFunc(e.groups, func(g planner.Group) bool { return g.Name == b.Group && g.Preemptible })
		wanted := false
		for _, si := range e.buckets[[2]string{b.Group, b.VMType}] {
			sh := &e.shapes[si]
			if sh.idle > 0 && sh.sh.Image == b.Image && allowed(sh.sites, b.Site) && (!onPre || groupPre || sh.sh.Preemptible) {
				wanted = true
			}
		}
		if !wanted {
			e.violation(fmt.Sprintf("boot for %s/%s on %s (flavor %s): no idle job may use it", b.Group, b.VMType, b.Site, b.Flavor))
		}
		var f = c.flavors
		var cores, ram int
		for _, fl := range f {
			if fl.Name == b.Flavor {
				cores, ram = fl.VCPUs, fl.RAMMiB
			}
		}
		booted[ci].cores += b.Count * cores
		booted[ci].ram += b.Count * ram
		booted[ci].vms += b.Count
		g := bootedGroup[b.Group]
		bootedGroup[b.Group] = use{g.cores + b.Count*cores, g.ram + b.Count*ram, g.vms + b.Count, g.hs06 + b.Count*e.hs06(b.Flavor, cores)}
	}

	over := func(what string, before, add, limit int) {
		if add > 0 && limit >= 0 && before+add > limit {
			e.violation(fmt.Sprintf("%s: %d used + %d booted > %d", what, before, add, limit))
		}
	}
	inFlight := map[string]int{}
	groupUse := map[string]use{}
	for _, vm := range e.vms {
		if vm.phase == phaseBooting || vm.phase == phaseStarting {
			inFlight[e.endpoint(vm.cloud)]++
		}
		g := groupUse[vm.group]
		groupUse[vm.group] = use{g.cores + vm.flavor.VCPUs, g.ram + vm.flavor.RAMMiB, g.vms + 1, g.hs06 + e.hs06(vm.flavor.Name, vm.flavor.VCPUs)}
	}
	epBoots := map[string]int{}
	epMax := map[string]int{}
	for ci := range e.clouds {
		c := &e.clouds[ci]
		sp := &c.spec
		b := booted[ci]
		u := c.used
		if sp.Caps.Cores > 0 {
			over(sp.Site+" cores cap", u.Cores, b.cores, sp.Caps.Cores)
		}
		if sp.Caps.RAMMiB > 0 {
			over(sp.Site+" memory cap", u.RAMMiB, b.ram, sp.Caps.RAMMiB)
		}
		if sp.Caps.VMs > 0 {
			over(sp.Site+" servers cap", u.VMs, b.vms, sp.Caps.VMs)
		}
		if sp.SoftQuota.Cores > 0 {
			over(sp.Site+" soft cores", u.Cores+sp.Foreign.Cores, b.cores, sp.SoftQuota.Cores)
		}
		if sp.SoftQuota.RAMMiB > 0 {
			over(sp.Site+" soft memory", u.RAMMiB+sp.Foreign.RAMMiB, b.ram, sp.SoftQuota.RAMMiB)
		}
		if sp.SoftQuota.VMs > 0 {
			over(sp.Site+" soft servers", u.VMs+sp.Foreign.VMs, b.vms, sp.SoftQuota.VMs)
		}
		over(sp.Site+" project cores", u.Cores+sp.Foreign.Cores, b.cores, sp.Limits.MaxCores)
		over(sp.Site+" project memory", u.RAMMiB+sp.Foreign.RAMMiB, b.ram, sp.Limits.MaxRAMMiB)
		over(sp.Site+" project servers", u.VMs+sp.Foreign.VMs, b.vms, sp.Limits.MaxInstances)
		ep := e.endpoint(ci)
		epBoots[ep] += b.vms
		if sp.MaxInFlight > 0 && (epMax[ep] == 0 || sp.MaxInFlight < epMax[ep]) {
			epMax[ep] = sp.MaxInFlight
		}
	}
	for ep, n := range epBoots {
		m := epMax[ep]
		if m == 0 {
			m = cfg.MaxBootsPerCloud
		}
		if m > 0 {
			over("in flight at "+ep, inFlight[ep], n, m)
		}
	}
	e.checkGroupTree(groupUse, bootedGroup, over)
}

// checkGroupTree checks the group quotas as a tree (a flat list is a tree
// of top groups): a group that does not borrow keeps its subtree within
// its caps; the subgroups of a parent with a quota on a resource, when one
// of them borrows, keep their subtrees within the sum of those quotas.
func (e *engine) checkGroupTree(groupUse, booted map[string]use, over func(what string, before, add, limit int)) {
	parent := make(map[string]string, len(e.groups))
	for _, g := range e.groups {
		parent[g.Name] = g.Parent
	}
	// under reports whether group lies in root's subtree; the walk is
	// bounded by the number of groups (the planner ignores cycles, the
	// trace parser checks parents exist).
	under := func(group, root string) bool {
		for range len(e.groups) + 1 {
			if group == root {
				return true
			}
			if group = parent[group]; group == "" {
				return false
			}
		}
		return false
	}
	sum := func(in func(string) bool) (u, b use) {
		for name, x := range groupUse {
			if in(name) {
				u = use{u.cores + x.cores, u.ram + x.ram, u.vms + x.vms, u.hs06 + x.hs06}
			}
		}
		for name, x := range booted {
			if in(name) {
				b = use{b.cores + x.cores, b.ram + x.ram, b.vms + x.vms, b.hs06 + x.hs06}
			}
		}
		return u, b
	}
	get := func(x use, d int) int { return [4]int{x.cores, x.ram, x.vms, x.hs06}[d] }
	names := [4]string{"cores", "memory", "servers", "HS06"}
	for _, g := range e.groups {
		caps := [4]int{g.Caps.Cores, g.Caps.RAMMiB, g.Caps.VMs, g.Caps.HS06}
		if g.Parent == "" || g.NoBorrow {
			u, b := sum(func(name string) bool { return under(name, g.Name) })
			for d := range 4 {
				if caps[d] > 0 {
					over("group "+g.Name+" "+names[d], get(u, d), get(b, d), caps[d])
				}
			}
		}
		for d := range 4 {
			var kids []string
			limit, borrowing := 0, false
			for _, c := range e.groups {
				if q := [4]int{c.Caps.Cores, c.Caps.RAMMiB, c.Caps.VMs, c.Caps.HS06}[d]; c.Parent == g.Name && q > 0 {
					kids = append(kids, c.Name)
					limit += q
					borrowing = borrowing || !c.NoBorrow
				}
			}
			if !borrowing {
				continue
			}
			u, b := sum(func(name string) bool {
				return slices.ContainsFunc(kids, func(k string) bool { return under(name, k) })
			})
			over("subgroups of "+g.Name+" pooled "+names[d], get(u, d), get(b, d), limit)
		}
	}
}

// hs06 is the HS06 of cpus cores of a flavor, by the trace's rating (1
// per core when unrated), rounded as the planner rounds it.
func (e *engine) hs06(flavor string, cpus int) int {
	r := e.tr.HS06PerCore[flavor]
	if r <= 0 {
		r = 1
	}
	milli := int64(math.Round(r * 1000))
	return int((int64(cpus)*milli + 500) / 1000)
}

func (e *engine) endpoint(ci int) string {
	if ep := e.clouds[ci].spec.Endpoint; ep != "" {
		return ep
	}
	return "site " + e.clouds[ci].spec.Site
}

// backingOff recomputes, from the snapshot's failures, whether a cloud (or
// an image on it) is in its backoff period.
func (e *engine) backingOff(s planner.Snapshot, site, image string) bool {
	cfg := s.Config
	window := cfgOr(cfg.FailureWindow, planner.DefaultFailureWindow)
	n := 0
	var last time.Time
	for _, f := range s.Failures {
		if f.Site != site || f.Image != image || f.At.Before(s.Now.Add(-window)) {
			continue
		}
		n++
		if f.At.After(last) {
			last = f.At
		}
	}
	return n > 0 && last.Add(cfg.Backoff(n)).After(s.Now)
}

func cfgOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
