package planner

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// Decide computes the plan for snapshot s.
//
// Policy (the walking skeleton's; each rule is tested in planner_test.go):
//   - VMs in error longer than ErrorDelay are deleted.
//   - For each shape, idle jobs not covered by free job slots on booting,
//     starting, idle or partly busy VMs of the same group and VM type are a
//     shortfall. It is booted on the smallest flavor that fits, cloud by
//     cloud in priority order, falling back to the next cloud when one is
//     full, within the smallest of the cloud's own limits, the admin's caps
//     and the in-flight boot cap.
//   - Idle VMs past their keep-alive are retired, unless idle demand of
//     their group and type could use them.
//   - Held VMs are never touched.
func Decide(s Snapshot) Plan {
	var p Plan
	cfg := s.Config
	clouds := slices.Clone(s.Clouds)
	slices.SortFunc(clouds, func(a, b Cloud) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Site, b.Site))
	})
	cloudBySite := make(map[string]*Cloud, len(clouds))
	for i := range clouds {
		cloudBySite[clouds[i].Site] = &clouds[i]
	}

	vms := slices.Clone(s.VMs)
	slices.SortFunc(vms, func(a, b VM) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Name, b.Name))
	})

	// Room left on each cloud, and how many boots are in flight there.
	room := make(map[string]*usage, len(clouds))
	for i := range clouds {
		room[clouds[i].Site] = newUsage(&clouds[i], vms, cfg)
	}

	// Error VMs past the error delay are deleted.
	for _, vm := range vms {
		if vm.Held || vm.State != VMError || vm.ID == "" {
			continue
		}
		if s.Now.Sub(vm.CreatedAt) >= cfg.ErrorDelay {
			p.Deletes = append(p.Deletes, Delete{Site: vm.Site, VMID: vm.ID,
				Reason: fmt.Sprintf("in error since boot at %s, past error delay %s", vm.CreatedAt.UTC().Format(time.TimeOnly), cfg.ErrorDelay)})
		}
	}

	shapes := slices.Clone(s.Shapes)
	slices.SortFunc(shapes, compareShapes)

	// Free job slots per VM, consumed shape by shape.
	free := make([]int, len(vms))
	for i, vm := range vms {
		switch vm.State {
		case VMBooting, VMStarting, VMIdle, VMBusy:
			free[i] = -1 // computed per shape below
		}
	}
	for _, sh := range shapes {
		need := sh.Idle
		for i, vm := range vms {
			if need == 0 {
				break
			}
			if free[i] == 0 || vm.Group != sh.Group || vm.VMType != sh.VMType {
				continue
			}
			slots := jobsPerVM(sh, vm.Cpus, vm.MemoryMiB)
			if free[i] < 0 {
				free[i] = max(0, slots-vm.RunningJobs)
			}
			take := min(need, free[i])
			free[i] -= take
			need -= take
		}
		if need == 0 {
			continue
		}
		need = bootFor(&p, sh, need, clouds, room)
		if need > 0 {
			p.Notes = append(p.Notes, Note{Reason: fmt.Sprintf("%d idle %s/%s jobs wait: no cloud has room or a fitting flavor", need, sh.Group, sh.VMType)})
		}
	}

	// Retire idle VMs past keep-alive that no idle job of theirs could use.
	for _, vm := range vms {
		if vm.Held || vm.State != VMIdle || vm.ID == "" || vm.IdleSince.IsZero() {
			continue
		}
		keep := cfg.KeepAlive
		if c := cloudBySite[vm.Site]; c != nil && c.KeepAlive > 0 {
			keep = c.KeepAlive
		}
		idleFor := s.Now.Sub(vm.IdleSince)
		if idleFor < keep {
			continue
		}
		if hasIdleDemand(shapes, vm) {
			continue
		}
		p.Retires = append(p.Retires, Retire{Site: vm.Site, VMID: vm.ID,
			Reason: fmt.Sprintf("idle for %s, keep-alive %s", idleFor.Round(time.Second), keep)})
	}
	return p
}

func compareShapes(a, b Shape) int {
	return cmp.Or(
		cmp.Compare(a.Group, b.Group),
		cmp.Compare(a.VMType, b.VMType),
		cmp.Compare(a.Cpus, b.Cpus),
		cmp.Compare(a.MemoryMiB, b.MemoryMiB),
		cmp.Compare(a.DiskKiB, b.DiskKiB),
		cmp.Compare(a.Image, b.Image),
		slices.Compare(a.Clouds, b.Clouds),
	)
}

// jobsPerVM is how many jobs of shape sh fit on a VM of the given size.
func jobsPerVM(sh Shape, cpus, memMiB int) int {
	n := 1 << 30
	if sh.Cpus > 0 {
		n = min(n, cpus/sh.Cpus)
	}
	if sh.MemoryMiB > 0 {
		n = min(n, memMiB/sh.MemoryMiB)
	}
	if n == 1<<30 {
		n = 1
	}
	return n
}

func hasIdleDemand(shapes []Shape, vm VM) bool {
	for _, sh := range shapes {
		if sh.Idle > 0 && sh.Group == vm.Group && sh.VMType == vm.VMType && jobsPerVM(sh, vm.Cpus, vm.MemoryMiB) > 0 {
			return true
		}
	}
	return false
}

// usage tracks what is left on one cloud while the plan is built.
type usage struct {
	freeCores, freeRAM, freeVMs int
	inFlight, maxInFlight       int
}

const unlimited = 1 << 40

func newUsage(c *Cloud, vms []VM, cfg Config) *usage {
	u := &usage{freeCores: unlimited, freeRAM: unlimited, freeVMs: unlimited, maxInFlight: cfg.MaxBootsPerCloud}
	if u.maxInFlight <= 0 {
		u.maxInFlight = unlimited
	}
	// Canopy's own VMs the cloud does not list yet (no ID) are not in its
	// usage figures: count them here so no plan goes over quota.
	var pendCores, pendRAM, pendVMs, canopyCores, canopyRAM, canopyVMs int
	for _, vm := range vms {
		if vm.Site != c.Site {
			continue
		}
		if vm.State == VMBooting {
			u.inFlight++
		}
		if vm.ID == "" {
			pendCores += vm.Cpus
			pendRAM += vm.MemoryMiB
			pendVMs++
		}
		canopyCores += vm.Cpus
		canopyRAM += vm.MemoryMiB
		canopyVMs++
	}
	l := c.Limits
	if l.MaxCores >= 0 {
		u.freeCores = l.MaxCores - l.UsedCores - pendCores
	}
	if l.MaxRAMMiB >= 0 {
		u.freeRAM = l.MaxRAMMiB - l.UsedRAMMiB - pendRAM
	}
	if l.MaxInstances >= 0 {
		u.freeVMs = l.MaxInstances - l.UsedInstances - pendVMs
	}
	if c.Caps.Cores > 0 {
		u.freeCores = min(u.freeCores, c.Caps.Cores-canopyCores)
	}
	if c.Caps.RAMMiB > 0 {
		u.freeRAM = min(u.freeRAM, c.Caps.RAMMiB-canopyRAM)
	}
	if c.Caps.VMs > 0 {
		u.freeVMs = min(u.freeVMs, c.Caps.VMs-canopyVMs)
	}
	return u
}

// fits is how many VMs of flavor f still fit.
func (u *usage) fits(f protocol.Flavor) int {
	n := min(u.freeVMs, u.maxInFlight-u.inFlight)
	if f.VCPUs > 0 {
		n = min(n, u.freeCores/f.VCPUs)
	}
	if f.RAMMiB > 0 {
		n = min(n, u.freeRAM/f.RAMMiB)
	}
	return max(0, n)
}

func (u *usage) take(f protocol.Flavor, n int) {
	u.freeCores -= n * f.VCPUs
	u.freeRAM -= n * f.RAMMiB
	u.freeVMs -= n
	u.inFlight += n
}

// smallestFlavor returns the smallest flavor that holds one job of sh.
func smallestFlavor(flavors []protocol.Flavor, sh Shape) (protocol.Flavor, bool) {
	var best protocol.Flavor
	found := false
	for _, f := range flavors {
		if f.VCPUs < sh.Cpus || f.RAMMiB < sh.MemoryMiB || (sh.DiskKiB > 0 && int64(f.DiskGiB)<<20 < sh.DiskKiB) {
			continue
		}
		if !found || cmp.Or(cmp.Compare(f.VCPUs, best.VCPUs), cmp.Compare(f.RAMMiB, best.RAMMiB),
			cmp.Compare(f.DiskGiB, best.DiskGiB), cmp.Compare(f.Name, best.Name)) < 0 {
			best, found = f, true
		}
	}
	return best, found
}

// bootFor boots VMs for need idle jobs of sh across clouds in order and
// returns how many jobs are left without a VM.
func bootFor(p *Plan, sh Shape, need int, clouds []Cloud, room map[string]*usage) int {
	for i := range clouds {
		if need == 0 {
			break
		}
		c := &clouds[i]
		if len(sh.Clouds) > 0 && !slices.Contains(sh.Clouds, c.Site) {
			continue
		}
		if !c.Connected || c.Paused {
			continue
		}
		f, ok := smallestFlavor(c.Flavors, sh)
		if !ok {
			continue
		}
		per := jobsPerVM(sh, f.VCPUs, f.RAMMiB)
		want := (need + per - 1) / per
		n := min(want, room[c.Site].fits(f))
		if n == 0 {
			p.Notes = append(p.Notes, Note{Site: c.Site, Reason: fmt.Sprintf("no room for %s on %s: limits, caps or in-flight boot cap reached", f.Name, c.Site)})
			continue
		}
		room[c.Site].take(f, n)
		p.Boots = append(p.Boots, Boot{Site: c.Site, Group: sh.Group, VMType: sh.VMType, Flavor: f.Name, Image: sh.Image, Count: n,
			Reason: fmt.Sprintf("%d idle %s/%s jobs (%d cpu, %d MiB) without a slot; %s holds %d", need, sh.Group, sh.VMType, sh.Cpus, sh.MemoryMiB, f.Name, per)})
		need = max(0, need-n*per)
	}
	return need
}
