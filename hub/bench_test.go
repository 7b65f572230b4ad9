package hub

import (
	"fmt"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
)

// BenchmarkCycle is one control cycle at 100 clouds × 200 VMs (20,000
// busy VMs) and 300,000 idle jobs in four shapes: reconcile, build the
// snapshot, plan, save and publish the status.
func BenchmarkCycle(b *testing.B) {
	src := &scriptedSource{d: demand.Demand{Machines: map[string]demand.Machine{}, Shapes: []planner.Shape{
		{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 2000, Idle: 120000, Running: 60000},
		{Group: "atlas", VMType: "el9", Cpus: 8, MemoryMiB: 16000, Idle: 30000, Running: 2000},
		{Group: "belle", VMType: "el9", Cpus: 2, MemoryMiB: 4000, Idle: 90000, Running: 20000},
		{Group: "canfar", VMType: "el9", Cpus: 4, MemoryMiB: 8000, Idle: 60000, Running: 10000},
	}}}
	e := newEnv(&testing.T{}, src)
	groups := []string{"atlas", "belle", "canfar"}
	for c := range 100 {
		cloud := fmt.Sprintf("c%03d", c)
		vms := make([]protocol.VM, 0, 200)
		for i := range 200 {
			name := fmt.Sprintf("canopy-%s-p0-0-%d", cloud, i)
			vms = append(vms, vm(fmt.Sprintf("%s-id-%d", cloud, i), name, readySince(e.now.Add(-time.Hour)), func(v *protocol.VM) {
				v.Group, v.Flavor, v.CreatedAt = groups[i%3], "c2", e.now.Add(-time.Hour)
			}))
			src.d.Machines[name] = demand.Machine{VMName: name, State: demand.MachineBusy, RunningJobs: 2, JobsStarted: 5}
		}
		e.connect(cloud, vms...)
	}
	e.cycle()
	for b.Loop() {
		e.advance(10 * time.Second)
		e.cycle()
	}
}
