package planner

import (
	"cmp"
	"container/heap"
	"slices"
)

// groupState is one group's figures while the plan is built.
type groupState struct {
	name string
	g    Group
	// sites are the sites the group may boot on (aliases expanded); nil
	// means any.
	sites []string

	all, staying Usage
	onSite       map[string]*siteUse
	vms          []int32

	// parent and children place the group in the quota tree; ownBound
	// is the index of its own quota's bound and poolBound of its
	// subgroups' pool per resource (-1: none); bounds lists every bound
	// the group belongs to.
	parent    *groupState
	children  []*groupState
	ownBound  int32
	poolBound [numDims]int32
	bounds    []int32

	idle, running, shortfall int // jobs
	idleVMs, busyVMs         int
	heldCores, heldHS06      int
	throttled, overQuota     bool

	booted, bootedJobs int

	// queue holds the group's shapes still short, taken in turn from head.
	queue []int32
	head  int
	key   float64
	index int // in the heap
}

// newGroupState returns the working state of a group with settings g.
func newGroupState(g Group) *groupState {
	gs := &groupState{name: g.Name, g: g, ownBound: -1}
	for d := range gs.poolBound {
		gs.poolBound[d] = -1
	}
	return gs
}

// hold counts u in what the group holds, for fair share.
func (g *groupState) hold(u Usage) {
	g.heldCores += u.Cores
	g.heldHS06 += u.HS06
}

// allocate boots VMs for the shortfall. Groups take turns, one VM each,
// (Config.Fairness says whose turn it is), so a group with a long queue
// cannot starve one with a short one; within a group, shapes take turns
// too. A shape boots on the first cloud in priority order that it and its
// group may use, that takes boots, has a flavor that fits and has room, and
// falls back to the next cloud when that one is full. Room only shrinks
// while a plan is built, so each shape walks the clouds once.
func (p *planner) allocate() {
	// Idle-VM throttle and fair-share weights, over the VMs that stay.
	for i := range p.vms {
		vm := &p.vms[i]
		if p.going[i] {
			continue
		}
		g := p.groups[vm.Group]
		switch {
		case vm.RunningJobs > 0 || vm.State == VMBusy:
			g.busyVMs++
			g.hold(p.vmUsage(i))
		case vm.State == VMIdle:
			if !vm.Held {
				g.idleVMs++
			}
			g.hold(p.vmUsage(i))
		case vm.State == VMBooting || vm.State == VMStarting:
			g.hold(p.vmUsage(i))
		}
	}

	h := &groupHeap{share: p.cfg.Fairness == FairShare, hs06: p.cfg.ShareIn == ShareHS06}
	for si := range p.shapes {
		st := &p.shapes[si]
		if st.need > 0 {
			st.group.queue = append(st.group.queue, int32(si))
		}
	}
	for _, g := range p.groupOrder {
		if len(g.queue) == 0 {
			continue
		}
		if g.g.Paused {
			p.blockGroup(g, reason{code: whyGroupPaused})
			continue
		}
		if lim := p.throttleLimit(g); lim > 0 && g.idleVMs >= lim {
			g.throttled = true
			p.blockGroup(g, reason{code: whyThrottle})
			continue
		}
		g.sites = p.expandSites(g.g.Clouds)
		g.key = h.keyOf(g)
		heap.Push(h, g)
	}

	// Every turn either boots a VM or takes a shape out for good, so the
	// loop ends after at most (boots + shapes) turns.
	for h.Len() > 0 {
		g := h.items[0]
		if p.turn(g) && g.head < len(g.queue) {
			g.key = h.keyOf(g)
			heap.Fix(h, 0)
			continue
		}
		heap.Pop(h)
	}
}

// throttleLimit is how many idle VMs stop the group's boots; 0: no limit.
func (p *planner) throttleLimit(g *groupState) int {
	if p.cfg.IdleThrottleMin < 0 {
		return 0
	}
	return max(p.cfg.IdleThrottleMin, g.busyVMs*p.cfg.IdleThrottlePercent/100)
}

// blockGroup marks all of a group's short shapes as waiting for why.
func (p *planner) blockGroup(g *groupState, why reason) {
	for _, si := range g.queue {
		p.shapes[si].why = why
	}
	g.queue = g.queue[:0]
}

// turn boots one VM for the group's next shape that can still boot; it
// reports false when none can.
func (p *planner) turn(g *groupState) bool {
	for g.head < len(g.queue) {
		si := g.queue[g.head]
		g.head++
		st := &p.shapes[si]
		if p.bootOne(st) {
			if st.need > 0 {
				g.queue = append(g.queue, si)
			}
			if g.head > 64 && g.head > len(g.queue)/2 {
				g.queue = append(g.queue[:0], g.queue[g.head:]...)
				g.head = 0
			}
			return true
		}
	}
	return false
}

// bootOne boots one VM for the shape on the first cloud, from its cursor
// on, that can take it; it reports false when no cloud can.
func (p *planner) bootOne(st *shapeState) bool {
	g := st.group
	for ; st.cursor < len(p.clouds); st.cursor, st.flavor = st.cursor+1, -1 {
		ci := st.cursor
		if st.pre {
			ci = p.preOrder[st.cursor]
		}
		c := &p.clouds[ci]
		if st.flavor < 0 {
			if !hasSite(st.sites, c.Site) || !hasSite(g.sites, c.Site) {
				st.note(reason{code: whyNotAllowed})
				continue
			}
			if c.Preemptible && !st.pre {
				st.note(reason{code: whyPreemptible, cloud: int32(ci)})
				continue
			}
			if p.cs[ci].status != CloudOK {
				st.note(reason{code: whyCloudState, cloud: int32(ci)})
				continue
			}
			if _, off := p.imageOff[[2]string{c.Site, st.sh.Image}]; off {
				st.note(reason{code: whyImageBackoff, cloud: int32(ci), image: st.sh.Image})
				continue
			}
			fi := p.chooseFlavor(ci, st)
			if fi < 0 {
				st.note(reason{code: whyNoFlavor, cloud: int32(ci), flavor: st.sh.Flavor})
				continue
			}
			st.flavor = fi
			st.perVM = perVM(&st.sh, &c.Flavors[fi], st.pack)
		}
		f := &c.Flavors[st.flavor]
		if r := p.roomFor(ci, g, f); r.code != whyNone {
			st.note(r)
			if p.cs[ci].full.code == whyNone && (r.code == whyCloudRoom || r.code == whyInFlight) {
				p.cs[ci].full = r
			}
			continue
		}
		p.take(ci, g, f)
		jobs := min(st.need, st.perVM)
		st.need -= jobs
		st.bootedVMs++
		st.bootedJobs += jobs
		g.booted++
		g.bootedJobs += jobs
		g.hold(p.flavorUsage(ci, f))
		p.addBoot(ci, st, f.Name, jobs)
		return true
	}
	return false
}

// bootKey identifies one Boot in the plan.
type bootKey struct {
	cloud         int
	group, vmType string
	flavor, image string
	keepAlive     int64
	maxLifetime   int64
}

// bootAgg is one Boot being built.
type bootAgg struct {
	key  bootKey
	vms  int
	jobs int
	// fallback is why the first shape booted here skipped a better cloud.
	fallback reason
}

func (p *planner) addBoot(ci int, st *shapeState, flavor string, jobs int) {
	k := bootKey{cloud: ci, group: st.sh.Group, vmType: st.sh.VMType, flavor: flavor, image: st.sh.Image, keepAlive: int64(st.sh.KeepAlive),
		maxLifetime: int64(st.sh.MaxLifetime)}
	if p.bootIx == nil {
		p.bootIx = make(map[bootKey]int)
	}
	ix, ok := p.bootIx[k]
	if !ok {
		ix = len(p.boots)
		p.bootIx[k] = ix
		p.boots = append(p.boots, bootAgg{key: k, fallback: st.skipped})
	}
	p.boots[ix].vms++
	p.boots[ix].jobs += jobs
}

// groupHeap orders groups by whose turn it is: the lowest key, then name.
type groupHeap struct {
	items []*groupState
	share bool
	// hs06 counts holdings in HS06 rather than cores.
	hs06 bool
}

// keyOf is the group's place in the turn order: VMs booted this plan
// (FairRotate), or cores held per unit of share (FairShare).
func (h *groupHeap) keyOf(g *groupState) float64 {
	if h.share {
		if h.hs06 {
			return float64(g.heldHS06) / float64(max(1, g.g.Share))
		}
		return float64(g.heldCores) / float64(max(1, g.g.Share))
	}
	return float64(g.booted)
}

func (h *groupHeap) Len() int { return len(h.items) }
func (h *groupHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.name, b.name)) < 0
}
func (h *groupHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].index = i
	h.items[j].index = j
}
func (h *groupHeap) Push(x any) {
	g := x.(*groupState)
	g.index = len(h.items)
	h.items = append(h.items, g)
}
func (h *groupHeap) Pop() any {
	n := len(h.items)
	g := h.items[n-1]
	h.items = slices.Delete(h.items, n-1, n)
	return g
}
