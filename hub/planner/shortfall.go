package planner

import (
	"cmp"
	"slices"
)

// shapeState is one merged shape while the plan is built.
type shapeState struct {
	sh    Shape
	sites []string // allowed sites, aliases expanded; nil: any
	group *groupState
	// pack is how many jobs the chosen flavor must hold at least.
	pack int

	covered, shortfall int
	// need is the shortfall not yet booted for.
	need int

	// cursor walks the clouds in priority order while booting; flavor and
	// perVM are the flavor chosen on clouds[cursor] (flavor -1: not yet).
	cursor, flavor, perVM int
	// pre is set when the jobs accept preemptible capacity: they walk
	// the clouds preemptible ones first.
	pre                   bool
	bootedVMs, bootedJobs int
	// why is the most telling reason the shape could not boot somewhere;
	// skipped the last cloud it fell back from.
	why, skipped reason
}

// indexShapes merges identical shapes, sorts them and files them by group
// and VM type.
func (p *planner) indexShapes(in []Shape) {
	shapes := make([]Shape, 0, len(in))
	for _, sh := range in {
		sh.Idle = max(0, sh.Idle)
		sh.Running = max(0, sh.Running)
		sh.Cpus = max(0, sh.Cpus)
		sh.MemoryMiB = max(0, sh.MemoryMiB)
		sh.DiskKiB = max(0, sh.DiskKiB)
		if rateMilli(sh.MinHS06PerCore) == 0 {
			sh.MinHS06PerCore = 0
		}
		if len(sh.Clouds) > 0 {
			sh.Clouds = slices.Compact(slices.Sorted(slices.Values(sh.Clouds)))
		}
		shapes = append(shapes, sh)
	}
	slices.SortFunc(shapes, compareShapes)
	shapes = mergeShapes(shapes)

	p.shapes = make([]shapeState, len(shapes))
	for i, sh := range shapes {
		g := p.group(sh.Group)
		st := &p.shapes[i]
		*st = shapeState{sh: sh, group: g, sites: p.expandSites(sh.Clouds), flavor: -1, pre: sh.Preemptible || g.g.Preemptible}
		st.pack = max(1, sh.JobsPerVM)
		if sh.JobsPerVM <= 0 {
			if n, ok := p.vmTypes[[2]string{sh.Group, sh.VMType}]; ok {
				st.pack = max(1, n)
			} else if n, ok := p.vmTypes[[2]string{"", sh.VMType}]; ok {
				st.pack = max(1, n)
			}
		}
		g.idle += sh.Idle
		g.running += sh.Running
		b := p.bucket(sh.Group, sh.VMType)
		b.shapes = append(b.shapes, int32(i))
	}
}

func (p *planner) bucket(group, vmType string) *bucket {
	k := [2]string{group, vmType}
	b, ok := p.buckets[k]
	if !ok {
		b = &bucket{group: p.group(group)}
		p.buckets[k] = b
	}
	return b
}

// mergeShapes sums adjacent shapes that differ only in their counts.
func mergeShapes(sorted []Shape) []Shape {
	out := sorted[:0]
	for _, sh := range sorted {
		if n := len(out); n > 0 && compareShapes(out[n-1], sh) == 0 {
			out[n-1].Idle += sh.Idle
			out[n-1].Running += sh.Running
			continue
		}
		out = append(out, sh)
	}
	return out
}

// compareShapes orders shapes by every field but their counts.
func compareShapes(a, b Shape) int {
	return cmp.Or(
		cmp.Compare(a.Group, b.Group),
		cmp.Compare(a.VMType, b.VMType),
		cmp.Compare(a.Cpus, b.Cpus),
		cmp.Compare(a.MemoryMiB, b.MemoryMiB),
		cmp.Compare(a.DiskKiB, b.DiskKiB),
		cmp.Compare(a.Image, b.Image),
		slices.Compare(a.Clouds, b.Clouds),
		cmp.Compare(a.KeepAlive, b.KeepAlive),
		cmp.Compare(a.JobsPerVM, b.JobsPerVM),
		cmp.Compare(a.Flavor, b.Flavor),
		cmp.Compare(a.MaxLifetime, b.MaxLifetime),
		cmp.Compare(a.MinHS06PerCore, b.MinHS06PerCore),
		boolCmp(a.Preemptible, b.Preemptible),
	)
}

// jobsFit is how many jobs of sh fit in the given free cores and memory.
// A shape that asks for neither gets one job per VM.
func jobsFit(sh *Shape, cpus, memMiB int) int {
	n := -1
	if sh.Cpus > 0 {
		n = cpus / sh.Cpus
	}
	if sh.MemoryMiB > 0 {
		if m := memMiB / sh.MemoryMiB; n < 0 || m < n {
			n = m
		}
	}
	if n < 0 {
		return 1
	}
	return n
}

// capClass is a number of VMs of one bucket on one site with the same free
// cores and memory and the same readiness.
type capClass struct {
	site      string
	cpus, mem int
	// rate is the VMs' HS06 rating per core, in thousandths; pre is set
	// for VMs on preemptible capacity.
	rate  int
	pre   bool
	rank  uint8
	count int
	// vms lists the VMs of a class of idle VMs past their keep-alive,
	// which are retired unless used.
	vms []int32
}

// Readiness ranks: among VMs of one size, ready ones take jobs first, and
// of those the ones past their keep-alive (so only the surplus goes).
const (
	rankPastKeep uint8 = iota
	rankIdle
	rankBusy
	rankStarting
	rankBooting
)

type classKey struct {
	site      string
	cpus, mem int
	rate      int
	pre       bool
	rank      uint8
}

// shortfall works out, shape by shape, how many idle jobs the booting,
// starting and idle VMs of their group and VM type (and the free part of
// busy ones) will take, and how many are left: the shortfall. Capacity is
// handed out biggest shape first, smallest VM first, so that small jobs do
// not take the only VMs big ones fit in; every VM is counted once.
func (p *planner) shortfall() {
	classes := make([]capClass, 0, 16)
	byKey := make(map[classKey]int, 16)
	order := make([]int32, 0, 16)
	for _, b := range p.sortedBuckets() {
		idle := 0
		for _, si := range b.shapes {
			idle += p.shapes[si].sh.Idle
		}
		if idle == 0 {
			continue
		}
		// Capacity classes of this bucket.
		classes = classes[:0]
		clear(byKey)
		for _, vi := range b.vms {
			if p.going[vi] {
				continue
			}
			vm := &p.vms[vi]
			if ci := p.vmCl[vi]; ci >= 0 && p.clouds[ci].Disabled && !vm.Held {
				continue
			}
			cpus, mem, rank, ok := freeOf(vm)
			if !ok || (cpus <= 0 && mem <= 0) {
				continue
			}
			if rank == rankIdle && p.pastKeep[vi] {
				rank = rankPastKeep
			}
			rate, pre := int(p.vmRate[vi]), p.vmPre[vi]
			k := classKey{site: vm.Site, cpus: cpus, mem: mem, rate: rate, pre: pre, rank: rank}
			ix, ok := byKey[k]
			if !ok {
				ix = len(classes)
				byKey[k] = ix
				classes = append(classes, capClass{site: vm.Site, cpus: cpus, mem: mem, rate: rate, pre: pre, rank: rank})
			}
			classes[ix].count++
			if rank == rankPastKeep {
				classes[ix].vms = append(classes[ix].vms, vi)
			}
		}
		slices.SortFunc(classes, func(a, b capClass) int {
			return cmp.Or(cmp.Compare(a.cpus, b.cpus), cmp.Compare(a.mem, b.mem), cmp.Compare(a.rank, b.rank),
				cmp.Compare(a.rate, b.rate), boolCmp(a.pre, b.pre), cmp.Compare(a.site, b.site))
		})
		nOrig := len(classes)

		// Shapes, most demanding HS06 rating first (only they may use the
		// fastest VMs), then biggest request first.
		order = append(order[:0], b.shapes...)
		slices.SortStableFunc(order, func(x, y int32) int {
			a, b := &p.shapes[x].sh, &p.shapes[y].sh
			return cmp.Or(cmp.Compare(b.MinHS06PerCore, a.MinHS06PerCore),
				cmp.Compare(b.Cpus, a.Cpus), cmp.Compare(b.MemoryMiB, a.MemoryMiB), cmp.Compare(b.DiskKiB, a.DiskKiB))
		})
		for _, si := range order {
			st := &p.shapes[si]
			need := st.sh.Idle
			minRate := rateMilli(st.sh.MinHS06PerCore)
			for ci := 0; ci < len(classes) && need > 0; ci++ {
				c := &classes[ci]
				if c.count == 0 || !hasSite(st.sites, c.site) || c.rate < minRate || c.pre && !st.pre {
					continue
				}
				k := jobsFit(&st.sh, c.cpus, c.mem)
				if k <= 0 {
					continue
				}
				vms := min(c.count, (need+k-1)/k)
				full := vms // VMs that get k jobs
				last := 0   // jobs on a last, partly used VM
				if vms*k > need {
					full = vms - 1
					last = need - full*k
				}
				need -= full*k + last
				c.count -= vms
				// What the used VMs have left may serve later shapes.
				if full > 0 {
					classes = appendLeftover(classes, c, c.cpus-k*st.sh.Cpus, c.mem-k*st.sh.MemoryMiB, full)
				}
				if last > 0 {
					classes = appendLeftover(classes, c, c.cpus-last*st.sh.Cpus, c.mem-last*st.sh.MemoryMiB, 1)
				}
			}
			st.covered = st.sh.Idle - need
			st.shortfall = need
			st.need = need
			st.group.shortfall += need
		}
		// Idle VMs past their keep-alive that took jobs are kept: those
		// that would be retired last go first to the jobs.
		for ci := range nOrig {
			c := &classes[ci]
			if c.rank != rankPastKeep {
				continue
			}
			used := len(c.vms) - c.count
			p.sortForRetirement(c.vms)
			for _, vi := range c.vms[len(c.vms)-used:] {
				p.kept[vi] = true
			}
		}
	}
}

// appendLeftover adds a class for what used VMs still have free, when they
// have both cores and memory left.
func appendLeftover(classes []capClass, of *capClass, cpus, mem, count int) []capClass {
	if cpus <= 0 || mem <= 0 {
		return classes
	}
	return append(classes, capClass{site: of.site, cpus: cpus, mem: mem, rate: of.rate, pre: of.pre, rank: rankBusy, count: count})
}

// freeOf is what a VM offers to idle jobs: all of it while booting,
// starting or idle; the startd's free part while busy; nothing while
// retiring or in error.
func freeOf(vm *VM) (cpus, mem int, rank uint8, ok bool) {
	switch vm.State {
	case VMBooting:
		return vm.Cpus, vm.MemoryMiB, rankBooting, true
	case VMStarting:
		return vm.Cpus, vm.MemoryMiB, rankStarting, true
	case VMIdle:
		if vm.RunningJobs <= 0 {
			return vm.Cpus, vm.MemoryMiB, rankIdle, true
		}
		return vm.FreeCpus, vm.FreeMemoryMiB, rankBusy, true
	case VMBusy:
		return vm.FreeCpus, vm.FreeMemoryMiB, rankBusy, true
	}
	return 0, 0, 0, false
}

// sortedBuckets lists the buckets by group, then VM type.
func (p *planner) sortedBuckets() []*bucket {
	keys := make([][2]string, 0, len(p.buckets))
	for k := range p.buckets {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	out := make([]*bucket, len(keys))
	for i, k := range keys {
		out[i] = p.buckets[k]
	}
	return out
}
