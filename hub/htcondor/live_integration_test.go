//go:build integration

package htcondor_test

// Tests against the live HTCondor test pool (deploy/testbed/htcondor/up.sh),
// run as root:
//
//	go test -tags integration -count=1 -p 1 -v ./hub/htcondor/

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/hub/htcondor/condorfake"
	"github.com/canopy-grid/canopy/internal/condortest"
)

// liveConfig is the hub's htcondor section for the test pool, as
// deploy/htcondor/README.md documents it: only bin_dir is given (sbin_dir,
// where condor_advertise is, is its sibling). With a fence, the VM types'
// machine ad carries CanopyTestFence = fence (see fenceRequirements).
func liveConfig(p *condortest.Pool, fence string) htcondor.Config {
	c := htcondor.Config{
		Pool:           p.Collector,
		BinDir:         p.BinDir,
		CommandTimeout: time.Minute,
		VMTypes:        []htcondor.VMTypeConfig{{Name: "el9"}, {Name: "el8"}},
	}
	if fence != "" {
		c.MachineAd = map[string]string{"CanopyTestFence": strconv.Quote(fence)}
	}
	return c
}

// fenceRequirements is a submit line that keeps a test's jobs off every
// worker but the test's own (which advertises CanopyTestFence, see
// fenceConfig): other work on the machine may run workers in the same test
// pool, and they must not run (or count as running) this test's jobs. The
// hub's VM types carry the fence too (liveConfig), so shapes are as
// without it.
func fenceRequirements(fence string) string {
	return fmt.Sprintf("requirements = (TARGET.CanopyTestFence =?= %q)\n", fence)
}

// fenceConfig is the worker config that advertises fence.
func fenceConfig(fence string) string {
	return fmt.Sprintf("CanopyTestFence = %q\nSTARTD_ATTRS = $(STARTD_ATTRS) CanopyTestFence\n", fence)
}

// vmConfigDir writes what vmagent would advertise for a VM (vmagent/condor.go).
func vmConfigDir(t *testing.T, vmName, group, vmType string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`CanopyVMID = "00000000-0000-4000-8000-%012d"
CanopyVMName = %q
CanopySite = "live"
CanopyGroup = %q
VMType = %q
STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType
START = (TARGET.CanopyGroup =?= MY.CanopyGroup) || (TARGET.AcctGroup =?= MY.CanopyGroup)
NUM_SLOTS = 1
NUM_SLOTS_TYPE_1 = 1
SLOT_TYPE_1 = 100%%
SLOT_TYPE_1_PARTITIONABLE = True
%s`, len(vmName), vmName, group, vmType, extra)
	if err := os.WriteFile(filepath.Join(dir, "50-canopy.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The worker's config dir is read by its master, as root: t.TempDir
	// is private to root, which is fine.
	return dir
}

// TestLiveInvalidate: a VM that vanished (killed, its ads left in the
// collector) is forgotten at once by Invalidate, which runs
// condor_advertise from sbin with the documented bin_dir-only config and
// is allowed to by the documented ALLOW_ADVERTISE_* lines.
func TestLiveInvalidate(t *testing.T) {
	p := condortest.Load(t)
	t.Setenv("CONDOR_CONFIG", p.Config)
	const vm = "canopy-live-inv-1"
	w := p.StartWorker(t, condortest.WorkerOptions{Hostname: "liveinv1", Token: p.Token(t, "condor@"+p.TrustDomain, nil, time.Hour),
		ConfigDir: vmConfigDir(t, vm, "atlas", "el9", "")})
	w.WaitSlots(t, 60*time.Second)

	cfg := liveConfig(p, "")
	src, err := htcondor.New(cfg, cfg.Runner(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := src.Poll(ctx, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Machines[vm]; !ok {
		t.Fatalf("poll saw machines %v, not %s", d.Machines, vm)
	}

	// The slot ad, the startd's daemon ad (MyType "StartD") and the
	// master's: a killed worker leaves all three.
	ads := func() []condortest.Ad {
		return p.Query(t, "condor_status", "-any", "-constraint", `Machine == "liveinv1"`, "-attributes", "MyType,Name")
	}
	types := func(got []condortest.Ad) string {
		var out []string
		for _, a := range got {
			out = append(out, a.String("MyType"))
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	const all = "DaemonMaster,Machine,StartD"
	condortest.Eventually(t, 30*time.Second, 250*time.Millisecond, "the worker's slot, startd and master ads", func() (bool, error) {
		return types(ads()) == all, nil
	})
	w.Kill(t)
	if got := types(ads()); got != all {
		t.Fatalf("after the kill the collector should still hold the slot, startd and master ads: %v", got)
	}
	start := time.Now()
	if err := src.Invalidate(ctx, vm); err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	if got := ads(); len(got) != 0 {
		t.Fatalf("after Invalidate the collector still holds %v", got)
	}
	t.Logf("slot, startd and master ads invalidated in %s", time.Since(start).Round(time.Millisecond))
}

// recordDir is where live tests save what the tools printed, as
// recordings for the replaying tests (testdata/recorded), when
// CANOPY_HTCONDOR_RECORD names a directory.
func recordDir() string { return os.Getenv("CANOPY_HTCONDOR_RECORD") }

// liveShapes are the jobs TestLiveAutocluster submits: submit text per
// batch.
var liveShapes = []struct{ name, submit string }{
	{"atlas el9 small, idle", `+CanopyGroup = "atlas"
+VMType = "el9"
request_cpus = 1
request_memory = 512
request_disk = 1048576
queue 5`},
	{"atlas el9 small, running on the worker", `+CanopyGroup = "atlas"
+VMType = "el9"
+LiveRun = true
request_cpus = 1
request_memory = 512
request_disk = 1048576
queue 2`},
	{"cms, no VM type, two clouds", `+CanopyGroup = "cms"
+TargetClouds = "west,east"
request_cpus = 2
request_memory = 2048
request_disk = 2097152
queue 3`},
	{"atlas, default memory and disk expressions", `+CanopyGroup = "atlas"
queue 2`},
	{"lhcb by accounting group, keep-alive", `accounting_group = lhcb
+VMKeepAlive = 30
request_cpus = 4
request_memory = 8192
queue 3`},
	{"unknown VM type: unmatchable", `+CanopyGroup = "atlas"
+VMType = "nosuchtype"
queue 2`},
	{"held: not demand", `+CanopyGroup = "atlas"
+VMType = "el9"
hold = true
queue 2`},
}

// TestLiveAutocluster: on a queue of several shapes (idle, running on a
// worker, unmatchable, held), the autocluster query gives the same shapes
// and counts as reading every job, and both are right.
func TestLiveAutocluster(t *testing.T) {
	p := condortest.Load(t)
	t.Setenv("CONDOR_CONFIG", p.Config)
	const fence = "canopy-live-autocluster"
	w := p.StartWorker(t, condortest.WorkerOptions{Hostname: "liveac1", Token: p.Token(t, "condor@"+p.TrustDomain, nil, time.Hour),
		Cpus: 2, MemoryMiB: 2048, ConfigDir: vmConfigDir(t, "canopy-live-ac-1", "atlas", "el9", fenceConfig(fence)+"START = (TARGET.LiveRun =?= true)\n")})
	w.WaitSlots(t, 60*time.Second)
	dir := p.JobDir(t)
	var clusters []string
	for _, sh := range liveShapes {
		c := p.SubmitIn(t, dir, "executable = /bin/sleep\narguments = 600\nshould_transfer_files = YES\n"+fenceRequirements(fence)+sh.submit+"\n")
		clusters = append(clusters, fmt.Sprintf("ClusterId == %d", c))
	}
	mine := "(" + strings.Join(clusters, " || ") + ")"
	condortest.Eventually(t, 90*time.Second, 500*time.Millisecond, "two jobs running on the worker", func() (bool, error) {
		ads, err := p.QueryErr("condor_q", "-allusers", "-constraint", "JobStatus == 2 && "+mine, "-attributes", "ProcId")
		return len(ads) == 2, err
	})

	read := func(query string) (htcondor.Status, *condorfake.Recorder, *htcondor.Source) {
		cfg := liveConfig(p, fence)
		cfg.DemandQuery = query
		rec := &condorfake.Recorder{Runner: cfg.Runner()}
		src, err := htcondor.New(cfg, rec, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		d, err := src.Poll(context.Background(), time.Now(), nil)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if !d.Fresh() {
			t.Fatalf("%s: stale %v", query, d.Stale())
		}
		return src.Status(), rec, src
	}
	auto, autoRec, autoSrc := read(htcondor.QueryAutocluster)
	jobs, jobsRec, jobsSrc := read(htcondor.QueryJobs)
	if q := auto.Schedds[0].Query; q != htcondor.QueryAutocluster || auto.Schedds[0].Groups == 0 {
		t.Fatalf("autocluster source read its schedd with %q (%d groups): %+v", q, auto.Schedds[0].Groups, auto.Schedds[0])
	}
	if !reflect.DeepEqual(auto.Shapes, jobs.Shapes) {
		t.Errorf("shapes differ:\nautocluster %+v\njobs        %+v", auto.Shapes, jobs.Shapes)
	}
	if !reflect.DeepEqual(auto.Unmatchable, jobs.Unmatchable) {
		t.Errorf("unmatchable differ:\nautocluster %+v\njobs        %+v", auto.Unmatchable, jobs.Unmatchable)
	}
	want := map[string][2]int{ // group/VM type/cpus/MiB -> idle, running
		"atlas/el9/1/512": {5, 2}, "cms/el9/2/2048": {3, 0}, "lhcb/el9/4/8192": {3, 0},
	}
	got := map[string][2]int{}
	for _, sh := range auto.Shapes {
		k := fmt.Sprintf("%s/%s/%d/%d", sh.Group, sh.VMType, sh.Cpus, sh.MemoryMiB)
		c := got[k]
		got[k] = [2]int{c[0] + sh.Idle, c[1] + sh.Running}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("shape %s: idle, running = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	idle, running := 0, 0
	for _, sh := range auto.Shapes {
		idle += sh.Idle
		running += sh.Running
	}
	if idle != 5+3+2+3 || running != 2 {
		t.Errorf("%d idle and %d running in shapes, want 13 and 2", idle, running)
	}
	if len(auto.Unmatchable) != 1 || auto.Unmatchable[0].Idle != 2 || !strings.Contains(auto.Unmatchable[0].Reason, "nosuchtype") {
		t.Errorf("unmatchable %+v", auto.Unmatchable)
	}
	t.Logf("autocluster: %d group rows, %s; jobs: %d job ads, %s", auto.Schedds[0].Groups, auto.Schedds[0].Took.Round(time.Millisecond),
		jobs.Schedds[0].Idle+jobs.Schedds[0].Running, jobs.Schedds[0].Took.Round(time.Millisecond))

	if dir := recordDir(); dir != "" {
		save := func(name string, r *condorfake.Recorder, cmd htcondor.Cmd) {
			rec, ok := r.Last(cmd.String())
			if !ok {
				t.Fatalf("no recording of %s", cmd)
			}
			if err := condorfake.Save(dir, name, rec); err != nil {
				t.Fatal(err)
			}
		}
		save("80_live_condor_q-group-by", autoRec, autoSrc.GroupsCommand(""))
		save("80_live_condor_q-json_jobs", jobsRec, jobsSrc.QueueCommand(""))
		save("80_live_condor_status-json_slots", jobsRec, jobsSrc.SlotsCommand())
		// What the schedd's default autoclusters say of the same queue.
		out, err := p.RunErr("condor_q", "-pool", p.Collector, "-allusers", "-autocluster", "-json")
		if err != nil {
			t.Fatal(err)
		}
		if err := condorfake.Save(dir, "80_live_condor_q-autocluster_default", condorfake.Recording{
			Command: "condor_q -pool " + p.Collector + " -allusers -autocluster -json", Stdout: out}); err != nil {
			t.Fatal(err)
		}
		t.Logf("recordings saved in %s", dir)
	}
}
