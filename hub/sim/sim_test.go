package sim

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/snapshot"
)

func loadTrace(t *testing.T, path string) *Trace {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr, err := ParseTrace(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return tr
}

// TestShortTrace runs the short trace and checks the summary's invariants:
// every job finishes, no plan breaks a limit or boots where it must not,
// the failures injected were met and absorbed, and the figures add up.
func TestShortTrace(t *testing.T) {
	tr := loadTrace(t, "testdata/short.trace")
	sum, err := Run(tr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := sum.WriteTable(&out, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("summary:\n%s", out.String())

	if sum.Violations != 0 {
		t.Errorf("%d violations: %v", sum.Violations, sum.FirstViolations)
	}
	if !sum.AllFinished() {
		t.Errorf("jobs left: %+v", sum.Jobs)
	}
	if sum.Jobs.Submitted != 11*60+500+4*20+5 {
		t.Errorf("submitted %d jobs", sum.Jobs.Submitted)
	}
	if sum.Jobs.Started != sum.Jobs.Finished+sum.Failures.KilledJobs {
		t.Errorf("started %d, finished %d, killed %d", sum.Jobs.Started, sum.Jobs.Finished, sum.Failures.KilledJobs)
	}
	byCloud := map[string]CloudStats{}
	boots := 0
	for _, c := range sum.Clouds {
		byCloud[c.Site] = c
		boots += c.Boots
		perGroup := 0
		for _, n := range c.BootsByGroup {
			perGroup += n
		}
		if perGroup != c.Boots {
			t.Errorf("%s: %d boots, %d by group", c.Site, c.Boots, perGroup)
		}
	}
	if m := sum.Means(); m.Boots != boots {
		t.Errorf("boots per day add up to %d, per cloud to %d", m.Boots, boots)
	}
	// Boots only on allowed clouds: calib may use west and north only.
	if n := byCloud["east"].BootsByGroup["calib"]; n != 0 {
		t.Errorf("calib booted %d VMs on east, outside its clouds", n)
	}
	if byCloud["west"].BootsByGroup["calib"]+byCloud["north"].BootsByGroup["calib"] == 0 {
		t.Error("calib booted nothing")
	}
	// The failures injected on east were met and absorbed elsewhere.
	east := byCloud["east"]
	if east.BootFailures == 0 || east.BackoffSteps == 0 || east.FrozenSteps == 0 || east.NeverRegistered == 0 {
		t.Errorf("east absorbed no failures: %+v", east)
	}
	if byCloud["north"].BootFailures == 0 {
		t.Error("the bad image never failed on north")
	}
	if sum.Steps == 0 || sum.Elapsed != time.Duration(sum.Steps)*time.Minute {
		t.Errorf("steps %d, elapsed %s", sum.Steps, sum.Elapsed)
	}
}

func TestRunIsDeterministic(t *testing.T) {
	tr := loadTrace(t, "testdata/short.trace")
	a, err := Run(tr, Options{Duration: 4 * time.Hour, NoDrain: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(tr, Options{Duration: 4 * time.Hour, NoDrain: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same trace and seed, different summaries:\n%+v\n%+v", a, b)
	}
	c, err := Run(tr, Options{Duration: 4 * time.Hour, NoDrain: true, Seed: 99})
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a.Clouds, c.Clouds) {
		t.Error("another seed gave the very same clouds' figures")
	}
	if c.Seed != 99 || a.Seed != 7 {
		t.Errorf("seeds %d and %d", a.Seed, c.Seed)
	}
}

// TestBundledTraces parses every bundled trace and runs its first hours:
// the traces stay valid and their plans within limits.
func TestBundledTraces(t *testing.T) {
	paths, err := filepath.Glob("../../deploy/traces/*.trace")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 2 {
		t.Fatalf("bundled traces: %v", paths)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			tr := loadTrace(t, path)
			sum, err := Run(tr, Options{Duration: 90 * time.Minute, NoDrain: true})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Violations != 0 {
				t.Errorf("%d violations: %v", sum.Violations, sum.FirstViolations)
			}
			if sum.Means().Boots == 0 || sum.Jobs.Started == 0 {
				t.Errorf("nothing happened: %+v", sum.Jobs)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	var h waitHist
	h.add(time.Minute, 50)
	h.add(10*time.Minute, 45)
	h.add(time.Hour, 5)
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, time.Minute}, {0.51, 10 * time.Minute}, {0.95, 10 * time.Minute}, {0.96, time.Hour}, {1, time.Hour}} {
		if got := h.quantile(tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %s, want %s", tc.q, got, tc.want)
		}
	}
	if got := (waitHist{}).quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %s", got)
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0", 45 * time.Second: "45s", 90 * time.Minute: "1h30m", 26 * time.Hour: "1d2h", 2 * time.Hour: "2h", time.Millisecond: "0",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// outageTrace runs 60 short jobs; the collector then lists no machine for
// 5 minutes while jobs go on and end, and some VMs sit idle past their
// keep-alive; more jobs come after.
const outageTrace = `sim start=2025-03-01T00:00:00Z duration=2h step=1m seed=3 drain=1d
config keep_alive=10m max_boots_per_cloud=20
flavor name=c4 cpus=4 memory_mib=16384
cloud site=west cores=400 boot=1m..2m register=1m..2m
cloud site=east priority=1 cores=400 boot=1m..2m register=1m..2m
jobs at=0 count=60 group=astro cpus=1 memory_mib=2048 run=8m..40m
jobs at=50m count=6 group=astro cpus=1 memory_mib=2048 run=5m..10m
event at=35m pool_outage=5m
`

// TestPoolOutage: an empty pool view for 5 minutes of simulated time makes
// no retirement, deletion or boot (the VMs are unknown, not idle, and their
// capacity is not booted for again), and the run still finishes its jobs.
func TestPoolOutage(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader(outageTrace))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(tr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	from, to := tr.Start.Add(35*time.Minute), tr.Start.Add(40*time.Minute)
	outSteps, hidden := 0, 0
	for more := true; more; {
		var p planPart
		p.plan, p.rep, more = e.step()
		if e.now.Before(from) || !e.now.Before(to) {
			continue
		}
		outSteps++
		if p.rep.PoolView != snapshot.PoolImplausible || p.rep.Counts.Registered != 0 {
			t.Errorf("%s: pool view %s (%s), counts %+v", e.now.Format("15:04"), p.rep.PoolView, p.rep.PoolReason, p.rep.Counts)
		}
		if n := len(p.plan.Retires) + len(p.plan.Deletes) + len(p.plan.Boots); n != 0 {
			t.Errorf("%s: during the outage, retires %+v deletes %+v boots %+v", e.now.Format("15:04"), p.plan.Retires, p.plan.Deletes, p.plan.Boots)
		}
		for _, vm := range e.vms {
			if vm.phase == phaseRunning && len(vm.jobs) == 0 && e.now.Sub(vm.idleSince) >= 10*time.Minute {
				hidden++
			}
		}
	}
	if outSteps != 5 {
		t.Fatalf("%d steps in the outage", outSteps)
	}
	if hidden == 0 {
		t.Fatal("no VM sat idle past its keep-alive during the outage: the test shows nothing")
	}
	sum := e.summary()
	if sum.Violations != 0 || !sum.AllFinished() {
		t.Fatalf("violations %v, jobs %+v", sum.FirstViolations, sum.Jobs)
	}
	if sum.Clouds[0].Retired+sum.Clouds[1].Retired == 0 {
		t.Fatal("idle VMs never retired after the outage")
	}
}

type planPart struct {
	plan planner.Plan
	rep  snapshot.Report
}
