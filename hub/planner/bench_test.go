package planner

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// benchSnapshot builds a large snapshot by formula: idle jobs spread over
// shapes in 10 groups and 2 VM types, clouds with 8 flavors and limits,
// and VMs spread over clouds and groups in every state.
func benchSnapshot(idle, shapes, clouds, vms int) Snapshot {
	s := Snapshot{Now: t0, Config: DefaultConfig()}
	flavors := make([]protocol.Flavor, 0, 8)
	for i, c := range []int{1, 2, 4, 8, 16, 32, 48, 64} {
		flavors = append(flavors, protocol.Flavor{ID: fmt.Sprint(i), Name: fmt.Sprintf("c%d", c), VCPUs: c, RAMMiB: c * 4096, DiskGiB: c * 20})
	}
	for i := range clouds {
		c := Cloud{Site: fmt.Sprintf("site-%03d", i), Priority: i % 7, Connected: true, Flavors: flavors,
			Limits: protocol.Limits{MaxCores: 4000, MaxRAMMiB: 16 << 20, MaxInstances: 1000, UsedCores: 100, UsedRAMMiB: 400000, UsedInstances: 20},
			Caps:   Caps{Cores: 3000}, Endpoint: fmt.Sprintf("ep-%d", i/2)}
		if i%10 == 3 {
			c.Paused = true
		}
		s.Clouds = append(s.Clouds, c)
	}
	for i := range shapes {
		sh := Shape{Group: fmt.Sprintf("group-%d", i%10), VMType: []string{"default", "highmem"}[i%2],
			Cpus: 1 + i%8, MemoryMiB: 2048 * (1 + i%5), DiskKiB: int64(1+i%3) << 20}
		if i%9 == 4 {
			sh.Clouds = []string{s.Clouds[i%clouds].Site, s.Clouds[(i*7)%clouds].Site}
		}
		s.Shapes = append(s.Shapes, sh)
	}
	for i := range idle % shapes {
		s.Shapes[i].Idle++
	}
	for i := range s.Shapes {
		s.Shapes[i].Idle += idle / shapes
		s.Shapes[i].Running = 20
	}
	states := []VMState{VMBusy, VMBusy, VMBusy, VMBusy, VMBusy, VMBusy, VMBusy, VMIdle, VMIdle, VMStarting, VMBooting, VMRetiring, VMBusy, VMIdle, VMBusy, VMBusy, VMBusy, VMBusy, VMBusy, VMError}
	for i := range vms {
		cpus := []int{1, 2, 4, 8, 16}[i%5]
		vm := VM{ID: fmt.Sprintf("id-%d", i), Name: fmt.Sprintf("vm-%d", i), Site: s.Clouds[i%clouds].Site,
			Group: fmt.Sprintf("group-%d", i%10), VMType: []string{"default", "highmem"}[(i/10)%2], Cpus: cpus, MemoryMiB: cpus * 4096,
			State: states[i%len(states)], CreatedAt: t0.Add(-time.Duration(i%600) * time.Minute)}
		switch vm.State {
		case VMBusy:
			vm.RunningJobs = 1 + i%3
			if i%4 == 0 {
				vm.FreeCpus, vm.FreeMemoryMiB = 1, 4096
			}
		case VMIdle:
			vm.IdleSince = t0.Add(-time.Duration(i%20) * time.Minute)
		}
		s.VMs = append(s.VMs, vm)
	}
	return s
}

// benchDecide runs Decide and reports, besides wall time, the process's
// CPU time per plan (GC included): on a shared machine it is the steadier
// figure.
func benchDecide(b *testing.B, s Snapshot) {
	b.ReportAllocs()
	var p Plan
	cpu0 := cpuTime()
	for b.Loop() {
		p = Decide(s)
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	n := 0
	for _, bt := range p.Boots {
		n += bt.Count
	}
	b.ReportMetric(float64(n), "boots/plan")
}

// BenchmarkDecide measures the two reference cases: 300,000 idle jobs in 50
// and in 5,000 shapes, 100 clouds, 20,000 VMs.
func BenchmarkDecide(b *testing.B) {
	b.Run("shapes=50", func(b *testing.B) { benchDecide(b, benchSnapshot(300000, 50, 100, 20000)) })
	b.Run("shapes=5000", func(b *testing.B) { benchDecide(b, benchSnapshot(300000, 5000, 100, 20000)) })
}

// BenchmarkDecideScaling varies one dimension at a time from 50 shapes, 100
// clouds, 2,000 VMs and 300,000 idle jobs.
func BenchmarkDecideScaling(b *testing.B) {
	for _, n := range []int{3000, 300000, 30000000} {
		b.Run(fmt.Sprintf("jobs=%d", n), func(b *testing.B) { benchDecide(b, benchSnapshot(n, 50, 100, 2000)) })
	}
	for _, n := range []int{50, 500, 5000} {
		b.Run(fmt.Sprintf("shapes=%d", n), func(b *testing.B) { benchDecide(b, benchSnapshot(300000, n, 100, 2000)) })
	}
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("clouds=%d", n), func(b *testing.B) { benchDecide(b, benchSnapshot(300000, 50, n, 2000)) })
	}
	for _, n := range []int{2000, 20000, 200000} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) { benchDecide(b, benchSnapshot(300000, 50, 100, n)) })
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// treeSnapshot is benchSnapshot's 300,000 jobs, 50 shapes, 100 clouds and
// 20,000 VMs spread over 50 groups: as a 3-level quota tree (2 experiments,
// 8 activities, 40 subgroups; quotas in HS06 and servers, some subgroups
// not borrowing) with every cloud's flavors rated in HS06 and a fifth of
// the shapes asking a minimum rating, or, for the baseline, the same 50
// groups flat, without ratings.
func treeSnapshot(tree bool) Snapshot {
	s := benchSnapshot(300000, 50, 100, 20000)
	leaf := func(i int) string { return fmt.Sprintf("sub-%02d", i%40) }
	for i := range s.Shapes {
		s.Shapes[i].Group = leaf(i)
	}
	for i := range s.VMs {
		s.VMs[i].Group = leaf(i)
		s.VMs[i].Flavor = fmt.Sprintf("c%d", s.VMs[i].Cpus)
	}
	if !tree {
		for i := range 50 {
			s.Groups = append(s.Groups, Group{Name: fmt.Sprintf("flat-%02d", i), Caps: Caps{VMs: 2000}})
		}
		return s
	}
	for i := range 2 {
		s.Groups = append(s.Groups, Group{Name: fmt.Sprintf("exp-%d", i), Caps: Caps{HS06: 1_500_000, VMs: 12000}})
	}
	for i := range 8 {
		s.Groups = append(s.Groups, Group{Name: fmt.Sprintf("act-%d", i), Parent: fmt.Sprintf("exp-%d", i%2),
			Caps: Caps{HS06: 400_000}})
	}
	for i := range 40 {
		s.Groups = append(s.Groups, Group{Name: leaf(i), Parent: fmt.Sprintf("act-%d", i%8),
			Caps: Caps{HS06: 80_000, VMs: 600}, NoBorrow: i%5 == 0})
	}
	for ci := range s.Clouds {
		c := &s.Clouds[ci]
		c.HS06Default = 8 + float64(ci%5)
		c.HS06PerCore = map[string]float64{"c32": 12.5, "c64": 14}
	}
	for i := range s.Shapes {
		if i%5 == 0 {
			s.Shapes[i].MinHS06PerCore = 10
		}
	}
	return s
}

// BenchmarkDecideResources sets the quota tree with HS06 ratings beside
// the flat baseline, at 300,000 jobs, 100 clouds, 20,000 VMs, 50 groups.
func BenchmarkDecideResources(b *testing.B) {
	b.Run("flat", func(b *testing.B) { benchDecide(b, treeSnapshot(false)) })
	b.Run("tree3+hs06", func(b *testing.B) { benchDecide(b, treeSnapshot(true)) })
}
