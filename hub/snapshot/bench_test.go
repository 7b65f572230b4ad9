package snapshot

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
)

// benchInput builds an input of clouds × vms Canopy VMs (spread evenly),
// most in the pool (busy or idle), some starting, booting, in error or
// told to retire, all with fresh check-ins, and a few foreign servers.
func benchInput(clouds, vms int) Input {
	in := Input{Now: t0, HubID: hubID, Config: planner.DefaultConfig(), DemandOK: true, Intent: intent.New(),
		Demand: demand.Demand{Machines: make(map[string]demand.Machine, vms),
			Shapes: []planner.Shape{{Group: "g0", VMType: "el9", Cpus: 1, MemoryMiB: 2048, Idle: 300000, Running: vms}}}}
	flavors := []protocol.Flavor{{Name: "c1", VCPUs: 1, RAMMiB: 2048}, {Name: "c4", VCPUs: 4, RAMMiB: 8192},
		{Name: "c8", VCPUs: 8, RAMMiB: 16384}, {Name: "c16", VCPUs: 16, RAMMiB: 32768}}
	for c := range clouds {
		inv := &protocol.Inventory{Flavors: flavors, Limits: protocol.Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: -1}, TakenAt: t0}
		for i := c; i < vms; i += clouds {
			v := protocol.VM{ID: fmt.Sprintf("id-%d", i), Name: fmt.Sprintf("vm-%d", i), Flavor: flavors[i%4].Name,
				Group: fmt.Sprintf("g%d", i%10), VMType: "el9", State: protocol.VMActive, Hub: hubID, Ready: true,
				ReadyAt: t0.Add(-time.Hour), CreatedAt: t0.Add(-2 * time.Hour),
				Jobs: &protocol.VMJobs{Running: i % 3, Claimed: i % 3, At: t0.Add(-5 * time.Second)}}
			switch i % 20 {
			case 17:
				v.State, v.Ready, v.Jobs = protocol.VMBooting, false, nil
			case 18:
				v.Ready, v.Jobs = false, nil
			case 19:
				v.State, v.Jobs = protocol.VMError, nil
			default:
				in.Demand.Machines[v.Name] = demand.Machine{VMName: v.Name, RunningJobs: i % 3, JobsStarted: 1, IdleSince: t0.Add(-time.Minute)}
			}
			if i%50 == 3 {
				in.Intent.Retire[v.ID] = intent.RetireOrder{VMID: v.ID, At: t0.Add(-time.Hour)}
			}
			inv.VMs = append(inv.VMs, v)
		}
		inv.VMs = append(inv.VMs, protocol.VM{ID: fmt.Sprintf("f-%d", c), Name: "foreign", Flavor: "c4", Foreign: true})
		in.Clouds = append(in.Clouds, Cloud{Settings: planner.Cloud{Site: fmt.Sprintf("site-%03d", c)}, Connected: true,
			Inventory: inv, InventoryAt: t0})
	}
	return in
}

// BenchmarkBuild builds the snapshot of 100 clouds with 20,000 VMs, as the
// hub does every cycle (the clock moves 10 s a build). Besides wall time
// it reports the process's CPU time per build, the steadier figure on a
// shared machine.
func BenchmarkBuild(b *testing.B) {
	in := benchInput(100, 20000)
	bl := NewBuilder()
	bl.Build(in)
	b.ReportAllocs()
	cpu0 := cpuTime()
	defer func() { b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op") }()
	for b.Loop() {
		in.Now = in.Now.Add(10 * time.Second)
		for i := range in.Clouds {
			in.Clouds[i].InventoryAt = in.Now
		}
		s, r := bl.Build(in)
		if len(s.VMs) != 20000 || r.PoolView != PoolOK || r.Counts.Unknown != 0 {
			b.Fatalf("%d VMs, view %s, counts %+v", len(s.VMs), r.PoolView, r.Counts)
		}
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
