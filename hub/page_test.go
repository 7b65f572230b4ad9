package hub

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

// pageEnv is a hub with a VM of every kind: busy, idle, held, in error
// with a fault, a foreign server, a paused site, an empty group, images.
func pageEnv(t *testing.T) *testEnv {
	src := &scriptedSource{d: atlas(3)}
	src.d.Machines = map[string]demand.Machine{
		"canopy-west-p1-0-0": {VMName: "canopy-west-p1-0-0", State: demand.MachineBusy, RunningJobs: 1, JobsStarted: 1},
		"canopy-west-p1-0-2": {VMName: "canopy-west-p1-0-2", State: demand.MachineIdle},
	}
	e := newEnv(t, src, func(c *Config) {
		c.Sites = map[string]SiteConfig{"west": {}, "east": {Paused: true}}
		c.Groups = map[string]GroupConfig{"atlas": {}, "emptygroup": {}}
	})
	vms := []protocol.VM{
		vm("id-1", "canopy-west-p1-0-0", readySince(*e.now), func(v *protocol.VM) {
			v.Group, v.Jobs = "atlas", &protocol.VMJobs{Running: 1, Claimed: 1, At: *e.now}
		}),
		vm("id-2", "canopy-west-p1-0-1", func(v *protocol.VM) { v.State, v.Fault = protocol.VMError, "No valid host was found" }),
		vm("id-3", "canopy-west-p1-0-2", readySince(*e.now)),
		vm("id-f", "someone-elses", func(v *protocol.VM) { v.Foreign, v.Flavor = true, "c2" }),
	}
	e.connect("west", vms...)
	e.connect("east")
	e.warm(2*time.Minute, "west", vms...)
	// Samples 10 s apart, with fresh heartbeats and inventories.
	for range 3 {
		e.advance(10 * time.Second)
		e.report("west", vms...)
		e.report("east")
		for _, name := range []string{"west", "east"} {
			l := e.h.linkFor(name)
			l.update(l.current(), func(v *cloudView) {
				v.LastHeartbeat = *e.now
				if name == "west" {
					inv := *v.Inventory
					inv.Images = []images.Image{{ID: "i1", Name: "worker-el9", Status: "active"}}
					v.Inventory = &inv
				}
			})
		}
		e.cycle()
	}
	e.serveLoop()
	if err := e.h.SetHeld(t.Context(), "id-3", true, "test"); err != nil {
		t.Fatal(err)
	}
	return e
}

func get(t *testing.T, hd http.Handler, path string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	hd.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

// TestPageVariants: what the admin page, the read-only page and the
// public page show and leave out.
func TestPageVariants(t *testing.T) {
	e := pageEnv(t)
	tests := []struct {
		name    string
		ch      channel
		path    string
		want    []string
		notWant []string
	}{
		{"admin page", chanSocket, "/", []string{
			`data-site="west"`, `data-state="error">1<`, `data-state="held">1<`, `data-state="busy">1<`,
			"fault: No valid host was found", `class="off" data-site="east"`, "emptygroup", `id="plot-vms"`, "<polyline",
			`data-action="pause"`, `data-action="hold"`, `data-action="release"`, "worker-el9", "Admin controls on",
			"/static/console.js", `data-kind="held"`},
			nil},
		{"read-only page", chanHTTP, "/", []string{`data-site="west"`, "fault: No valid host", "Read-only"},
			[]string{"data-action=", "<button type=\"button\""}},
		{"fragment", chanSocket, "/?fragment=1", []string{`data-site="west"`}, []string{"<html", "<script"}},
		{"public page", chanSocket, "/public", []string{`data-site="west"`, "emptygroup", "<polyline"},
			[]string{"<button", "<form", "<script", "canopy-west-p1", "id-1", "No valid host", "/api/v1", "127.0.0.1", "data-action"}},
		{"VM filter", chanSocket, "/?vmstate=error", []string{"canopy-west-p1-0-1", "1 VMs match"}, []string{"<td>canopy-west-p1-0-0</td>"}},
		{"event filter", chanSocket, "/?evkind=held", []string{`data-kind="held"`}, []string{`data-kind="boot"`}},
		{"day tier", chanSocket, "/?tier=day", []string{`class="cur">day`}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, page := get(t, e.h.handler(tc.ch), tc.path)
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			for _, w := range tc.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(page, w) {
					t.Errorf("page shows %q", w)
				}
			}
		})
	}
}

// TestSeriesAndAccountingAPI: plots download as CSV and JSON; the ledger
// as JSON and CSV; bad parameters are refused with a reason.
func TestSeriesAndAccountingAPI(t *testing.T) {
	e := pageEnv(t)
	hd := e.h.httpHandler()
	tests := []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/series/vms.csv", 200, "time,vms.booting,vms.starting"},
		{"/api/v1/series/cores.csv?tier=day", 200, "time,cores.east,cores.west"},
		{"/api/v1/series/jobs.json?tier=month", 200, `"jobs.idle.atlas"`},
		{"/api/v1/series/boots.csv", 200, "time,boots,failures"},
		{"/api/v1/series/nope.csv", 404, "want /api/v1/series"},
		{"/api/v1/series/vms.csv?tier=year", 400, "tier: want hour"},
		{"/api/v1/accounting?by=group,site", 200, `"group": "atlas"`},
		{"/api/v1/accounting?by=group,cloud&format=csv", 200, "day,group,site,vm_hours"},
		{"/api/v1/accounting?by=flavor", 400, "want day, group or site"},
		{"/api/v1/accounting?format=xml", 400, "format: want json or csv"},
		{"/api/v1/events?kind=held&limit=1", 200, `"kind": "held"`},
		{"/api/v1/events?limit=-1", 400, "limit"},
		{"/api/v1/summary", 200, `"emptygroup"`},
		{"/static/console.js", 200, "X-Canopy-Action"},
	}
	for _, tc := range tests {
		code, body := get(t, hd, tc.path)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %.200q, want %d with %q", tc.path, code, body, tc.code, tc.want)
		}
	}
}
