package planner

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// whyCode says why a shape could not boot somewhere; higher codes say more.
type whyCode uint8

const (
	whyNone whyCode = iota
	whyNotAllowed
	whyPreemptible
	whyNoFlavor
	whyImageBackoff
	whyCloudState
	whyCloudRoom
	whyInFlight
	whyGroupCloudCap
	whyGroupCap
	whyThrottle
	whyGroupPaused
)

// reason is a why code with what it is about; it is formatted only when
// shown.
type reason struct {
	code  whyCode
	cloud int32
	dim   uint8
	src   limitSource
	image string
	// flavor is the flavor a shape asks for by name (whyNoFlavor).
	flavor string
	// bound is 1 + the index of the group quota bound met; 0: none.
	bound int32
}

// note keeps the most telling reason a shape met, and the last cloud it
// fell back from.
func (st *shapeState) note(r reason) {
	if r.code > st.why.code {
		st.why = r
	}
	switch r.code {
	case whyImageBackoff, whyCloudState, whyCloudRoom, whyInFlight, whyGroupCloudCap:
		st.skipped = r
	}
}

func (p *planner) describe(r reason, g *groupState) string {
	var site, group string
	if g != nil {
		group = g.name
	}
	if r.cloud >= 0 && int(r.cloud) < len(p.clouds) {
		site = p.clouds[r.cloud].Site
	}
	switch r.code {
	case whyNotAllowed:
		return "no cloud the jobs may use"
	case whyPreemptible:
		return fmt.Sprintf("cloud %s is preemptible and the jobs do not accept it (+Preemptible)", site)
	case whyNoFlavor:
		if r.flavor != "" {
			return fmt.Sprintf("flavor %s the jobs ask for is not offered on %s or does not fit them", r.flavor, site)
		}
		return fmt.Sprintf("no flavor on %s fits the jobs", site)
	case whyImageBackoff:
		if b, ok := p.imageOff[[2]string{site, r.image}]; ok {
			return b.reason
		}
		return fmt.Sprintf("image %s backing off on %s", r.image, site)
	case whyCloudState:
		return p.cs[r.cloud].reason
	case whyCloudRoom:
		return fmt.Sprintf("cloud %s full: no %s left under its %s", site, dimNames[r.dim], r.src)
	case whyInFlight:
		ep := &p.eps[p.cs[r.cloud].endpoint]
		return fmt.Sprintf("cloud %s: %d boots in flight, cap %d", site, ep.inFlight, ep.max)
	case whyGroupCloudCap:
		return fmt.Sprintf("group %s at its %s cap on %s", group, dimNames[r.dim], site)
	case whyGroupCap:
		if r.bound > 0 && int(r.bound) <= len(p.bounds) {
			if b := &p.bounds[r.bound-1]; b.pool || b.owner != g {
				return fmt.Sprintf("%s at its %s quota", b.name(), dimNames[r.dim])
			}
		}
		return fmt.Sprintf("group %s at its %s cap", group, dimNames[r.dim])
	case whyThrottle:
		if g == nil {
			return "group throttled"
		}
		return fmt.Sprintf("group %s throttled: %d idle VMs, limit max(%d, %d busy × %d%%)",
			group, g.idleVMs, p.cfg.IdleThrottleMin, g.busyVMs, p.cfg.IdleThrottlePercent)
	case whyGroupPaused:
		return fmt.Sprintf("group %s paused: no new boots", group)
	}
	return "no cloud can take the jobs"
}

// finish turns the working state into the plan: boots with their reasons,
// statuses, notes, everything in a stable order.
func (p *planner) finish() Plan {
	plan := p.plan

	// Boots.
	plan.Boots = make([]Boot, 0, len(p.boots))
	for i := range p.boots {
		b := &p.boots[i]
		g := p.groups[b.key.group]
		why := fmt.Sprintf("%d VMs for %d idle %s/%s jobs that no starting or idle VM will take", b.vms, b.jobs, b.key.group, b.key.vmType)
		if b.fallback.code != whyNone {
			why += "; fallback: " + p.describe(b.fallback, g)
		}
		plan.Boots = append(plan.Boots, Boot{
			Site: p.clouds[b.key.cloud].Site, Group: b.key.group, VMType: b.key.vmType,
			Flavor: b.key.flavor, Image: b.key.image, Count: b.vms, Jobs: b.jobs,
			KeepAlive: time.Duration(b.key.keepAlive), MaxLifetime: time.Duration(b.key.maxLifetime), Reason: why,
			HS06PerCore: p.advertisedRate(b.key.cloud, b.key.flavor),
		})
	}
	slices.SortFunc(plan.Boots, func(a, b Boot) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Group, b.Group), cmp.Compare(a.VMType, b.VMType),
			cmp.Compare(a.Flavor, b.Flavor), cmp.Compare(a.Image, b.Image), cmp.Compare(a.KeepAlive, b.KeepAlive))
	})

	// Retirements and deletions, one per VM.
	slices.SortFunc(plan.Retires, func(a, b Retire) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.VMID, b.VMID), cmp.Compare(a.Reason, b.Reason))
	})
	plan.Retires = slices.CompactFunc(plan.Retires, func(a, b Retire) bool { return a.Site == b.Site && a.VMID == b.VMID })
	slices.SortFunc(plan.Deletes, func(a, b Delete) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.VMID, b.VMID), cmp.Compare(a.Reason, b.Reason))
	})
	plan.Deletes = slices.CompactFunc(plan.Deletes, func(a, b Delete) bool { return a.Site == b.Site && a.VMID == b.VMID })

	// Clouds, by site.
	plan.Clouds = make([]CloudStatus, len(p.clouds))
	for ci := range p.clouds {
		c := &p.clouds[ci]
		cs := &p.cs[ci]
		ep := &p.eps[cs.endpoint]
		st := CloudStatus{
			Site: c.Site, State: cs.status, Until: cs.until, Reason: cs.reason,
			OverQuota: cs.overQuota, Used: cs.all, InFlight: ep.inFlight, Booted: cs.booted, Preempted: cs.preempted,
		}
		for dim := range numDims {
			v := cs.room.get(dim)
			if v >= unlimited/2 {
				v = math.MaxInt
			}
			st.Room.set(dim, v)
		}
		// Used is what existed before the plan's boots.
		st.Used.sub(cs.bootedUse)
		if ep.max > 0 {
			st.MaxInFlight = ep.max
		}
		plan.Clouds[ci] = st
		switch {
		case cs.status != CloudOK:
			plan.Notes = append(plan.Notes, Note{Site: c.Site, Reason: cs.reason})
		case cs.overQuota:
			plan.Notes = append(plan.Notes, Note{Site: c.Site, Reason: fmt.Sprintf("cloud %s over quota (%s): no new boots", c.Site, cs.overWhy)})
		case cs.full.code != whyNone:
			plan.Notes = append(plan.Notes, Note{Site: c.Site, Reason: p.describe(cs.full, nil)})
		}
	}
	slices.SortFunc(plan.Clouds, func(a, b CloudStatus) int { return cmp.Compare(a.Site, b.Site) })
	for bi := range p.bounds {
		if b := &p.bounds[bi]; b.overQuota {
			what := "group " + b.owner.name
			if b.pool || len(b.owner.children) > 0 {
				what = b.name()
			}
			plan.Notes = append(plan.Notes, Note{Group: b.owner.name, Reason: fmt.Sprintf("%s over quota (%s): no new boots", what, b.overWhy)})
		}
	}

	// Shapes and groups.
	plan.Shapes = make([]ShapeStatus, len(p.shapes))
	waiting := make(map[*groupState]int)
	worst := make(map[*groupState]*shapeState)
	nWaiting := make(map[*groupState]int)
	for si := range p.shapes {
		st := &p.shapes[si]
		ss := ShapeStatus{Shape: st.sh, Covered: st.covered, Shortfall: st.shortfall,
			BootedVMs: st.bootedVMs, BootedJobs: st.bootedJobs, Waiting: max(0, st.need)}
		if ss.Waiting > 0 {
			ss.Reason = p.describe(st.why, st.group)
			waiting[st.group] += ss.Waiting
			nWaiting[st.group]++
			if w := worst[st.group]; w == nil || st.need > w.need {
				worst[st.group] = st
			}
		}
		plan.Shapes[si] = ss
	}
	plan.Groups = make([]GroupStatus, 0, len(p.groupOrder))
	for _, g := range p.groupOrder {
		gs := GroupStatus{Name: g.name, Idle: g.idle, Running: g.running, Shortfall: g.shortfall,
			Booted: g.booted, BootedJobs: g.bootedJobs, Waiting: waiting[g], Throttled: g.throttled, OverQuota: g.overQuota}
		plan.Groups = append(plan.Groups, gs)
		if gs.Waiting > 0 {
			w := worst[g]
			plan.Notes = append(plan.Notes, Note{Group: g.name, Reason: fmt.Sprintf("group %s: %d idle jobs in %d shapes wait; the most (%d of %d cpu, %d MiB) because %s",
				g.name, gs.Waiting, nWaiting[g], w.need, w.sh.Cpus, w.sh.MemoryMiB, p.describe(w.why, g))})
		}
	}
	return plan
}
