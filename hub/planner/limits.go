package planner

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// unlimited stands for "no limit" in room arithmetic; it is far from
// overflowing when flavors are subtracted from it.
const unlimited = math.MaxInt / 4

// limitSource is where a limit comes from.
type limitSource uint8

const (
	srcNone    limitSource = iota
	srcProject             // the cloud's own absolute limits
	srcCaps                // the admin's hard caps
	srcSoft                // the soft quota less foreign usage
)

func (s limitSource) String() string {
	switch s {
	case srcProject:
		return "project limit"
	case srcCaps:
		return "admin cap"
	case srcSoft:
		return "soft quota less foreign usage"
	}
	return "limit"
}

// Resource dimensions, in Usage's order.
const (
	dimCores = iota
	dimRAM
	dimVMs
	dimHS06
)

// numDims is the number of resource dimensions.
const numDims = 4

var dimNames = [numDims]string{"cores", "memory", "servers", "HS06"}

func (u Usage) get(d int) int {
	switch d {
	case dimCores:
		return u.Cores
	case dimRAM:
		return u.RAMMiB
	case dimHS06:
		return u.HS06
	}
	return u.VMs
}

func (u *Usage) set(d, v int) {
	switch d {
	case dimCores:
		u.Cores = v
	case dimRAM:
		u.RAMMiB = v
	case dimHS06:
		u.HS06 = v
	default:
		u.VMs = v
	}
}

func (u *Usage) add(v Usage) {
	u.Cores += v.Cores
	u.RAMMiB += v.RAMMiB
	u.VMs += v.VMs
	u.HS06 += v.HS06
}

func (u *Usage) sub(v Usage) {
	u.Cores -= v.Cores
	u.RAMMiB -= v.RAMMiB
	u.VMs -= v.VMs
	u.HS06 -= v.HS06
}

func (u Usage) anyPositive() bool { return u.Cores > 0 || u.RAMMiB > 0 || u.VMs > 0 || u.HS06 > 0 }

func capsGet(c Caps, d int) int {
	switch d {
	case dimCores:
		return c.Cores
	case dimRAM:
		return c.RAMMiB
	case dimHS06:
		return c.HS06
	}
	return c.VMs
}

func capsSet(c *Caps, d, v int) {
	switch d {
	case dimCores:
		c.Cores = v
	case dimRAM:
		c.RAMMiB = v
	case dimHS06:
		c.HS06 = v
	default:
		c.VMs = v
	}
}

// limitsGet is a cloud's own limit and usage on a resource; the cloud
// knows nothing of HS06 (no limit).
func limitsGet(l protocol.Limits, d int) (maxV, used int) {
	switch d {
	case dimCores:
		return l.MaxCores, l.UsedCores
	case dimRAM:
		return l.MaxRAMMiB, l.UsedRAMMiB
	case dimHS06:
		return -1, 0
	}
	return l.MaxInstances, l.UsedInstances
}

// vmUsage is what VM i uses, its HS06 by its flavor's rating.
func (p *planner) vmUsage(i int) Usage {
	vm := &p.vms[i]
	cpus := max(0, vm.Cpus)
	return Usage{Cores: cpus, RAMMiB: max(0, vm.MemoryMiB), VMs: 1, HS06: hs06Of(cpus, int(p.vmRate[i]))}
}

// flavorUsage is what one VM of flavor f on cloud ci uses.
func (p *planner) flavorUsage(ci int, f *protocol.Flavor) Usage {
	cpus := max(0, f.VCPUs)
	return Usage{Cores: cpus, RAMMiB: max(0, f.RAMMiB), VMs: 1, HS06: hs06Of(cpus, p.rateOf(ci, f.Name))}
}

// cloudState is one cloud's figures while the plan is built.
type cloudState struct {
	status CloudState
	until  time.Time
	reason string

	endpoint int
	// all counts every Canopy VM there, pending the ones the cloud does not
	// list yet (no ID), listed the others; staying leaves out VMs retiring,
	// in error or going in this plan.
	all, pending, listed, staying Usage
	vms                           []int32

	room Usage
	bind [numDims]limitSource

	booted    int
	bootedUse Usage
	// preempted counts VMs the cloud took back within the window.
	preempted int
	overQuota bool
	overWhy   string
	// full is the first reason a shape found no room there.
	full reason
}

// endpointState counts boots in flight at one cloud endpoint.
type endpointState struct {
	name          string
	inFlight, max int // max <= 0: no cap
}

// siteUse is a group's usage on one site with a per-cloud cap.
type siteUse struct {
	all, staying, room Usage
}

// scanVMs sums up usage per cloud, endpoint and group, and files VMs by
// cloud and by group and VM type.
func (p *planner) scanVMs() {
	epOf := make(map[string]int, len(p.clouds))
	for ci := range p.clouds {
		c := &p.clouds[ci]
		name := c.Endpoint
		if name == "" {
			name = "\x00" + c.Site
		}
		ei, ok := epOf[name]
		if !ok {
			ei = len(p.eps)
			epOf[name] = ei
			p.eps = append(p.eps, endpointState{name: c.Endpoint, max: -1})
		}
		p.cs[ci].endpoint = ei
		if c.MaxInFlight > 0 && (p.eps[ei].max <= 0 || c.MaxInFlight < p.eps[ei].max) {
			p.eps[ei].max = c.MaxInFlight
		}
	}
	for ei := range p.eps {
		if p.eps[ei].max <= 0 {
			p.eps[ei].max = p.cfg.MaxBootsPerCloud
		}
	}
	for _, g := range p.groups {
		if len(g.g.CloudCaps) > 0 {
			g.onSite = make(map[string]*siteUse, len(g.g.CloudCaps))
			for site := range g.g.CloudCaps {
				g.onSite[site] = &siteUse{}
			}
		}
	}

	p.vmCl = make([]int32, len(p.vms))
	p.vmRate = make([]int32, len(p.vms))
	p.vmPre = make([]bool, len(p.vms))
	p.going = make([]bool, len(p.vms))
	for i := range p.vms {
		vm := &p.vms[i]
		ci := p.cloudIndex(vm.Site)
		p.vmRate[i] = int32(p.rateOf(ci, vm.Flavor))
		p.vmPre[i] = p.preemptible(ci, vm.Flavor)
		u := p.vmUsage(i)
		p.vmCl[i] = int32(ci)
		if ci >= 0 {
			cs := &p.cs[ci]
			cs.all.add(u)
			if vm.ID == "" {
				cs.pending.add(u)
			} else {
				cs.listed.add(u)
			}
			cs.vms = append(cs.vms, int32(i))
			if vm.State == VMBooting || vm.State == VMStarting {
				p.eps[cs.endpoint].inFlight++
			}
		}
		g := p.group(vm.Group)
		g.all.add(u)
		g.vms = append(g.vms, int32(i))
		if su := g.onSite[vm.Site]; su != nil {
			su.all.add(u)
		}
		if b, ok := p.buckets[[2]string{vm.Group, vm.VMType}]; ok {
			b.vms = append(b.vms, int32(i))
		}
	}
	p.groupOrder = make([]*groupState, 0, len(p.groups))
	for _, name := range slices.Sorted(maps.Keys(p.groups)) {
		p.groupOrder = append(p.groupOrder, p.groups[name])
	}
	p.buildBounds()
}

// staysOn reports whether a VM keeps holding resources beyond this plan:
// not retiring, not in error and not retired or deleted by it.
func (p *planner) staysOn(i int) bool {
	vm := &p.vms[i]
	return !p.going[i] && vm.State != VMRetiring && vm.State != VMError
}

// overQuota retires VMs where Canopy's staying VMs exceed a limit (an admin
// lowered a cap or quota, or foreign usage grew): VMs that run nothing
// first, VMs running jobs only once the cloud or group has been over for
// Config.OverQuotaDeadline. Clouds come first, then groups.
func (p *planner) overQuota() {
	p.stayingReady = true
	for i := range p.vms {
		if !p.staysOn(i) {
			continue
		}
		vm := &p.vms[i]
		u := p.vmUsage(i)
		if ci := p.vmCl[i]; ci >= 0 {
			p.cs[ci].staying.add(u)
		}
		g := p.groups[vm.Group]
		g.staying.add(u)
		if su := g.onSite[vm.Site]; su != nil {
			su.staying.add(u)
		}
		for _, bi := range g.bounds {
			p.bounds[bi].staying.add(u)
		}
	}

	for ci := range p.clouds {
		c := &p.clouds[ci]
		cs := &p.cs[ci]
		d, why := p.cloudDeficit(ci)
		if !d.anyPositive() {
			continue
		}
		cs.overQuota = true
		cs.overWhy = why
		p.shed(cs.vms, d, c.OverQuotaSince, func(vm *VM) bool { return true },
			fmt.Sprintf("cloud %s over quota (%s)", c.Site, why))
	}
	// Group quotas, top of the tree first: VMs shed for a parent's bound
	// count towards its subgroups' too.
	for bi := range p.bounds {
		b := &p.bounds[bi]
		if d, why := boundDeficit(b); d.anyPositive() {
			b.overQuota = true
			b.overWhy = why
			b.owner.overQuota = true
			what := fmt.Sprintf("group %s over its cap (%s)", b.owner.name, why)
			if b.pool || len(b.owner.children) > 0 {
				what = fmt.Sprintf("%s over quota (%s)", b.name(), why)
			}
			p.shed(b.vms, d, b.since, func(vm *VM) bool { return true }, what)
		}
	}
	for _, g := range p.groupOrder {
		for _, site := range slices.Sorted(maps.Keys(g.onSite)) {
			su := g.onSite[site]
			if d, why := groupDeficit(su.staying, g.g.CloudCaps[site]); d.anyPositive() {
				g.overQuota = true
				p.shed(g.vms, d, g.g.OverQuotaSince, func(vm *VM) bool { return vm.Site == site },
					fmt.Sprintf("group %s over its cap on %s (%s)", g.name, site, why))
			}
		}
	}
}

// cloudDeficit is by how much Canopy's staying VMs on a cloud exceed its
// effective limit, per resource (positive: over), and a reason naming the
// first excess. Project limits count only from a connected agent that has
// reported some (all-zero limits mean not reported yet).
func (p *planner) cloudDeficit(ci int) (Usage, string) {
	c := &p.clouds[ci]
	cs := &p.cs[ci]
	var d Usage
	why := ""
	worse := func(dim int, v int, src limitSource, limit int) {
		if v > d.get(dim) {
			d.set(dim, v)
		}
		if v > 0 && why == "" {
			why = fmt.Sprintf("%s %s %d, Canopy uses %d", dimNames[dim], src, limit, cs.staying.get(dim))
		}
	}
	reported := c.Connected && c.Limits != (protocol.Limits{})
	for dim := range numDims {
		if reported {
			if maxV, used := limitsGet(c.Limits, dim); maxV >= 0 {
				foreign := max(0, used-cs.listed.get(dim))
				worse(dim, foreign+cs.staying.get(dim)-maxV, srcProject, maxV)
			}
		}
		if v := capsGet(c.Caps, dim); v > 0 {
			worse(dim, cs.staying.get(dim)-v, srcCaps, v)
		}
		if v := capsGet(c.SoftQuota, dim); v > 0 {
			worse(dim, cs.staying.get(dim)+max(0, c.Foreign.get(dim))-v, srcSoft, v)
		}
	}
	return d, why
}

func groupDeficit(staying Usage, caps Caps) (Usage, string) {
	var d Usage
	why := ""
	for dim := range numDims {
		if v := capsGet(caps, dim); v > 0 && staying.get(dim) > v {
			d.set(dim, staying.get(dim)-v)
			if why == "" {
				why = fmt.Sprintf("%s cap %d, uses %d", dimNames[dim], v, staying.get(dim))
			}
		}
	}
	return d, why
}

// shed retires or deletes VMs from cands (those for which pick is true)
// until the deficit is gone: idle VMs first, then VMs not yet registered,
// then, once over since past Config.OverQuotaDeadline, VMs running jobs
// (fewest jobs first); within a tier idle VMs past their keep-alive first,
// then by Config.RetireOrder. VMs whose evidence is unknown count as
// running jobs. Held VMs and VMs the cloud does not list yet are never
// picked.
func (p *planner) shed(cands []int32, d Usage, since time.Time, pick func(*VM) bool, why string) {
	allowBusy := p.cfg.OverQuotaDeadline > 0 && !since.IsZero() && p.now.Sub(since) >= p.cfg.OverQuotaDeadline
	type cand struct {
		i    int32
		tier int
	}
	list := make([]cand, 0, len(cands))
	for _, i := range cands {
		vm := &p.vms[i]
		if vm.Held || vm.ID == "" || !p.staysOn(int(i)) || !pick(vm) {
			continue
		}
		tier := 2
		switch {
		case vm.Evidence == EvidenceUnknown:
			// Unknown is not idle: it goes only once the deadline passed,
			// and gracefully.
			if !allowBusy {
				continue
			}
		case vm.RunningJobs > 0 || vm.State == VMBusy:
			if !allowBusy {
				continue
			}
		case vm.State == VMIdle:
			tier = 0
		case vm.State == VMBooting || vm.State == VMStarting:
			tier = 1
		default:
			continue
		}
		list = append(list, cand{i, tier})
	}
	slices.SortFunc(list, func(a, b cand) int {
		x, y := &p.vms[a.i], &p.vms[b.i]
		return cmp.Or(cmp.Compare(a.tier, b.tier), boolCmp(p.pastKeep[b.i], p.pastKeep[a.i]),
			cmp.Compare(x.RunningJobs, y.RunningJobs), p.compareRetire(x, y))
	})
	for _, c := range list {
		if !d.anyPositive() {
			break
		}
		u := p.vmUsage(int(c.i))
		if !(d.Cores > 0 && u.Cores > 0 || d.RAMMiB > 0 && u.RAMMiB > 0 || d.VMs > 0 || d.HS06 > 0 && u.HS06 > 0) {
			continue
		}
		d.sub(u)
		switch c.tier {
		case 0:
			p.retire(int(c.i), RuleOverQuota, why+": idle VM retired first")
		case 1:
			p.remove(int(c.i), RuleOverQuota, why+": VM not yet registered deleted")
		default:
			p.retire(int(c.i), RuleOverQuota, fmt.Sprintf("%s since %s, past over-quota deadline %s: running jobs may finish within %s",
				why, p.clock(since), fmtDur(p.cfg.OverQuotaDeadline), fmtDur(p.cfg.RetireDeadline)))
		}
	}
}

// compareRetire orders two VMs by Config.RetireOrder, the one to go first
// first, with a total order for ties.
func (p *planner) compareRetire(x, y *VM) int {
	age := x.CreatedAt.Compare(y.CreatedAt)
	if p.cfg.RetireOrder == RetireYoungest {
		age = -age
	}
	return cmp.Or(age, cmp.Compare(x.Site, y.Site), cmp.Compare(x.ID, y.ID), cmp.Compare(x.Name, y.Name))
}

// sortForRetirement sorts VM indexes, the one to retire first first.
func (p *planner) sortForRetirement(list []int32) {
	slices.SortFunc(list, func(a, b int32) int { return p.compareRetire(&p.vms[a], &p.vms[b]) })
}

// leave records that VM i goes in this plan and takes it off the staying
// figures.
func (p *planner) leave(i int) {
	if !p.stayingReady || !p.staysOn(i) {
		p.going[i] = true
		return
	}
	vm := &p.vms[i]
	u := p.vmUsage(i)
	if ci := p.vmCl[i]; ci >= 0 {
		p.cs[ci].staying.sub(u)
	}
	g := p.groups[vm.Group]
	g.staying.sub(u)
	if su := g.onSite[vm.Site]; su != nil {
		su.staying.sub(u)
	}
	for _, bi := range g.bounds {
		p.bounds[bi].staying.sub(u)
	}
	p.going[i] = true
}

// rooms computes, per cloud and per group, what new boots may still use:
// the smallest of the cloud's project limits (less servers it does not list
// yet), the admin's caps and the soft quota less foreign usage, counting
// every Canopy VM that still exists, retiring or not.
func (p *planner) rooms() {
	for ci := range p.clouds {
		c := &p.clouds[ci]
		cs := &p.cs[ci]
		for dim := range numDims {
			room, src := unlimited, srcNone
			lower := func(v int, s limitSource) {
				if v < room {
					room, src = v, s
				}
			}
			if maxV, used := limitsGet(c.Limits, dim); maxV >= 0 {
				lower(maxV-used-cs.pending.get(dim), srcProject)
			}
			if v := capsGet(c.Caps, dim); v > 0 {
				lower(v-cs.all.get(dim), srcCaps)
			}
			if v := capsGet(c.SoftQuota, dim); v > 0 {
				lower(v-max(0, c.Foreign.get(dim))-cs.all.get(dim), srcSoft)
			}
			cs.room.set(dim, room)
			cs.bind[dim] = src
		}
	}
	for bi := range p.bounds {
		b := &p.bounds[bi]
		for dim := range numDims {
			room := unlimited
			if v := capsGet(b.limit, dim); v > 0 {
				room = v - b.all.get(dim)
			}
			b.room.set(dim, room)
		}
	}
	for _, g := range p.groups {
		for site, su := range g.onSite {
			caps := g.g.CloudCaps[site]
			for dim := range numDims {
				room := unlimited
				if v := capsGet(caps, dim); v > 0 {
					room = v - su.all.get(dim)
				}
				su.room.set(dim, room)
			}
		}
	}
}

// roomFor checks that one more VM of flavor f fits on cloud ci for group g.
func (p *planner) roomFor(ci int, g *groupState, f *protocol.Flavor) reason {
	cs := &p.cs[ci]
	need := p.flavorUsage(ci, f)
	for dim := range numDims {
		if need.get(dim) > cs.room.get(dim) {
			return reason{code: whyCloudRoom, cloud: int32(ci), dim: uint8(dim), src: cs.bind[dim]}
		}
	}
	if ep := &p.eps[cs.endpoint]; ep.max > 0 && ep.inFlight >= ep.max {
		return reason{code: whyInFlight, cloud: int32(ci)}
	}
	for _, bi := range g.bounds {
		b := &p.bounds[bi]
		for dim := range numDims {
			if need.get(dim) > b.room.get(dim) {
				return reason{code: whyGroupCap, cloud: int32(ci), dim: uint8(dim), bound: bi + 1}
			}
		}
	}
	if su := g.onSite[p.clouds[ci].Site]; su != nil {
		for dim := range numDims {
			if need.get(dim) > su.room.get(dim) {
				return reason{code: whyGroupCloudCap, cloud: int32(ci), dim: uint8(dim)}
			}
		}
	}
	return reason{}
}

// take books one VM of flavor f on cloud ci for group g.
func (p *planner) take(ci int, g *groupState, f *protocol.Flavor) {
	u := p.flavorUsage(ci, f)
	cs := &p.cs[ci]
	cs.room.sub(u)
	cs.all.add(u)
	cs.pending.add(u)
	cs.booted++
	cs.bootedUse.add(u)
	p.eps[cs.endpoint].inFlight++
	g.all.add(u)
	for _, bi := range g.bounds {
		p.bounds[bi].room.sub(u)
		p.bounds[bi].all.add(u)
	}
	if su := g.onSite[p.clouds[ci].Site]; su != nil {
		su.room.sub(u)
		su.all.add(u)
	}
}

// smallestFlavor returns the index of the smallest flavor that holds pack
// jobs of sh and that ok accepts, or -1. A shape that names its flavor
// (Shape.Flavor) gets that one if it holds at least one job, and nothing
// else.
func smallestFlavor(flavors []protocol.Flavor, sh *Shape, pack int, ok func(*protocol.Flavor) bool) int {
	if sh.Flavor != "" {
		pack = 1
	}
	best := -1
	for i := range flavors {
		f := &flavors[i]
		if sh.Flavor != "" && f.Name != sh.Flavor {
			continue
		}
		if !ok(f) {
			continue
		}
		if f.VCPUs < pack*sh.Cpus || f.RAMMiB < pack*sh.MemoryMiB ||
			(sh.DiskKiB > 0 && int64(f.DiskGiB)<<20 < int64(pack)*sh.DiskKiB) {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := &flavors[best]
		if cmp.Or(cmp.Compare(f.VCPUs, b.VCPUs), cmp.Compare(f.RAMMiB, b.RAMMiB),
			cmp.Compare(f.DiskGiB, b.DiskGiB), cmp.Compare(f.Name, b.Name), cmp.Compare(f.ID, b.ID)) < 0 {
			best = i
		}
	}
	return best
}

// perVM is how many jobs of sh a VM of flavor f takes.
func perVM(sh *Shape, f *protocol.Flavor, pack int) int {
	if sh.Cpus == 0 && sh.MemoryMiB == 0 {
		return pack
	}
	n := jobsFit(sh, f.VCPUs, f.RAMMiB)
	if sh.DiskKiB > 0 && f.DiskGiB > 0 {
		n = min(n, int((int64(f.DiskGiB)<<20)/sh.DiskKiB))
	}
	return max(1, n)
}
