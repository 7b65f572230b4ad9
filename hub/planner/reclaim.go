package planner

import (
	"cmp"
	"fmt"
	"slices"
)

// Reclaiming: idle capacity yields to waiting demand. After the boots, a
// shape still waiting because a cloud it could use is full (its room, not
// a group cap or the in-flight cap) takes back cores held there by idle
// VMs that nobody needs:
//
//   - VMs on preemptible capacity, when the waiting jobs do not accept it
//     (preemptible VMs go first);
//   - VMs of another group that has no idle job at all and holds more
//     cores per unit of share than the waiting group (so a group is never
//     taken below the waiting group's fair share).
//
// Only idle VMs go: registered with fresh evidence, running no job, not
// held, listed by the cloud, not kept for idle jobs and not already going;
// never a busy VM, never a VM whose state is unknown. Retirements count
// against the cloud's disruption budget (Config.DisruptionBudget): with VMs
// already retiring there, no more than the budget are retired. The waiting
// jobs boot in a later plan, once the VMs are gone.

// reclaimCand is an idle VM that may yield.
type reclaimCand struct {
	i   int32
	pre bool
}

func (p *planner) reclaim() {
	if p.cfg.DisruptionBudget < 0 {
		return
	}
	retiring := make([]int, len(p.clouds))
	for ci := range p.clouds {
		for _, i := range p.cs[ci].vms {
			if p.vms[i].State == VMRetiring || p.going[i] {
				retiring[ci]++
			}
		}
	}
	waitedOn := make([]bool, len(p.clouds))
	for si := range p.shapes {
		st := &p.shapes[si]
		g := st.group
		if st.need <= 0 || g.g.Paused || g.throttled {
			continue
		}
		order := p.preOrder
		if !st.pre {
			order = nil
		}
		for n := range len(p.clouds) {
			ci := n
			if order != nil {
				ci = order[n]
			}
			c := &p.clouds[ci]
			if !hasSite(st.sites, c.Site) || !hasSite(g.sites, c.Site) || p.cs[ci].status != CloudOK || c.Preemptible && !st.pre {
				continue
			}
			fi := p.chooseFlavor(ci, st)
			if fi < 0 {
				continue
			}
			f := &c.Flavors[fi]
			if r := p.roomFor(ci, g, f); r.code != whyCloudRoom {
				continue
			}
			waitedOn[ci] = true
			budget := p.budget(ci) - retiring[ci]
			if budget <= 0 {
				continue
			}
			cands := p.reclaimable(ci, st)
			if len(cands) == 0 {
				continue
			}
			// Free the cores of the VMs the shape still needs, within the
			// budget.
			per := max(1, perVM(&st.sh, f, st.pack))
			vmsNeeded := (st.need + per - 1) / per
			want := vmsNeeded * max(1, f.VCPUs)
			freed := 0
			for _, cd := range cands {
				if freed >= want || budget <= 0 {
					break
				}
				vm := &p.vms[cd.i]
				why := fmt.Sprintf("idle VM of group %s (no idle jobs) yields its %d cores to %d waiting %s jobs: cloud %s full",
					vm.Group, vm.Cpus, st.need, g.name, c.Site)
				if cd.pre && !st.pre {
					why = fmt.Sprintf("idle preemptible VM yields its %d cores to %d waiting %s jobs that do not accept preemptible capacity: cloud %s full",
						vm.Cpus, st.need, g.name, c.Site)
				}
				p.retire(int(cd.i), RuleReclaim, why)
				freed += max(0, vm.Cpus)
				budget--
				retiring[ci]++
			}
			if freed > 0 {
				break
			}
		}
	}
	for ci := range p.clouds {
		if waitedOn[ci] && retiring[ci] >= p.budget(ci) {
			if n := len(p.reclaimable(ci, nil)); n > 0 {
				p.plan.Notes = append(p.plan.Notes, Note{Site: p.clouds[ci].Site, Reason: fmt.Sprintf(
					"cloud %s: %d idle VMs could yield to waiting jobs; they wait on the disruption budget (%d VMs retiring, budget %d)",
					p.clouds[ci].Site, n, retiring[ci], p.budget(ci))})
			}
		}
	}
}

// budget is how many VMs of cloud ci may be retiring at once for
// reclaiming.
func (p *planner) budget(ci int) int {
	if p.cfg.DisruptionBudgetVMs > 0 {
		return p.cfg.DisruptionBudgetVMs
	}
	return max(1, len(p.cs[ci].vms)*p.cfg.DisruptionBudget/100)
}

// reclaimable lists, first to go first, the idle VMs on cloud ci that may
// yield to the shape's jobs (nil: to any waiting jobs, for notes).
func (p *planner) reclaimable(ci int, st *shapeState) []reclaimCand {
	var out []reclaimCand
	for _, i := range p.cs[ci].vms {
		vm := &p.vms[i]
		if vm.Held || vm.ID == "" || p.going[i] || p.kept[i] || vm.State != VMIdle || vm.RunningJobs > 0 ||
			vm.Evidence == EvidenceUnknown || vm.Evidence == EvidenceUnregistered {
			continue
		}
		holder := p.groups[vm.Group]
		if holder.idle > 0 {
			continue
		}
		pre := p.vmPre[i]
		switch {
		case st == nil:
		case holder == st.group:
			continue
		case pre && !st.pre:
		case !heldMore(holder, st.group):
			continue
		}
		out = append(out, reclaimCand{i: i, pre: pre})
	}
	slices.SortFunc(out, func(a, b reclaimCand) int {
		return cmp.Or(boolCmp(b.pre, a.pre), p.compareRetire(&p.vms[a.i], &p.vms[b.i]))
	})
	return out
}

// heldMore reports whether group a holds more cores per unit of share
// than group b.
func heldMore(a, b *groupState) bool {
	return float64(a.heldCores)/float64(max(1, a.g.Share)) > float64(b.heldCores)/float64(max(1, b.g.Share))
}
