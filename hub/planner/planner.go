package planner

import (
	"cmp"
	"slices"
	"time"
)

// Decide computes the plan for snapshot s. The policy is described in the
// package documentation; Decide never modifies s.
func Decide(s Snapshot) Plan {
	p := newPlanner(s)
	p.indexShapes(s.Shapes)
	p.cloudStates(s.Failures)
	p.preemptions(s.Preemptions)
	p.scanVMs()
	p.lifecycle()
	p.overQuota()
	p.shortfall()
	p.keepAliveRetire()
	p.rooms()
	p.allocate()
	p.reclaim()
	return p.finish()
}

// planner is the working state of one Decide call.
type planner struct {
	now time.Time
	cfg Config
	s   *Snapshot

	clouds  []Cloud // by priority, then site; one per site
	cs      []cloudState
	cloudOf map[string]int
	eps     []endpointState

	groups     map[string]*groupState
	groupOrder []*groupState // by name
	// bounds are the group quotas' bounds (tree.go).
	bounds  []quotaBound
	vmTypes map[[2]string]int

	shapes  []shapeState // canonical order, merged
	buckets map[[2]string]*bucket

	vms  []VM    // the snapshot's, read only
	vmCl []int32 // cloud index of each VM, -1 if unknown
	// vmRate is each VM's HS06 rating per core, in thousandths; vmPre
	// marks VMs on preemptible capacity.
	vmRate []int32
	vmPre  []bool
	// preOrder lists the clouds preemptible ones first, each part in
	// priority order: the order preemptible jobs try them in.
	preOrder []int
	going    []bool // retired or deleted by this plan
	// pastKeep marks idle VMs past their keep-alive; kept those of them
	// that idle jobs will use.
	pastKeep, kept []bool
	// stayingReady is set once the staying figures are summed up.
	stayingReady bool

	// imageOff holds the images backing off, by site and image.
	imageOff map[[2]string]imageBackoff
	// boots are the plan's boots being built, indexed by bootIx.
	boots  []bootAgg
	bootIx map[bootKey]int

	plan Plan
}

// bucket holds the shapes and VMs of one group and VM type.
type bucket struct {
	group  *groupState
	shapes []int32
	vms    []int32
}

func newPlanner(s Snapshot) *planner {
	p := &planner{
		now:     s.Now,
		cfg:     s.Config.withDefaults(),
		s:       &s,
		vms:     s.VMs,
		groups:  make(map[string]*groupState, len(s.Groups)+4),
		vmTypes: make(map[[2]string]int, len(s.VMTypes)),
		buckets: make(map[[2]string]*bucket),
	}

	// Clouds: priority order, one entry per site (the first in a total
	// order, so that shuffled input gives the same choice).
	p.clouds = slices.Clone(s.Clouds)
	slices.SortStableFunc(p.clouds, func(a, b Cloud) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Site, b.Site), compareCloudTie(a, b))
	})
	p.clouds = slices.CompactFunc(p.clouds, func(a, b Cloud) bool { return a.Site == b.Site })
	p.cloudOf = make(map[string]int, len(p.clouds))
	for i, c := range p.clouds {
		p.cloudOf[c.Site] = i
	}
	p.cs = make([]cloudState, len(p.clouds))
	p.preOrder = preemptibleFirst(p.clouds)

	// Groups: settings first, then every group that has demand or VMs.
	for _, g := range s.Groups {
		if cur, ok := p.groups[g.Name]; ok {
			// Duplicate entries: keep the stricter-looking one by a total
			// order so that input order does not matter.
			if compareGroupTie(g, cur.g) >= 0 {
				continue
			}
		}
		p.groups[g.Name] = newGroupState(g)
	}
	p.linkTree()
	for _, t := range s.VMTypes {
		k := [2]string{t.Group, t.Name}
		if old, ok := p.vmTypes[k]; !ok || t.JobsPerVM > old {
			p.vmTypes[k] = t.JobsPerVM
		}
	}
	return p
}

// compareCloudTie orders two entries for the same site and priority, so
// duplicates resolve the same way whatever the input order.
func compareCloudTie(a, b Cloud) int {
	return cmp.Or(
		boolCmp(a.Connected, b.Connected),
		boolCmp(!a.Paused, !b.Paused),
		boolCmp(!a.Disabled, !b.Disabled),
		cmp.Compare(len(a.Flavors), len(b.Flavors)),
		boolCmp(a.Preemptible, b.Preemptible),
	)
}

func compareGroupTie(a, b Group) int {
	return cmp.Or(
		cmp.Compare(a.Share, b.Share),
		cmp.Compare(a.Caps.Cores, b.Caps.Cores),
		cmp.Compare(a.Caps.RAMMiB, b.Caps.RAMMiB),
		cmp.Compare(a.Caps.VMs, b.Caps.VMs),
		boolCmp(a.Paused, b.Paused),
		cmp.Compare(a.KeepAlive, b.KeepAlive),
		slices.Compare(a.Clouds, b.Clouds),
		cmp.Compare(a.Parent, b.Parent),
		boolCmp(a.NoBorrow, b.NoBorrow),
		boolCmp(a.Preemptible, b.Preemptible),
	)
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// group returns the state of the named group, creating it with default
// settings.
func (p *planner) group(name string) *groupState {
	if g, ok := p.groups[name]; ok {
		return g
	}
	g := newGroupState(Group{Name: name})
	p.groups[name] = g
	return g
}

// cloudIndex is the index of the site's cloud, or -1.
func (p *planner) cloudIndex(site string) int {
	if i, ok := p.cloudOf[site]; ok {
		return i
	}
	return -1
}

// expandSites turns a list of sites and aliases into a sorted set of sites;
// nil means any site.
func (p *planner) expandSites(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	out := make([]string, 0, len(list))
	for _, name := range list {
		if sites, ok := p.s.Aliases[name]; ok {
			out = append(out, sites...)
		} else {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// hasSite reports whether the sorted set allows site (nil allows all).
func hasSite(set []string, site string) bool {
	if set == nil {
		return true
	}
	_, ok := slices.BinarySearch(set, site)
	return ok
}
