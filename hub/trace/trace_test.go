package trace

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
)

func workload() Workload {
	return Workload{Jobs: []JobSpec{
		{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 1000, Arrivals: []Arrival{{At: 0, Count: 3, Runtime: 10 * time.Second}, {At: 20 * time.Second, Count: 1, Runtime: 5 * time.Second}}},
		{Group: "belle", VMType: "el9", Cpus: 2, MemoryMiB: 1000, Clouds: []string{"east"}, Arrivals: []Arrival{{At: 0, Count: 1, Runtime: 10 * time.Second}}},
	}}
}

func TestSimulatedPool(t *testing.T) {
	s, err := New(workload(), 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	vm := func(name, site, group string, ready, retiring bool) demand.PoolVM {
		return demand.PoolVM{Name: name, Site: site, Group: group, VMType: "el9", Cpus: 2, MemoryMiB: 4000, Ready: ready, Retiring: retiring}
	}

	// No VMs: everything arrived at 0 is idle.
	d, _ := s.Poll(ctx, t0, nil)
	if idle(d, "atlas") != 3 || idle(d, "belle") != 1 {
		t.Fatalf("t0 shapes %+v", d.Shapes)
	}
	// A ready atlas VM with 2 cores takes 2 jobs; a VM not ready takes none;
	// a belle VM on west may not take belle jobs (they target east).
	pool := []demand.PoolVM{vm("a1", "west", "atlas", true, false), vm("a2", "west", "atlas", false, false), vm("b1", "west", "belle", true, false)}
	d, _ = s.Poll(ctx, t0.Add(time.Second), pool)
	if idle(d, "atlas") != 1 || running(d, "atlas") != 2 || idle(d, "belle") != 1 {
		t.Fatalf("t1 shapes %+v", d.Shapes)
	}
	if m := d.Machines["a1"]; m.State != demand.MachineBusy || m.RunningJobs != 2 || m.JobsStarted != 2 {
		t.Fatalf("a1 = %+v", m)
	}
	if m := d.Machines["b1"]; m.State != demand.MachineIdle || m.IdleSince.IsZero() {
		t.Fatalf("b1 = %+v", m)
	}
	// After the run time the jobs finish and a1 takes the last one.
	d, _ = s.Poll(ctx, t0.Add(12*time.Second), pool)
	if d.Finished != 2 || running(d, "atlas") != 1 || idle(d, "atlas") != 0 {
		t.Fatalf("t12 finished=%d shapes %+v", d.Finished, d.Shapes)
	}
	// A retiring VM is draining and takes nothing new; removing a VM
	// returns its running jobs to the queue.
	pool[0].Retiring = true
	d, _ = s.Poll(ctx, t0.Add(13*time.Second), pool)
	if d.Machines["a1"].State != demand.MachineDraining {
		t.Fatalf("a1 = %+v", d.Machines["a1"])
	}
	d, _ = s.Poll(ctx, t0.Add(14*time.Second), pool[1:])
	if idle(d, "atlas") != 1 || running(d, "atlas") != 0 {
		t.Fatalf("evicted job not requeued: %+v", d.Shapes)
	}
	if s.Done() {
		t.Fatal("Done with jobs left")
	}
}

func TestTimeScale(t *testing.T) {
	s, _ := New(workload(), 10)
	t0 := time.Unix(0, 0)
	s.Poll(context.Background(), t0, nil)
	// 2 real seconds at scale 10 are 20 trace seconds: the second batch arrived.
	d, _ := s.Poll(context.Background(), t0.Add(2*time.Second), nil)
	if idle(d, "atlas") != 4 {
		t.Fatalf("shapes %+v", d.Shapes)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"no jobs":       "jobs: []\n",
		"missing group": "jobs: [{vm_type: x, cpus: 1, memory_mib: 1}]\n",
		"zero cpus":     "jobs: [{group: g, vm_type: x, cpus: 0, memory_mib: 1}]\n",
		"bad count":     "jobs: [{group: g, vm_type: x, cpus: 1, memory_mib: 1, arrivals: [{at: 0s, count: 0, runtime: 1s}]}]\n",
		"unknown key":   "jobs: [{group: g, vm_typo: x}]\n",
		"bad duration":  "jobs: [{group: g, vm_type: x, cpus: 1, memory_mib: 1, arrivals: [{at: soon, count: 1, runtime: 1s}]}]\n",
		"empty outage":  "jobs: [{group: g, vm_type: x, cpus: 1, memory_mib: 1}]\npool_outages: [{at: 1m, for: 0s}]\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
			if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(p); err == nil {
				t.Fatal("loaded a bad workload")
			}
		})
	}
}

// TestPoolOutage: while the collector is out the pool view is empty, not
// failed; running jobs go on and nothing new starts; then all is back.
func TestPoolOutage(t *testing.T) {
	w := Workload{Jobs: []JobSpec{{Group: "atlas", VMType: "el9", Cpus: 1, MemoryMiB: 1000,
		Arrivals: []Arrival{{At: 0, Count: 3, Runtime: time.Minute}}}},
		PoolOutages: []PoolOutage{{At: 5 * time.Second, For: 15 * time.Second}}}
	s, err := New(w, 1)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a1 := demand.PoolVM{Name: "a1", Site: "west", Group: "atlas", VMType: "el9", Cpus: 2, MemoryMiB: 4000, Ready: true}
	a2 := a1
	a2.Name = "a2"
	steps := []struct {
		at            time.Duration
		pool          []demand.PoolVM
		machines      int
		idle, running int
	}{
		{0, []demand.PoolVM{a1}, 1, 1, 2},
		{10 * time.Second, []demand.PoolVM{a1, a2}, 0, 1, 2}, // out: a2 takes nothing
		{19 * time.Second, []demand.PoolVM{a1, a2}, 0, 1, 2},
		{20 * time.Second, []demand.PoolVM{a1, a2}, 2, 0, 3},
	}
	for _, st := range steps {
		d, err := s.Poll(context.Background(), t0.Add(st.at), st.pool)
		if err != nil {
			t.Fatal(err)
		}
		if d.Machines == nil || len(d.Machines) != st.machines || d.PoolErr != "" || idle(d, "atlas") != st.idle || running(d, "atlas") != st.running {
			t.Fatalf("at %s: %d machines (err %q), %d idle, %d running; want %d, %d, %d",
				st.at, len(d.Machines), d.PoolErr, idle(d, "atlas"), running(d, "atlas"), st.machines, st.idle, st.running)
		}
	}
}

// TestFreeWhereIdleJobsFit: a machine's free part is shown only where an
// idle job of its group and VM type, allowed on its site, would fit.
func TestFreeWhereIdleJobsFit(t *testing.T) {
	s, err := New(workload(), 1)
	if err != nil {
		t.Fatal(err)
	}
	s.Poll(context.Background(), time.Unix(0, 0), nil) // all jobs idle
	vm := func(group, site string) demand.PoolVM {
		return demand.PoolVM{Name: "x", Site: site, Group: group, VMType: "el9"}
	}
	for _, tc := range []struct {
		name      string
		p         demand.PoolVM
		cpus, mem int
		want      bool
	}{
		{"atlas job fits", vm("atlas", "west"), 1, 1000, true},
		{"too little memory", vm("atlas", "west"), 1, 999, false},
		{"other VM type", demand.PoolVM{Group: "atlas", VMType: "el8"}, 4, 4000, false},
		{"belle only on east", vm("belle", "west"), 2, 1000, false},
		{"belle on east", vm("belle", "east"), 2, 1000, true},
	} {
		if got := s.takesIdle(tc.p, tc.cpus, tc.mem); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

func TestBundledTraceLoads(t *testing.T) {
	w, err := Load("../../deploy/traces/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if w.Total() == 0 {
		t.Fatal("empty demo trace")
	}
}

func idle(d demand.Demand, group string) int {
	n := 0
	for _, sh := range d.Shapes {
		if sh.Group == group {
			n += sh.Idle
		}
	}
	return n
}

func running(d demand.Demand, group string) int {
	n := 0
	for _, sh := range d.Shapes {
		if sh.Group == group {
			n += sh.Running
		}
	}
	return n
}
