package hub

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/ledger"
	"github.com/canopy-grid/canopy/hub/series"
	"github.com/canopy-grid/canopy/protocol"
)

// TestConsoleSamplesAndAccounts: cycles feed the time series (VMs by
// state, cores per site, jobs per group) and the ledger (VM-, core- and
// HS06-hours, jobs started), the core-seconds counter agrees, and both
// survive a restart of the hub.
func TestConsoleSamplesAndAccounts(t *testing.T) {
	src := &scriptedSource{d: atlas(3)}
	e := newEnv(t, src, func(c *Config) {
		c.Sites = map[string]SiteConfig{"west": {HS06PerCore: map[string]float64{"c2": 10}}}
		c.Groups = map[string]GroupConfig{"atlas": {}, "belle": {}}
	})
	busy := vm("id-1", "canopy-west-p1-0-0", readySince(*e.now), func(v *protocol.VM) {
		v.Group = "atlas"
		v.Jobs = &protocol.VMJobs{Running: 1, Claimed: 1, At: *e.now}
	})
	src.d.Machines = map[string]demand.Machine{busy.Name: {VMName: busy.Name, State: demand.MachineBusy, RunningJobs: 1, JobsStarted: 2}}
	e.connect("west", busy)
	e.cycle()
	for i := range 6 {
		e.advance(10 * time.Second)
		src.d.Machines[busy.Name] = demand.Machine{VMName: busy.Name, State: demand.MachineBusy, RunningJobs: 1, JobsStarted: 3 + i}
		e.report("west", busy)
		e.cycle()
	}
	check := func(when string) {
		t.Helper()
		s := e.h.con.series
		tests := []struct {
			name string
			want float64
		}{
			{"cores.west", 2}, {"vms.busy", 1}, {"vms.idle", 0}, {"jobs.idle.atlas", 3}, {"jobs.idle.belle", 0},
		}
		for _, tc := range tests {
			pts := s.Points(tc.name, 0)
			if len(pts) != 7 || pts[len(pts)-1].V != tc.want {
				t.Errorf("%s: series %s = %v, want 7 points ending at %v", when, tc.name, pts, tc.want)
			}
		}
		rows, err := e.h.con.ledger.Query("", "", []string{"group", "site"})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprint([]ledger.Row{{Group: "atlas", Site: "west", Usage: ledger.Usage{VMSeconds: 60, CoreSeconds: 120, HS06Seconds: 1200, JobsStarted: 6}}})
		if got := fmt.Sprint(rows); got != want {
			t.Errorf("%s: ledger %s, want %s", when, got, want)
		}
	}
	check("running")
	if got := testutil.ToFloat64(e.h.con.coreSec.WithLabelValues("atlas", "west")); got != 120 {
		t.Fatalf("canopy_core_seconds_total = %v, want 120", got)
	}
	if err := e.h.saveConsole(); err != nil {
		t.Fatal(err)
	}
	e.crash()
	e.start(src)
	check("after restart")
	if _, ok := series.TierByName("month"); !ok {
		t.Fatal("no month tier")
	}
}

// TestConsoleMetricsLint: the hub's registry, with the core-seconds
// counters set, passes client_golang's metric lint.
func TestConsoleMetricsLint(t *testing.T) {
	e := newEnv(t, &scriptedSource{})
	e.h.con.coreSec.WithLabelValues("atlas", "west").Add(2)
	problems, err := testutil.GatherAndLint(e.h.reg, "canopy_core_seconds_total")
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 0 {
		t.Fatalf("lint: %+v", problems)
	}
}
