package hub

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint runs client_golang's metric linter over the hub's whole
// registry after a cycle with a connected and a disconnected cloud, so
// that every collector has series to check.
func TestMetricsLint(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(4)})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour))))
	e.connect("east")
	e.disconnect("east")
	e.advance(10 * time.Second)
	e.cycle()
	problems, err := testutil.CollectAndLint(e.h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "canopy_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestSiteStateMetric(t *testing.T) {
	e := newEnv(t, &scriptedSource{d: atlas(4)})
	e.connect("west", vm("id-1", "canopy-west-p1-0-0", readySince(e.now.Add(-time.Hour))))
	e.connect("east")
	e.disconnect("east")
	e.advance(10 * time.Second)
	e.cycle()
	const want = `
# HELP canopy_hub_site_state The planner's state for the site's cloud: 1 for its current state (ok, disconnected, disabled, paused, frozen, backoff), 0 for the others.
# TYPE canopy_hub_site_state gauge
canopy_hub_site_state{site="east",state="backoff"} 0
canopy_hub_site_state{site="east",state="disabled"} 0
canopy_hub_site_state{site="east",state="disconnected"} 1
canopy_hub_site_state{site="east",state="frozen"} 0
canopy_hub_site_state{site="east",state="ok"} 0
canopy_hub_site_state{site="east",state="paused"} 0
canopy_hub_site_state{site="west",state="backoff"} 0
canopy_hub_site_state{site="west",state="disabled"} 0
canopy_hub_site_state{site="west",state="disconnected"} 0
canopy_hub_site_state{site="west",state="frozen"} 0
canopy_hub_site_state{site="west",state="ok"} 1
canopy_hub_site_state{site="west",state="paused"} 0
`
	if err := testutil.GatherAndCompare(e.h.reg, strings.NewReader(want), "canopy_hub_site_state"); err != nil {
		t.Fatal(err)
	}
}
