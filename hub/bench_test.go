package hub

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/series"
	"github.com/canopy-grid/canopy/protocol"
)

// BenchmarkCycle is one control cycle at 100 clouds × 200 VMs (20,000
// busy VMs) and 300,000 idle jobs in four shapes: reconcile, build the
// snapshot, plan, save and publish the status.
func BenchmarkCycle(b *testing.B) {
	e := bigEnv(b)
	e.cycle()
	for b.Loop() {
		e.advance(10 * time.Second)
		e.cycle()
	}
}

// bigEnv is a hub with 100 clouds × 200 busy VMs and 300,000 idle jobs.
func bigEnv(b *testing.B) *testEnv {
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
	return e
}

// BenchmarkStatusPage renders the status page (and its in-place refresh,
// the public page and `hub status`'s answer) at 100 clouds × 20,000 VMs
// with an hour of samples in every series: time per render and bytes.
func BenchmarkStatusPage(b *testing.B) {
	e := bigEnv(b)
	e.cycle()
	st := e.h.Status()
	s := e.h.con.series
	start := e.now.Add(-time.Hour)
	for i := range 360 {
		at := start.Add(time.Duration(i) * 10 * time.Second)
		for _, site := range st.Sites {
			s.Add(at, "cores."+site.Name, series.Gauge, float64(site.CanopyCores+i%7))
		}
		for _, k := range DisplayStates {
			s.Add(at, "vms."+k, series.Gauge, float64(i%50))
		}
		for _, g := range st.Groups {
			s.Add(at, "jobs.idle."+g.Name, series.Gauge, float64(g.Idle-i))
			s.Add(at, "jobs.running."+g.Name, series.Gauge, float64(g.Running+i))
		}
		s.Add(at, "boots", series.Counter, float64(i%3))
		s.Add(at, "failures", series.Counter, float64(i%2))
	}
	hd := e.h.handler(chanSocket)
	// "redraw" draws the plots afresh (the first view after a sample); the
	// others reuse the plots drawn for the current sample.
	for _, c := range []struct {
		name, path string
		redraw     bool
	}{{"page-redraw", "/", true}, {"page", "/", false}, {"fragment", "/?fragment=1", false}, {"public", "/public", false},
		{"summary", "/api/v1/summary", false}, {"page-vmpage150", "/?vmpage=150", false}} {
		b.Run(c.name, func(b *testing.B) {
			var n int
			for b.Loop() {
				if c.redraw {
					e.h.con.observed.Add(1)
				}
				w := httptest.NewRecorder()
				hd.ServeHTTP(w, httptest.NewRequest("GET", c.path, nil))
				if w.Code != 200 {
					b.Fatalf("%s: %d", c.path, w.Code)
				}
				n = w.Body.Len()
			}
			b.ReportMetric(float64(n)/1024, "KiB/page")
		})
	}
}
