package planner

import (
	"fmt"
	"slices"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// Preemptible capacity. A cloud (Cloud.Preemptible) or some of its flavors
// (Cloud.PreemptibleFlavors) may be taken back by the cloud at any time.
// Only jobs that accept it (Shape.Preemptible, Group.Preemptible) are
// placed there, and they try it first: preemptible clouds before the
// others (each in priority order), and on a cloud with both, its
// preemptible flavors before the others. VMs on preemptible capacity cover
// only such jobs in the shortfall matching.

// preemptions counts each cloud's recent preemptions and backs off a
// cloud that preempts too fast (Config.PreemptMax within PreemptWindow):
// no boots until PreemptBackoff after the last one. A cloud already not
// taking boots keeps its state.
func (p *planner) preemptions(list []Preemption) {
	from := p.now.Add(-p.cfg.PreemptWindow)
	last := make([]time.Time, len(p.clouds))
	for _, pr := range list {
		ci := p.cloudIndex(pr.Site)
		if ci < 0 || pr.At.Before(from) || pr.At.After(p.now) {
			continue
		}
		p.cs[ci].preempted++
		if pr.At.After(last[ci]) {
			last[ci] = pr.At
		}
	}
	if p.cfg.PreemptMax < 0 {
		return
	}
	for ci := range p.clouds {
		cs := &p.cs[ci]
		if cs.preempted < p.cfg.PreemptMax || cs.status != CloudOK {
			continue
		}
		if until := last[ci].Add(p.cfg.PreemptBackoff); until.After(p.now) {
			cs.status, cs.until = CloudBackoff, until
			cs.reason = fmt.Sprintf("cloud %s backing off until %s: it took back %d VMs within %s (preempt_max %d)",
				p.clouds[ci].Site, p.clock(until), cs.preempted, fmtDur(p.cfg.PreemptWindow), p.cfg.PreemptMax)
		}
	}
}

// preemptibleFirst lists the indexes of clouds (in priority order)
// preemptible ones first.
func preemptibleFirst(clouds []Cloud) []int {
	order := make([]int, len(clouds))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return boolCmp(!clouds[a].Preemptible, !clouds[b].Preemptible) })
	return order
}

// preemptible reports whether a VM of the flavor on cloud ci (-1:
// unknown) is on preemptible capacity.
func (p *planner) preemptible(ci int, flavor string) bool {
	if ci < 0 {
		return false
	}
	c := &p.clouds[ci]
	return c.Preemptible || slices.Contains(c.PreemptibleFlavors, flavor)
}

// chooseFlavor picks the flavor a shape boots on cloud ci: the smallest
// that holds its jobs, is rated at least their minimum HS06 per core and
// is not preemptible unless they accept it; jobs that accept it take a
// preemptible flavor when one fits. -1: none.
func (p *planner) chooseFlavor(ci int, st *shapeState) int {
	c := &p.clouds[ci]
	minRate := rateMilli(st.sh.MinHS06PerCore)
	fits := func(f *protocol.Flavor) bool { return minRate == 0 || p.rateOf(ci, f.Name) >= minRate }
	if st.pre && !c.Preemptible && len(c.PreemptibleFlavors) > 0 {
		if fi := smallestFlavor(c.Flavors, &st.sh, st.pack, func(f *protocol.Flavor) bool {
			return fits(f) && slices.Contains(c.PreemptibleFlavors, f.Name)
		}); fi >= 0 {
			return fi
		}
	}
	return smallestFlavor(c.Flavors, &st.sh, st.pack, func(f *protocol.Flavor) bool {
		return fits(f) && (st.pre || !p.preemptible(ci, f.Name))
	})
}
