package planner

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// testFlavors are four sizes: 1, 2, 4 and 8 cores with 2 GiB per core.
func testFlavors() []protocol.Flavor {
	return []protocol.Flavor{
		{ID: "f8", Name: "c8m16", VCPUs: 8, RAMMiB: 16384, DiskGiB: 80},
		{ID: "f1", Name: "c1m2", VCPUs: 1, RAMMiB: 2048, DiskGiB: 10},
		{ID: "f4", Name: "c4m8", VCPUs: 4, RAMMiB: 8192, DiskGiB: 40},
		{ID: "f2", Name: "c2m4", VCPUs: 2, RAMMiB: 4096, DiskGiB: 20},
	}
}

var noLimits = protocol.Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: -1}

func testCloud(site string, prio int) Cloud {
	return Cloud{Site: site, Priority: prio, Connected: true, Flavors: testFlavors(), Limits: noLimits}
}

func testShape(group string, cpus, idle int) Shape {
	return Shape{Group: group, VMType: "default", Cpus: cpus, MemoryMiB: 2048 * cpus, Idle: idle}
}

func testVM(id, site, group string, state VMState, cpus int) VM {
	vm := VM{ID: id, Name: "vm-" + id, Site: site, Group: group, VMType: "default", Cpus: cpus, MemoryMiB: 2048 * cpus,
		State: state, CreatedAt: t0.Add(-time.Hour)}
	switch state {
	case VMIdle:
		vm.IdleSince = t0.Add(-time.Minute)
		vm.RegisteredAt = t0.Add(-50 * time.Minute)
		vm.JobsStarted = 1
	case VMBusy:
		vm.RunningJobs = 1
		vm.RegisteredAt = t0.Add(-50 * time.Minute)
		vm.JobsStarted = 1
	}
	return vm
}

func snap(clouds []Cloud, shapes []Shape, vms []VM) Snapshot {
	return Snapshot{Now: t0, Clouds: clouds, Shapes: shapes, VMs: vms, Config: DefaultConfig()}
}

// bootSummary is "site/group/flavor×count ..." in plan order.
func bootSummary(p Plan) string {
	var parts []string
	for _, b := range p.Boots {
		parts = append(parts, fmt.Sprintf("%s/%s/%s×%d", b.Site, b.Group, b.Flavor, b.Count))
	}
	return strings.Join(parts, " ")
}

// actionSummary is "rule:vmid ..." for retirements then deletions.
func actionSummary(p Plan) string {
	var parts []string
	for _, r := range p.Retires {
		parts = append(parts, fmt.Sprintf("retire:%s:%s", r.Rule, r.VMID))
	}
	for _, d := range p.Deletes {
		parts = append(parts, fmt.Sprintf("delete:%s:%s", d.Rule, d.VMID))
	}
	return strings.Join(parts, " ")
}

func notesText(p Plan) string {
	var parts []string
	for _, n := range p.Notes {
		parts = append(parts, n.Reason)
	}
	return strings.Join(parts, "\n")
}

func checkPlan(t *testing.T, p Plan, boots, actions string, noteWants ...string) {
	t.Helper()
	if got := bootSummary(p); got != boots {
		t.Errorf("boots = %q, want %q", got, boots)
	}
	if got := actionSummary(p); got != actions {
		t.Errorf("retires/deletes = %q, want %q", got, actions)
	}
	notes := notesText(p)
	for _, w := range noteWants {
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %q; notes:\n%s", w, notes)
		}
	}
}
