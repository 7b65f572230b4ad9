//go:build integration

package demo

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/localcloud"
	"github.com/canopy-grid/canopy/hub"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/protocol"
)

// The fault-injection suite: the real hub, agents and VMs on loopback,
// killed, partitioned and starved, with every assertion on the cloud's own
// state (the local cloud's VM records and processes) and on what the hub
// and agents report, never on log lines.

// longTrace keeps every VM busy for longer than any test here runs.
const longTrace = `
jobs:
  - group: atlas
    vm_type: el9
    cpus: 1
    memory_mib: 2000
    arrivals:
      - {at: 0s, count: 12, runtime: 30m}
`

// faultEnv is a running system and the helpers the fault tests share.
type faultEnv struct {
	t    *testing.T
	ctx  context.Context
	sys  *System
	dir  string
	logs *syncBuffer
}

func startFaults(t *testing.T, limit time.Duration, o Options) *faultEnv {
	t.Helper()
	bin := buildBinaries(t)
	dir := t.TempDir()
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	o.BinDir, o.Dir, o.Output = bin, dir, logs
	if o.Trace == "" {
		o.Trace = longTrace
	}
	sys, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	e := &faultEnv{t: t, ctx: ctx, sys: sys, dir: dir, logs: logs}
	t.Cleanup(func() {
		sys.Stop()
		if left := processesUnder(dir); len(left) > 0 {
			t.Errorf("processes left behind: %v", left)
		}
		if t.Failed() {
			t.Logf("process logs:\n%s", logs.String())
		}
	})
	return e
}

// poll waits for cond, checking every 100 ms, for at most limit.
func (e *faultEnv) poll(limit time.Duration, what string, cond func() bool) time.Duration {
	e.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			e.t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("%v waiting for %s", e.ctx.Err(), what)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return time.Since(start)
}

// cloud lists a site's servers as its local cloud records them.
func (e *faultEnv) cloud(site string) map[string]localVM {
	return localVMs(e.t, e.sys.CloudDir(site))
}

func (e *faultEnv) hubVMs() []hub.VMStatus {
	var vms []hub.VMStatus
	if GetJSON(e.ctx, e.sys.HTTPURL+"/api/v1/vms", &vms) != nil {
		return nil
	}
	return vms
}

func (e *faultEnv) events() []intent.Event {
	var ev []intent.Event
	_ = GetJSON(e.ctx, e.sys.HTTPURL+"/api/v1/events", &ev)
	return ev
}

func (e *faultEnv) sites() map[string]hub.SiteStatus {
	var sites []hub.SiteStatus
	out := map[string]hub.SiteStatus{}
	if GetJSON(e.ctx, e.sys.HTTPURL+"/api/v1/sites", &sites) == nil {
		for _, s := range sites {
			out[s.Name] = s
		}
	}
	return out
}

// busyVMs waits until site runs n VMs the hub sees busy, and returns them.
func (e *faultEnv) busyVMs(site string, n int) map[string]localVM {
	e.t.Helper()
	var vms map[string]localVM
	e.poll(2*time.Minute, "busy VMs on "+site, func() bool {
		vms = e.cloud(site)
		busy := 0
		for _, v := range e.hubVMs() {
			if _, ok := vms[v.ID]; ok && v.State == "busy" {
				busy++
			}
		}
		return len(vms) >= n && busy == len(vms)
	})
	return vms
}

// alive checks that every VM is still in the cloud with its process.
func (e *faultEnv) alive(site string, vms map[string]localVM) {
	e.t.Helper()
	now := e.cloud(site)
	for id, vm := range vms {
		if _, ok := now[id]; !ok {
			e.t.Errorf("VM %s (%s) was deleted", vm.Name, id)
			continue
		}
		if syscall.Kill(vm.PID, 0) != nil {
			e.t.Errorf("VM %s (%s, pid %d) is not running", vm.Name, id, vm.PID)
		}
	}
}

// lifecycle counts the hub's retire and delete events for these VMs.
func lifecycle(ev []intent.Event, vms map[string]localVM) (retires, deletes int) {
	for _, x := range ev {
		if _, ok := vms[x.VM]; !ok {
			continue
		}
		switch x.Kind {
		case "retire":
			retires++
		case "delete":
			deletes++
		}
	}
	return retires, deletes
}

// TestFaultHubKilledMidBurst: the hub is killed with SIGKILL right after it
// ordered a burst of boots, then started again. No server is booted twice
// and none leaks (every server in the clouds is one the restarted hub
// knows), and the backoff of a cloud whose boots were failing survives the
// restart.
func TestFaultHubKilledMidBurst(t *testing.T) {
	e := startFaults(t, 4*time.Minute, Options{
		// West's admin cap (8 cores in the example) would hold the burst back.
		Replace: map[string]string{"      cores: 8\n": "      cores: 64\n"},
		// East's jobs come first and fail there; then a burst for west.
		Trace: `
jobs:
  - group: atlas
    vm_type: el9
    cpus: 1
    memory_mib: 2000
    clouds: [east]
    arrivals:
      - {at: 0s, count: 4, runtime: 30m}
  - group: belle
    vm_type: el9
    cpus: 1
    memory_mib: 2000
    clouds: [west]
    arrivals:
      - {at: 15s, count: 24, runtime: 30m}
`,
		// East's cloud cannot start VMs: every boot there fails. West has
		// room for the burst.
		SiteReplace: map[string]map[string]string{
			"east": {"vmagent: /usr/local/bin/vmagent": "vmagent: /nonexistent/vmagent"},
			"west": {"max_cores: 8": "max_cores: 64", "max_ram_mib: 16384": "max_ram_mib: 131072", "max_instances: 10": "max_instances: 40"},
		},
	})
	// East fails and backs off; west boots the first wave.
	e.poll(90*time.Second, "east to back off after failed boots", func() bool {
		return e.sites()["east"].State == "backoff"
	})
	// Kill the hub as soon as it orders west's burst.
	e.poll(90*time.Second, "west's burst to be ordered", func() bool {
		for _, x := range e.events() {
			if x.Kind == "boot" && x.Site == "west" {
				return true
			}
		}
		return false
	})
	if err := e.sys.Kill("hub"); err != nil {
		t.Fatal(err)
	}
	inFlight := len(e.cloud("west"))
	restarted := time.Now()
	if err := e.sys.Restart("hub"); err != nil {
		t.Fatal(err)
	}
	firstPlan := e.poll(60*time.Second, "the restarted hub's first plan", func() bool {
		var d hub.DemandStatus
		return GetJSON(e.ctx, e.sys.HTTPURL+"/api/v1/demand", &d) == nil && d.PlanAt.After(restarted)
	})
	t.Logf("hub restart -> first plan: %s (it waits until both clouds reported)", firstPlan.Round(10*time.Millisecond))
	// Back: it waits for both clouds, keeps east backing off.
	e.poll(60*time.Second, "the restarted hub to see both clouds, east still backing off", func() bool {
		s := e.sites()
		return s["west"].Connected && s["east"].Connected && s["east"].State == "backoff"
	})
	// Let the burst settle, then compare the cloud with the hub.
	var cloud map[string]localVM
	e.poll(90*time.Second, "every west server known to the restarted hub", func() bool {
		cloud = e.cloud("west")
		known := map[string]bool{}
		for _, v := range e.hubVMs() {
			known[v.ID] = true
		}
		for id := range cloud {
			if !known[id] {
				return false
			}
		}
		return len(cloud) >= inFlight
	})
	names := map[string]int{}
	for _, vm := range cloud {
		names[vm.Name]++
	}
	for n, c := range names {
		if c > 1 {
			t.Errorf("server %s booted %d times", n, c)
		}
	}
	if len(e.cloud("east")) != 0 {
		t.Errorf("east's cloud has servers though it cannot start any: %v", e.cloud("east"))
	}
	t.Logf("west: %d servers when the hub was killed, %d after its restart, all known, no name twice", inFlight, len(cloud))
}

// TestFaultPartition: the link between the hub and both agents drops every
// packet for two minutes (a UDP proxy the test puts between them), then
// heals. The VMs are kept through it, and nothing ordered while the
// agents were away is sent to them when the link comes back.
func TestFaultPartition(t *testing.T) {
	px, err := newUDPProxy()
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	e := startFaults(t, 6*time.Minute, Options{AgentReplace: map[string]string{"addr: 127.0.0.1:7443": "addr: " + px.Addr()}})
	px.SetUpstream(e.sys.HubAddr)
	vms := e.busyVMs("west", 2)
	e.poll(60*time.Second, "both agents connected through the proxy", func() bool {
		s := e.sites()
		return s["west"].Connected && s["east"].Connected
	})

	px.Drop(true)
	e.poll(60*time.Second, "the hub to see both agents gone", func() bool {
		s := e.sites()
		return !s["west"].Connected && !s["east"].Connected
	})
	cut := time.Now()
	// Two minutes apart. The wait is the scenario, not synchronisation:
	// every check below is on state, not on time having passed.
	select {
	case <-e.ctx.Done():
		t.Fatal(e.ctx.Err())
	case <-time.After(2*time.Minute - time.Since(cut)):
	}
	e.alive("west", vms)
	px.Drop(false)
	e.poll(60*time.Second, "both agents back", func() bool {
		s := e.sites()
		return s["west"].Connected && s["east"].Connected
	})
	// After the heal the hub replans from fresh inventories: the VMs are
	// busy, so nothing is retired or deleted; and no order queued during
	// the partition reaches the agents (their own counters).
	e.busyVMs("west", len(vms))
	e.alive("west", vms)
	if r, d := lifecycle(e.events(), vms); r+d != 0 {
		t.Errorf("%d retirements and %d deletions of busy VMs around a partition", r, d)
	}
	for site, url := range e.sys.AgentURLs {
		if n := metricValue(t, url+"/metrics", "canopy_agent_deletes_total"); n != 0 {
			t.Errorf("agent %s deleted %v servers", site, n)
		}
	}
}

// TestFaultStoppedAndForeign: a VM whose machine stops (its process dies:
// the local cloud lists it stopped, like a SHUTOFF server) is deleted after
// the error delay, with the stop in the lifecycle log; a server another
// hub booted in the same project is never touched.
func TestFaultStoppedAndForeign(t *testing.T) {
	e := startFaults(t, 4*time.Minute, Options{Replace: map[string]string{"error_delay: 5m": "error_delay: 5s"}})
	vms := e.busyVMs("west", 2)

	// A server of another hub, in west's project: the agent adopts it when
	// it starts again (as after an upgrade).
	lc, err := localcloud.New(localcloud.Config{VMAgent: "/bin/sleep", VMArgs: []string{"600"}, Dir: e.sys.CloudDir("west"),
		Flavors: []protocol.Flavor{{Name: "c2.small", VCPUs: 2, RAMMiB: 4096}}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := lc.Boot(e.ctx, driver.BootSpec{Name: "other-hubs-vm", Flavor: "c2.small",
		Metadata: map[string]string{driver.MetaHub: "another-hub", driver.MetaGroup: "atlas"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Kill("west"); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Restart("west"); err != nil {
		t.Fatal(err)
	}
	e.poll(60*time.Second, "the hub to count the other hub's server as foreign", func() bool {
		return e.sites()["west"].ForeignVMs >= 1
	})

	// One VM's machine stops.
	var victim localVM
	for _, vm := range vms {
		victim = vm
		break
	}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := e.poll(90*time.Second, "the stopped VM to be deleted", func() bool {
		_, there := e.cloud("west")[victim.ID]
		return !there
	})
	t.Logf("stopped VM deleted %s after its machine stopped (error delay 5s)", took.Round(100*time.Millisecond))
	stopped, deleted := false, false
	for _, x := range e.events() {
		if x.VM == victim.ID && x.Kind == "stopped" {
			stopped = true
		}
		if x.VM == victim.ID && x.Kind == "delete" && strings.Contains(x.Detail, "error") {
			deleted = true
		}
	}
	if !stopped || !deleted {
		t.Errorf("lifecycle log lacks the stop (%v) or the delete for it (%v)", stopped, deleted)
	}
	delete(vms, victim.ID)
	e.alive("west", vms)
	if _, ok := e.cloud("west")[other.ID]; !ok {
		t.Fatal("the other hub's server was deleted")
	}
}

// udpProxy forwards UDP datagrams between clients and an upstream, one
// upstream socket per client, and drops everything while told to.
type udpProxy struct {
	ln       *net.UDPConn
	upstream atomic.Pointer[net.UDPAddr]
	drop     atomic.Bool
	mu       sync.Mutex
	clients  map[string]*net.UDPConn
	done     chan struct{}
}

func newUDPProxy() (*udpProxy, error) {
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	p := &udpProxy{ln: ln, clients: map[string]*net.UDPConn{}, done: make(chan struct{})}
	go p.serve()
	return p, nil
}

func (p *udpProxy) Addr() string { return p.ln.LocalAddr().String() }

func (p *udpProxy) SetUpstream(addr string) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err == nil {
		p.upstream.Store(a)
	}
}

// Drop starts or ends the partition.
func (p *udpProxy) Drop(on bool) { p.drop.Store(on) }

func (p *udpProxy) serve() {
	buf := make([]byte, 65536)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up := p.upstream.Load()
		if up == nil || p.drop.Load() {
			continue
		}
		c := p.client(from, up)
		if c != nil {
			_, _ = c.Write(buf[:n])
		}
	}
}

// client returns the upstream socket of one client, starting its return
// path.
func (p *udpProxy) client(from, up *net.UDPAddr) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[from.String()]; ok {
		return c
	}
	c, err := net.DialUDP("udp", nil, up)
	if err != nil {
		return nil
	}
	p.clients[from.String()] = c
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if !p.drop.Load() {
				_, _ = p.ln.WriteToUDP(buf[:n], from)
			}
		}
	}()
	return c
}

func (p *udpProxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		_ = c.Close()
	}
}

// metricValue reads one counter or gauge (summed over its labels) from a
// Prometheus text page.
func metricValue(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := strings.TrimPrefix(line, name)
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
			sum += v
		}
	}
	return sum
}
