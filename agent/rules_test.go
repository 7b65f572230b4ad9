package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// ruleWorld is an agent without a state file, its cloud and clock, and
// its VM endpoint.
type ruleWorld struct {
	a     *Agent
	d     *vmCloud
	clock *testClock
	url   string
}

func newRuleWorld(t *testing.T) *ruleWorld {
	t.Helper()
	d := newVMCloud()
	clock := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	a, _ := newTestAgent(t, d, "east", clock)
	a.cfg.CheckinEvery = 10 * time.Second
	gkeys, err := gossip.LoadOrCreateSiteKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a.gkeys, a.vmURL = gkeys, "http://127.0.0.1:1"
	srv := httptest.NewServer(a.vmHandler())
	t.Cleanup(srv.Close)
	return &ruleWorld{a: a, d: d, clock: clock, url: srv.URL}
}

func (w *ruleWorld) vm(t *testing.T, name string) (driver.Server, string) {
	t.Helper()
	return bootVM(t, w.a, w.d, name, "atlas")
}

func (w *ruleWorld) checkin(t *testing.T, s driver.Server, tok, state string, j *vmproto.JobCount) {
	t.Helper()
	status, body := checkin(t, w.url, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: state, Jobs: j})
	if status != http.StatusOK {
		t.Fatalf("check-in %s: %d %s", state, status, body)
	}
}

func (w *ruleWorld) exec(t *testing.T, cmd protocol.Command) *protocol.Result {
	t.Helper()
	r, _ := w.a.execute(context.Background(), cmd)
	if r == nil {
		t.Fatal("no result")
	}
	return r
}

func (w *ruleWorld) listed(id string) bool {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	_, ok := w.d.servers[id]
	return ok
}

// TestSecondLineBeforeDelete: the agent's own rule before any delete
// command, table-driven over what the VM last reported.
func TestSecondLineBeforeDelete(t *testing.T) {
	tests := []struct {
		name string
		// setup brings the VM into the state under test.
		setup    func(t *testing.T, w *ruleWorld, s driver.Server, tok string)
		override string
		refused  string // the refusal's metric label, "" when deleted
		reason   string // in the refusal's reason
	}{
		{"never checked in", func(*testing.T, *ruleWorld, driver.Server, string) {}, "", "", ""},
		{"fresh: 2 running jobs", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(2, 2))
		}, "", refuseJobs, "2 running jobs and 2 claimed slots"},
		{"fresh: 2 running jobs, override", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(2, 2))
		}, protocol.DeleteDeadline, "", ""},
		{"fresh: a claimed slot between jobs", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(0, 1))
		}, "", refuseJobs, "0 running jobs and 1 claimed slots"},
		{"fresh: idle", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(0, 0))
		}, "", "", ""},
		{"jobs reported, then unknown: the count is still fresh", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(1, 1))
			w.clock.Add(5 * time.Second)
			w.checkin(t, s, tok, vmproto.CheckinReady, nil)
		}, "", refuseJobs, "1 running jobs"},
		{"jobs reported 3 check-in intervals ago: not fresh", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(2, 2))
			w.clock.Add(3*w.a.cfg.CheckinEvery + time.Second)
		}, "", "", ""},
		{"draining, not drained", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(0, 0))
			w.exec(t, retireCmd("r", time.Hour, s.ID))
			w.checkin(t, s, tok, vmproto.CheckinRetiring, nil)
		}, "", refuseDraining, "draining"},
		{"draining, override", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.exec(t, retireCmd("r", time.Hour, s.ID))
			w.checkin(t, s, tok, vmproto.CheckinRetiring, jobs(3, 3))
		}, protocol.DeleteDeadline, "", ""},
		{"drained", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.exec(t, retireCmd("r", time.Hour, s.ID))
			w.checkin(t, s, tok, vmproto.CheckinRetiring, nil)
			w.checkin(t, s, tok, vmproto.CheckinDrained, jobs(0, 0))
		}, "", "", ""},
		{"retirement failed, idle", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.exec(t, retireCmd("r", time.Hour, s.ID))
			status, body := checkin(t, w.url, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinFailed,
				Jobs: jobs(0, 0), Error: "condor_off failed"})
			if status != http.StatusOK {
				t.Fatal(body)
			}
		}, "", "", ""},
		{"unknown override is no override", func(t *testing.T, w *ruleWorld, s driver.Server, tok string) {
			w.checkin(t, s, tok, vmproto.CheckinReady, jobs(2, 0))
		}, "please", refuseJobs, "override"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newRuleWorld(t)
			s, tok := w.vm(t, "vm-a")
			tt.setup(t, w, s, tok)
			r := w.exec(t, deleteCmd("d", tt.override, s.ID))
			got := testutil.ToFloat64(w.a.metrics.deletesRefused.WithLabelValues(tt.refused, sourceCommand))
			if tt.refused == "" {
				if !r.OK || len(r.VMIDs) != 1 || w.listed(s.ID) {
					t.Fatalf("not deleted: %+v", r)
				}
				return
			}
			if r.OK || r.Class != protocol.ErrClassRefused || len(r.Refused) != 1 || r.Refused[0].VMID != s.ID ||
				!strings.Contains(r.Refused[0].Reason, tt.reason) || len(r.VMIDs) != 0 {
				t.Fatalf("result %+v, want a refusal mentioning %q", r, tt.reason)
			}
			if !w.listed(s.ID) {
				t.Fatal("refused, yet the server is gone")
			}
			if got != 1 {
				t.Fatalf("refusal counted %v times", got)
			}
		})
	}
}

// TestOwnership: a server is this hub's only if its canopy_hub metadata is
// the hub id from Welcome. Others are foreign in the inventory and never
// retired or deleted, override or not.
func TestOwnership(t *testing.T) {
	tests := []struct {
		name        string
		meta        map[string]string
		hubID       string
		wantForeign bool
	}{
		{"own", map[string]string{driver.MetaHub: "hub"}, "hub", false},
		{"no metadata", map[string]string{}, "hub", true},
		{"another hub's", map[string]string{driver.MetaHub: "other"}, "hub", true},
		{"hub id not known yet", map[string]string{driver.MetaHub: "hub"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newRuleWorld(t)
			w.a.hubID = tt.hubID
			s, _ := w.d.Boot(context.Background(), driver.BootSpec{Name: "s", Metadata: tt.meta})
			inv, err := w.a.inventory(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(inv.VMs) != 1 || inv.VMs[0].Hub != tt.meta[driver.MetaHub] {
				t.Fatalf("inventory %+v", inv.VMs)
			}
			// Before a Welcome the agent sends no inventory; after one, an
			// empty hub id marks everything foreign.
			if tt.hubID != "" && inv.VMs[0].Foreign != tt.wantForeign {
				t.Fatalf("foreign = %v, want %v", inv.VMs[0].Foreign, tt.wantForeign)
			}
			r := w.exec(t, retireCmd("r", time.Hour, s.ID))
			d := w.exec(t, deleteCmd("d", protocol.DeleteDeadline, s.ID))
			if !tt.wantForeign {
				if !r.OK || !d.OK || w.listed(s.ID) {
					t.Fatalf("own server: retire %+v, delete %+v", r, d)
				}
				return
			}
			if r.OK || r.Class != protocol.ErrClassRefused || len(r.Refused) != 1 || len(r.VMIDs) != 0 {
				t.Fatalf("retire of a foreign server: %+v", r)
			}
			if st, ok := w.a.vms.get(s.ID); ok && !st.retireBy.IsZero() {
				t.Fatal("retirement recorded for a foreign server")
			}
			if d.OK || d.Class != protocol.ErrClassRefused || len(d.Refused) != 1 || !w.listed(s.ID) {
				t.Fatalf("delete of a foreign server: %+v", d)
			}
		})
	}
	// A retirement of a server the cloud does not list is refused too.
	w := newRuleWorld(t)
	if r := w.exec(t, retireCmd("r", time.Hour, "no-such-id")); r.OK || len(r.Refused) != 1 || !strings.Contains(r.Refused[0].Reason, "does not list") {
		t.Fatalf("retire of an unlisted server: %+v", r)
	}
}

// TestEpoch: a command carrying another run's epoch is refused as stale
// and not carried out; the current epoch or none is carried out.
func TestEpoch(t *testing.T) {
	tests := []struct {
		name  string
		epoch func(a *Agent) string
		stale bool
	}{
		{"current epoch", func(a *Agent) string { return a.epoch }, false},
		{"no epoch (older hub)", func(*Agent) string { return "" }, false},
		{"previous run", func(*Agent) string { return "0123456789abcdef01234567" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newRuleWorld(t)
			cmd := bootCmd("b1", "vm-a")
			cmd.Epoch = tt.epoch(w.a)
			r := w.exec(t, cmd)
			if tt.stale {
				if r.OK || r.Class != protocol.ErrClassStale || w.d.n != 0 {
					t.Fatalf("stale command: %+v, boots %d", r, w.d.n)
				}
				if testutil.ToFloat64(w.a.metrics.commandsStale) != 1 {
					t.Fatal("stale command not counted")
				}
				// Not remembered: the same id with the right epoch runs.
				cmd.Epoch = w.a.epoch
				if r := w.exec(t, cmd); !r.OK || w.d.n != 1 {
					t.Fatalf("after a stale refusal: %+v", r)
				}
				return
			}
			if !r.OK || w.d.n != 1 {
				t.Fatalf("command: %+v", r)
			}
		})
	}
	// Every agent run has its own epoch.
	a1, _ := newAgent(Config{Site: "x"}, newVMCloud(), logrus.NewEntry(logrus.New()))
	a2, _ := newAgent(Config{Site: "x"}, newVMCloud(), logrus.NewEntry(logrus.New()))
	if a1.Epoch() == "" || a1.Epoch() == a2.Epoch() {
		t.Fatalf("epochs %q and %q", a1.Epoch(), a2.Epoch())
	}
}

// TestReaper: the reaper deletes drained VMs and VMs past their deadline
// plus grace, and nothing else: not a VM the gossip pool declares failed
// (unknown is not idle), not a drained VM that reports jobs again.
func TestReaper(t *testing.T) {
	w := newRuleWorld(t)
	a := w.a
	type vm struct {
		s   driver.Server
		tok string
	}
	vms := map[string]vm{}
	names := []string{"drained", "unreachable", "late", "busy-drained", "working"}
	for _, n := range names {
		s, tok := w.vm(t, n)
		vms[n] = vm{s, tok}
	}
	for _, n := range names {
		w.checkin(t, vms[n].s, vms[n].tok, vmproto.CheckinReady, jobs(1, 1))
	}
	for _, n := range []string{"drained", "unreachable", "late", "busy-drained"} {
		if r := w.exec(t, retireCmd("r-"+n, time.Hour, vms[n].s.ID)); !r.OK {
			t.Fatal(r)
		}
	}
	w.checkin(t, vms["drained"].s, vms["drained"].tok, vmproto.CheckinDrained, jobs(0, 0))
	w.checkin(t, vms["busy-drained"].s, vms["busy-drained"].tok, vmproto.CheckinDrained, jobs(2, 2))
	w.checkin(t, vms["unreachable"].s, vms["unreachable"].tok, vmproto.CheckinRetiring, jobs(1, 1))
	a.onGossipEvent(gossip.Event{Kind: gossip.EventFail, Peer: gossip.Peer{Name: "unreachable",
		Meta: gossip.Meta{Role: gossip.RoleVM, ServerID: vms["unreachable"].s.ID}}})
	if st, _ := a.vms.get(vms["unreachable"].s.ID); st.unreachable.IsZero() {
		t.Fatal("gossip failure not recorded")
	}
	// "late" got an earlier deadline from a second order.
	if r := w.exec(t, retireCmd("r-late-2", time.Minute, vms["late"].s.ID)); !r.OK {
		t.Fatal(r)
	}

	a.reap(context.Background())
	want := map[string]bool{"drained": false, "unreachable": true, "late": true, "busy-drained": true, "working": true}
	for n, kept := range want {
		if w.listed(vms[n].s.ID) != kept {
			t.Errorf("after the first pass: %s listed = %v, want %v", n, !kept, kept)
		}
	}
	// Past late's deadline plus grace: deleted, jobs or not. The
	// unreachable VM waits for its own (later) deadline.
	w.clock.Add(time.Minute + a.cfg.RetireGrace + time.Second)
	a.reap(context.Background())
	if w.listed(vms["late"].s.ID) || !w.listed(vms["unreachable"].s.ID) {
		t.Fatal("deadline pass: late must go, unreachable stay")
	}
	w.clock.Add(time.Hour)
	a.reap(context.Background())
	if w.listed(vms["unreachable"].s.ID) || w.listed(vms["busy-drained"].s.ID) || !w.listed(vms["working"].s.ID) {
		t.Fatal("after every deadline: unreachable and busy-drained must go, working stay")
	}
	if got := testutil.ToFloat64(a.metrics.deletesRefused.WithLabelValues(refuseJobs, sourceReaper)); got < 1 {
		t.Fatalf("busy drained VM refusal counted %v times", got)
	}
}

// TestCheckinValidation: what a check-in may claim, with the precise
// reason the VM is told.
func TestCheckinValidation(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ok := func(req vmproto.CheckinRequest) vmproto.CheckinRequest {
		req.ServerID, req.Server = "id", "vm-a"
		if req.State == "" {
			req.State = vmproto.CheckinReady
		}
		return req
	}
	tests := []struct {
		name string
		req  vmproto.CheckinRequest
		want string // in the error; "" when valid
	}{
		{"ready", ok(vmproto.CheckinRequest{}), ""},
		{"with jobs", ok(vmproto.CheckinRequest{Jobs: &vmproto.JobCount{Running: 3, Claimed: 4, At: now}}), ""},
		{"jobs without time", ok(vmproto.CheckinRequest{Jobs: &vmproto.JobCount{Running: 1}}), ""},
		{"failed with error", ok(vmproto.CheckinRequest{State: vmproto.CheckinFailed, Error: "condor_off: denied\nretrying"}), ""},
		{"unknown state", ok(vmproto.CheckinRequest{State: "sleeping"}), `state "sleeping"`},
		{"no server id", vmproto.CheckinRequest{Server: "vm-a", State: vmproto.CheckinReady}, "required"},
		{"negative running", ok(vmproto.CheckinRequest{Jobs: &vmproto.JobCount{Running: -1}}), "negative"},
		{"negative claimed", ok(vmproto.CheckinRequest{Jobs: &vmproto.JobCount{Claimed: -5}}), "negative"},
		{"absurd count", ok(vmproto.CheckinRequest{Jobs: &vmproto.JobCount{Running: 1 << 40}}), "over 65536"},
		{"count from the future", ok(vmproto.CheckinRequest{Jobs: &vmproto.JobCount{At: now.Add(24 * time.Hour)}}), "ahead of the agent's clock"},
		{"slight clock skew", ok(vmproto.CheckinRequest{Jobs: &vmproto.JobCount{At: now.Add(time.Minute)}}), ""},
		{"error too long", ok(vmproto.CheckinRequest{State: vmproto.CheckinFailed, Error: strings.Repeat("x", vmproto.MaxCheckinError+1)}), "over 1024"},
		{"error not UTF-8", ok(vmproto.CheckinRequest{Error: "\xff\xfe"}), "UTF-8"},
		{"error with escape codes", ok(vmproto.CheckinRequest{Error: "ok\x1b[2J"}), "control character"},
		{"huge server name", vmproto.CheckinRequest{ServerID: "id", Server: strings.Repeat("a", 300), State: vmproto.CheckinReady}, "at most 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateCheckin(tt.req, now)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestCheckinBodiesRefusedPrecisely: non-finite and fractional counts are
// refused by the decoder, and the VM is told why.
func TestCheckinBodiesRefusedPrecisely(t *testing.T) {
	w := newRuleWorld(t)
	s, tok := w.vm(t, "vm-a")
	for name, jobs := range map[string]string{
		"fraction":  `{"running":1.5,"claimed":0}`,
		"overflow":  `{"running":1e400,"claimed":0}`,
		"not a num": `{"running":"NaN","claimed":0}`,
		"negative":  `{"running":-2,"claimed":0}`,
		"far future": fmt.Sprintf(`{"running":1,"claimed":1,"at":%q}`,
			w.clock.Now().Add(365*24*time.Hour).Format(time.RFC3339)),
	} {
		body := fmt.Sprintf(`{"server_id":%q,"server":%q,"state":"ready","jobs":%s}`, s.ID, s.Name, jobs)
		r, _ := http.NewRequest(http.MethodPost, w.url+vmproto.PathCheckin, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "running") && !strings.Contains(string(b), "jobs") {
			t.Errorf("%s: %d %s", name, resp.StatusCode, b)
		}
	}
	if st, ok := w.a.vms.get(s.ID); ok && st.jobs != nil {
		t.Fatalf("a refused count was stored: %+v", st.jobs)
	}
}

// TestRefusalFloodIsSummarised: a flood of refused check-ins writes a
// line per reason and a summary per interval, and every refusal is counted.
func TestRefusalFloodIsSummarised(t *testing.T) {
	d := newVMCloud()
	clock := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	a, hook := newTestAgent(t, d, "east", clock)
	srv := httptest.NewServer(a.vmHandler())
	defer srv.Close()
	s, _ := bootVM(t, a, d, "vm-a", "atlas")
	const flood = 300
	for i := range flood {
		tok := "garbage"
		if i%3 == 0 {
			tok = ""
		}
		checkin(t, srv.URL, tok, vmproto.CheckinRequest{ServerID: s.ID, Server: s.Name, State: vmproto.CheckinReady})
	}
	clock.Add(refusalLogEvery)
	a.checkinLog.flush()
	var full, summaries int
	var summary map[string]int
	for _, e := range hook.AllEntries() {
		switch {
		case e.Message == "VM check-in refused":
			full++
		case strings.HasPrefix(e.Message, "VM check-ins refused"):
			summaries++
			summary, _ = e.Data["refused"].(map[string]int)
		}
	}
	if full != 2 || summaries != 1 {
		t.Fatalf("%d full lines and %d summaries for %d refusals, want 2 and 1", full, summaries, flood)
	}
	if summary["no bearer token"] != flood/3-1 || summary["malformed token"] != 2*flood/3-1 {
		t.Fatalf("summary %v", summary)
	}
	total := testutil.ToFloat64(a.metrics.checkinsRefused.WithLabelValues("no bearer token")) +
		testutil.ToFloat64(a.metrics.checkinsRefused.WithLabelValues("malformed token"))
	if total != flood {
		t.Fatalf("counted %v refusals, want %d", total, flood)
	}
}

// TestConfigValidate: durations that make no sense are errors naming the key.
func TestConfigValidate(t *testing.T) {
	base := Config{Site: "west", StateDir: "/s", CondorHost: "cm", Hub: HubLink{Addr: "h:1", CA: "ca", Cert: "c", Key: "k"}}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" when valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"negative token_ttl", func(c *Config) { c.TokenTTL = -time.Hour }, "token_ttl"},
		{"negative checkin_every", func(c *Config) { c.CheckinEvery = -time.Second }, "checkin_every"},
		{"negative retire_grace", func(c *Config) { c.RetireGrace = -time.Second }, "retire_grace"},
		{"negative reconnect_min", func(c *Config) { c.ReconnectMin = -1 }, "reconnect_min"},
		{"negative reconnect_max", func(c *Config) { c.ReconnectMax = -1 }, "reconnect_max"},
		{"negative storage_every", func(c *Config) { c.StorageEvery = -1 }, "storage_every"},
		{"reconnect_min over reconnect_max", func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Minute, time.Second }, "reconnect_min"},
		{"token_ttl under the check-in interval", func(c *Config) { c.TokenTTL, c.CheckinEvery = time.Minute, time.Minute }, "token_ttl"},
		{"bad metrics_listen", func(c *Config) { c.MetricsListen = "9464" }, "metrics_listen"},
		{"bad vm_listen", func(c *Config) { c.VMListen = "localhost" }, "vm_listen"},
		{"no state_dir", func(c *Config) { c.StateDir = "" }, "state_dir"},
		{"bad site", func(c *Config) { c.Site = "West Coast" }, "site"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// TestVMStateMapping: driver statuses become the states the hub acts on.
func TestVMStateMapping(t *testing.T) {
	for in, want := range map[driver.ServerStatus]protocol.VMState{
		driver.StatusBuild:     protocol.VMBooting,
		driver.StatusActive:    protocol.VMActive,
		driver.StatusError:     protocol.VMError,
		driver.StatusStopped:   protocol.VMStopped,
		driver.StatusRebooting: protocol.VMRebooting,
		driver.StatusDeleting:  protocol.VMDeleting,
		driver.StatusDeleted:   protocol.VMDeleting,
		"SOMETHING_NEW":        protocol.VMStopped,
	} {
		if got := vmState(in); got != want {
			t.Errorf("vmState(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestInventoryRunningAndCloudStatus: the inventory lists the commands
// still running, and each VM's cloud word and job count.
func TestInventoryRunningAndCloudStatus(t *testing.T) {
	d := newFakeDriver()
	d.gate, d.entered = make(chan struct{}), make(chan struct{})
	a := testAgent(t, d)
	done := make(chan struct{})
	go func() {
		a.execute(context.Background(), bootCmd("c-slow", "vm-a"))
		close(done)
	}()
	select {
	case <-d.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("boot never started")
	}
	d.mu.Lock()
	d.servers["x"] = driver.Server{ID: "x", Name: "off", Status: driver.StatusStopped, CloudStatus: "SHUTOFF",
		Metadata: map[string]string{driver.MetaHub: "hub"}}
	d.mu.Unlock()
	a.listing.invalidate() // as after listingMaxAge: the boot's listing predates the new server
	inv, err := a.inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Running) != 1 || inv.Running[0] != "c-slow" {
		t.Fatalf("running %v", inv.Running)
	}
	if len(inv.VMs) != 1 || inv.VMs[0].State != protocol.VMStopped || inv.VMs[0].CloudStatus != "SHUTOFF" || inv.VMs[0].Foreign {
		t.Fatalf("VMs %+v", inv.VMs)
	}
	close(d.gate)
	<-done
	if inv, _ := a.inventory(context.Background()); len(inv.Running) != 0 {
		t.Fatalf("running after the command ended: %v", inv.Running)
	}
}

// TestMetricsEndpoint: /metrics serves the agent's counters and /v1/vms
// its last inventory.
func TestMetricsEndpoint(t *testing.T) {
	w := newRuleWorld(t)
	s, tok := w.vm(t, "vm-a")
	w.checkin(t, s, tok, vmproto.CheckinReady, jobs(2, 2))
	w.exec(t, deleteCmd("d", "", s.ID))
	if _, err := w.a.takeInventory(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, stop, err := w.a.serveMetrics(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func(path string) string {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if m := get("/metrics"); !strings.Contains(m, `canopy_agent_deletes_refused_total{reason="jobs",site="east",source="command"} 1`) ||
		!strings.Contains(m, "canopy_agent_checkins_total") {
		t.Fatalf("metrics:\n%s", m)
	}
	if b := get("/v1/vms"); !strings.Contains(b, `"running":2`) || !strings.Contains(b, s.ID) || !strings.Contains(b, w.a.epoch) {
		t.Fatalf("/v1/vms: %s", b)
	}
}
