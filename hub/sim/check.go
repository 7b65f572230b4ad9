package sim

import (
	"fmt"
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
	type use struct{ cores, ram, vms int }
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
		wanted := false
		for _, si := range e.buckets[[2]string{b.Group, b.VMType}] {
			sh := &e.shapes[si]
			if sh.idle > 0 && sh.sh.Image == b.Image && allowed(sh.sites, b.Site) {
				wanted = true
			}
		}
		if !wanted {
			e.violation(fmt.Sprintf("boot for %s/%s on %s: no idle job may use it", b.Group, b.VMType, b.Site))
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
		bootedGroup[b.Group] = use{g.cores + b.Count*cores, g.ram + b.Count*ram, g.vms + b.Count}
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
		groupUse[vm.group] = use{g.cores + vm.flavor.VCPUs, g.ram + vm.flavor.RAMMiB, g.vms + 1}
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
	for _, g := range e.groups {
		u, b := groupUse[g.Name], bootedGroup[g.Name]
		if g.Caps.Cores > 0 {
			over("group "+g.Name+" cores", u.cores, b.cores, g.Caps.Cores)
		}
		if g.Caps.RAMMiB > 0 {
			over("group "+g.Name+" memory", u.ram, b.ram, g.Caps.RAMMiB)
		}
		if g.Caps.VMs > 0 {
			over("group "+g.Name+" servers", u.vms, b.vms, g.Caps.VMs)
		}
	}
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
