// Package scale is the hub's scale harness: one real hub process, many
// simulated agents speaking the real protocol over QUIC with mutual TLS on
// loopback, tens of thousands of VMs with churn, a large simulated queue,
// and the status page, /metrics and the JSON API read while it runs. It
// measures what the hub costs: CPU (cores), memory, plan-cycle time,
// command round trips and API latency.
//
// The agents are simulated (no cloud, no vmagents): the point is the hub's
// cost at 100 clouds, which no loopback machine could reach with real
// agents and VMs. The hub binary is black-box, so the same harness
// measures older builds side by side.
package scale

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// Options configure a run.
type Options struct {
	// Hub is the hub binary to measure.
	Hub string
	// Dir holds the run's files (certificates, config, state, log).
	Dir string
	// Clouds and VMsPerCloud size the fleet; IdleJobs the queue.
	Clouds      int
	VMsPerCloud int
	IdleJobs    int
	// PlanEvery is the hub's plan cycle; ScrapeEvery how often the status
	// page and /metrics are read; APIEvery how often /api/v1/sites is.
	PlanEvery   time.Duration
	ScrapeEvery time.Duration
	APIEvery    time.Duration
	// Warmup is how long to run before measuring; Measure how long the
	// measured window is.
	Warmup  time.Duration
	Measure time.Duration
	// FullInventories makes the agents send full inventories every
	// interval and on every change, as agents did before deltas (and as
	// hubs without deltas need).
	FullInventories bool
	// ErrorsPerMinute is how many VMs, fleet-wide, go into ERROR each
	// minute (the hub deletes them and boots replacements).
	ErrorsPerMinute int
	// Log receives progress lines.
	Log io.Writer
}

// Result is what a run measured over its window.
type Result struct {
	Hub            string
	CPUCores       float64
	RSSMiB         float64 // highest resident set seen in the window
	HWMMiB         float64 // the process's peak resident set
	PlanP50        time.Duration
	PlanP99        time.Duration
	Plans          int
	CommandP99     time.Duration // zero when the hub does not export it
	Commands       int
	APIP99         time.Duration
	APIRequests    int
	PageP99        time.Duration
	MetricsP99     time.Duration
	PageBytes      int
	Boots, Deletes int // commands seen by the simulated agents in the window
}

// Run runs the harness once against o.Hub.
func Run(ctx context.Context, o Options) (Result, error) {
	res := Result{Hub: o.Hub}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return res, err
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "scale: "+format+"\n", args...)
		}
	}
	pkiDir := filepath.Join(o.Dir, "pki")
	_ = os.RemoveAll(pkiDir)
	if err := pki.InitCA(pkiDir, []string{"127.0.0.1"}, time.Now()); err != nil {
		return res, err
	}
	ca, err := pki.LoadCA(pkiDir)
	if err != nil {
		return res, err
	}
	caCert, err := pki.LoadCert(filepath.Join(pkiDir, pki.CACertFile))
	if err != nil {
		return res, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	quicPort, err := freePort("udp")
	if err != nil {
		return res, err
	}
	httpPort, err := freePort("tcp")
	if err != nil {
		return res, err
	}
	cfg, err := writeFiles(o, pkiDir, quicPort, httpPort)
	if err != nil {
		return res, err
	}
	_ = os.Remove(filepath.Join(o.Dir, "hub.db"))
	logFile, err := os.Create(filepath.Join(o.Dir, "hub.log"))
	if err != nil {
		return res, err
	}
	defer logFile.Close()
	cmd := exec.Command(o.Hub, "run", "--config", cfg, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start hub: %w", err)
	}
	pid := cmd.Process.Pid
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	if err := waitHTTP(ctx, base+"/metrics", 30*time.Second); err != nil {
		return res, fmt.Errorf("hub did not come up (see %s/hub.log): %w", o.Dir, err)
	}
	logf("hub %s up (pid %d); starting %d agents with %d VMs each", o.Hub, pid, o.Clouds, o.VMsPerCloud)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fleet := &fleet{}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range o.Clouds {
		name := fmt.Sprintf("c%03d", i)
		iss, err := ca.IssueAgent(name, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
		if err != nil {
			return res, err
		}
		cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
		if err != nil {
			return res, err
		}
		a := newAgent(name, o.VMsPerCloud, fleet)
		a.fullOnly = o.FullInventories
		fleet.add(a)
		tc := protocol.ClientTLS(roots, cert, "127.0.0.1")
		addr := fmt.Sprintf("127.0.0.1:%d", quicPort)
		wg.Go(func() { a.run(ctx, addr, tc) })
	}
	if o.ErrorsPerMinute > 0 {
		wg.Go(func() { fleet.churn(ctx, o.ErrorsPerMinute) })
	}
	if err := sleep(ctx, o.Warmup); err != nil {
		return res, err
	}
	if n := fleet.connected(); n < o.Clouds {
		return res, fmt.Errorf("only %d of %d agents connected after the warm-up (see %s/hub.log)", n, o.Clouds, o.Dir)
	}
	logf("warm-up done; measuring for %s", o.Measure)

	// The measured window.
	before, err := scrapeMetrics(ctx, base)
	if err != nil {
		return res, err
	}
	cpu0, err := cpuTicks(pid)
	if err != nil {
		return res, err
	}
	boots0, deletes0 := fleet.boots.Load(), fleet.deletes.Load()
	start := time.Now()
	var api, page, met []time.Duration
	var pageBytes int
	var mu sync.Mutex
	wctx, wcancel := context.WithTimeout(ctx, o.Measure)
	defer wcancel()
	var rw sync.WaitGroup
	rw.Go(func() {
		t := time.NewTicker(o.APIEvery)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			if d, _, err := timedGet(wctx, base+"/api/v1/sites"); err == nil {
				mu.Lock()
				api = append(api, d)
				mu.Unlock()
			}
		}
	})
	rw.Go(func() {
		t := time.NewTicker(o.ScrapeEvery)
		defer t.Stop()
		for {
			if d, n, err := timedGet(wctx, base+"/"); err == nil {
				mu.Lock()
				page, pageBytes = append(page, d), n
				mu.Unlock()
			}
			if d, _, err := timedGet(wctx, base+"/metrics"); err == nil {
				mu.Lock()
				met = append(met, d)
				mu.Unlock()
			}
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
	})
	rw.Go(func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			if rss, _, err := memory(pid); err == nil {
				mu.Lock()
				res.RSSMiB = max(res.RSSMiB, rss)
				mu.Unlock()
			}
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
	})
	rw.Wait()
	wall := time.Since(start)
	cpu1, err := cpuTicks(pid)
	if err != nil {
		return res, err
	}
	after, err := scrapeMetrics(ctx, base)
	if err != nil {
		return res, err
	}
	_, hwm, _ := memory(pid)
	res.HWMMiB = hwm
	res.CPUCores = float64(cpu1-cpu0) / clockTicks / wall.Seconds()
	plan := after.histogram("canopy_hub_plan_cycle_seconds").minus(before.histogram("canopy_hub_plan_cycle_seconds"))
	res.PlanP50, res.PlanP99, res.Plans = plan.quantile(0.5), plan.quantile(0.99), int(plan.count)
	cmdH := after.histogram("canopy_hub_command_seconds").minus(before.histogram("canopy_hub_command_seconds"))
	res.CommandP99, res.Commands = cmdH.quantile(0.99), int(cmdH.count)
	res.APIP99, res.APIRequests = percentile(api, 0.99), len(api)
	res.PageP99, res.MetricsP99, res.PageBytes = percentile(page, 0.99), percentile(met, 0.99), pageBytes
	res.Boots, res.Deletes = int(fleet.boots.Load()-boots0), int(fleet.deletes.Load()-deletes0)
	return res, nil
}

// writeFiles writes the workload and the hub's config.
func writeFiles(o Options, pkiDir string, quicPort, httpPort int) (string, error) {
	work := filepath.Join(o.Dir, "workload.yaml")
	// Three groups, four shapes; long jobs, so the queue stays deep.
	type shape struct {
		group      string
		cpus, mem  int
		share      float64
		runtimeMin int
	}
	shapes := []shape{{"atlas", 1, 2000, 0.4, 90}, {"atlas", 8, 16000, 0.1, 240}, {"belle", 2, 4000, 0.3, 60}, {"canfar", 4, 8000, 0.2, 120}}
	var b strings.Builder
	b.WriteString("jobs:\n")
	for _, s := range shapes {
		fmt.Fprintf(&b, "  - group: %s\n    vm_type: el9\n    cpus: %d\n    memory_mib: %d\n    arrivals:\n", s.group, s.cpus, s.mem)
		fmt.Fprintf(&b, "      - {at: 0s, count: %d, runtime: %dm}\n", max(1, int(float64(o.IdleJobs)*s.share)), s.runtimeMin)
	}
	if err := os.WriteFile(work, []byte(b.String()), 0o600); err != nil {
		return "", err
	}
	cfg := filepath.Join(o.Dir, "hub.yaml")
	text := fmt.Sprintf(`id: scale-hub
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
tls_dir: %s
state_file: %s
plan_every: %s
heartbeat_every: 5s
inventory_every: 30s
planner:
  error_delay: 30s
  keep_alive: 10m
  max_boots_per_cloud: 20
demand:
  source: trace
  trace:
    file: %s
    time_scale: 1
`, quicPort, httpPort, pkiDir, filepath.Join(o.Dir, "hub.db"), o.PlanEvery, work)
	return cfg, os.WriteFile(cfg, []byte(text), 0o600)
}

// fleet is every simulated agent, for churn and counters.
type fleet struct {
	mu      sync.Mutex
	agents  []*agent
	boots   atomic.Int64
	deletes atomic.Int64
}

func (f *fleet) add(a *agent) {
	f.mu.Lock()
	f.agents = append(f.agents, a)
	f.mu.Unlock()
}

func (f *fleet) connected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.agents {
		if a.up.Load() {
			n++
		}
	}
	return n
}

// churn puts random VMs into ERROR at the given rate.
func (f *fleet) churn(ctx context.Context, perMinute int) {
	t := time.NewTicker(time.Minute / time.Duration(perMinute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		a := f.agents[rand.N(len(f.agents))]
		f.mu.Unlock()
		a.breakOne()
	}
}

// agent is one simulated site agent: a cloud of VMs in memory.
type agent struct {
	name  string
	fleet *fleet
	epoch string
	up    atomic.Bool
	// fullOnly: no deltas (Options.FullInventories).
	fullOnly bool

	mu      sync.Mutex
	hubID   string
	maxVMs  int
	vms     map[string]*protocol.VM // by id
	seq     uint64
	nextID  int
	changed chan struct{}
}

var groups = []string{"atlas", "belle", "canfar"}

func newAgent(name string, n int, f *fleet) *agent {
	a := &agent{name: name, fleet: f, epoch: fmt.Sprintf("%s-%d", name, rand.Int64()), vms: map[string]*protocol.VM{},
		changed: make(chan struct{}, 1), maxVMs: n + n/20}
	now := time.Now().UTC()
	for i := range n {
		a.addVM(fmt.Sprintf("canopy-%s-p0-0-%d", name, i), groups[i%len(groups)], now.Add(-time.Hour), true)
	}
	return a
}

func (a *agent) addVM(name, group string, created time.Time, ready bool) *protocol.VM {
	a.nextID++
	vm := &protocol.VM{ID: fmt.Sprintf("%s-vm-%06d", a.name, a.nextID), Name: name, Flavor: "c8", Image: "el9",
		Group: group, VMType: "el9", State: protocol.VMActive, Hub: "scale-hub", CreatedAt: created, Ready: ready}
	if ready {
		vm.ReadyAt, vm.LastSeen = created, time.Now().UTC()
	}
	a.vms[vm.ID] = vm
	return vm
}

func (a *agent) breakOne() {
	a.mu.Lock()
	for _, vm := range a.vms {
		if vm.State == protocol.VMActive {
			vm.State, vm.CloudStatus, vm.Fault = protocol.VMError, "ERROR", "simulated hypervisor failure"
			break
		}
	}
	a.mu.Unlock()
	a.markChanged()
}

func (a *agent) markChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func (a *agent) inventory() protocol.Inventory {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	inv := protocol.Inventory{Seq: a.seq, TakenAt: time.Now().UTC(),
		Flavors: []protocol.Flavor{{ID: "c8", Name: "c8", VCPUs: 8, RAMMiB: 16000, DiskGiB: 40}},
		Limits:  protocol.Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: a.maxVMs}}
	inv.VMs = make([]protocol.VM, 0, len(a.vms))
	for _, vm := range a.vms {
		inv.VMs = append(inv.VMs, *vm)
	}
	slices.SortFunc(inv.VMs, func(x, y protocol.VM) int { return strings.Compare(x.ID, y.ID) })
	inv.Limits.UsedInstances = len(inv.VMs)
	inv.Limits.UsedCores = 8 * len(inv.VMs)
	return inv
}

// run keeps a session with the hub until ctx ends, reconnecting.
func (a *agent) run(ctx context.Context, addr string, tc *tls.Config) {
	for ctx.Err() == nil {
		_ = a.session(ctx, addr, tc)
		a.up.Store(false)
		if sleep(ctx, time.Second+rand.N(time.Second)) != nil {
			return
		}
	}
}

func (a *agent) session(ctx context.Context, addr string, tc *tls.Config) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	qc, err := quic.DialAddr(dctx, addr, tc, protocol.QUICConfig())
	cancel()
	if err != nil {
		return err
	}
	defer func() { _ = qc.CloseWithError(0, "bye") }()
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	conn := protocol.NewConn(st, st)
	w, err := protocol.ClientHandshake(conn, protocol.Hello{Site: a.name, Software: "scale", Epoch: a.epoch})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.hubID = w.HubID
	a.mu.Unlock()
	// As the real agent: a full inventory, then deltas (on change,
	// debounced, and an often empty one with the checksum every interval),
	// a full one again when the hub asks.
	var df protocol.Differ
	var sendMu sync.Mutex
	full := func() error {
		sendMu.Lock()
		defer sendMu.Unlock()
		inv := a.inventory()
		if err := conn.Send(inv); err != nil {
			return err
		}
		df.Full(inv)
		return nil
	}
	delta := func(checksum bool) error {
		if a.fullOnly {
			return full()
		}
		sendMu.Lock()
		defer sendMu.Unlock()
		inv := a.inventory()
		d, empty := df.Delta(inv, checksum)
		if empty && !checksum {
			return nil
		}
		if err := conn.Send(d); err != nil {
			return err
		}
		df.Sent(inv)
		return nil
	}
	if err := full(); err != nil {
		return err
	}
	a.up.Store(true)
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	go func() { <-sctx.Done(); st.CancelRead(0); _ = st.Close() }()
	errc := make(chan error, 3)
	resync := make(chan struct{}, 1)
	go func() {
		hb := time.NewTicker(w.HeartbeatEvery)
		defer hb.Stop()
		var seq uint64
		for {
			select {
			case <-sctx.Done():
				errc <- sctx.Err()
				return
			case <-hb.C:
			}
			seq++
			if err := conn.Send(protocol.Heartbeat{Seq: seq, SentAt: time.Now().UTC()}); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		// Spread the agents' checksum deltas over the interval, as real
		// agents started at different times are.
		first := time.NewTimer(rand.N(w.InventoryEvery))
		defer first.Stop()
		var tick <-chan time.Time
		for {
			var err error
			select {
			case <-sctx.Done():
				errc <- sctx.Err()
				return
			case <-first.C:
				t := time.NewTicker(w.InventoryEvery)
				defer t.Stop()
				tick = t.C
				err = delta(true)
			case <-tick:
				err = delta(true)
			case <-a.changed:
				err = sleep(sctx, 300*time.Millisecond)
				if err == nil {
					err = delta(false)
				}
			case <-resync:
				err = full()
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			m, err := conn.Recv()
			if err != nil {
				errc <- err
				return
			}
			switch v := m.(type) {
			case protocol.Command:
				if err := conn.Send(a.execute(v)); err != nil {
					errc <- err
					return
				}
				a.markChanged()
			case protocol.Resync:
				select {
				case resync <- struct{}{}:
				default:
				}
			}
		}
	}()
	return <-errc
}

// execute carries a command out at once: boots appear ready (as a VM would
// a minute later), retired VMs go (as if drained), deleted ones vanish.
func (a *agent) execute(c protocol.Command) protocol.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := protocol.Result{CommandID: c.ID, OK: true}
	now := time.Now().UTC()
	switch c.Op {
	case protocol.CmdBoot:
		have := map[string]bool{}
		for _, vm := range a.vms {
			have[vm.Name] = true
		}
		for _, n := range c.Boot.Names {
			if !have[n] {
				vm := a.addVM(n, c.Boot.Group, now, true)
				vm.PlanID = c.Boot.PlanID
				r.VMIDs = append(r.VMIDs, vm.ID)
				a.fleet.boots.Add(1)
			}
		}
	case protocol.CmdRetire:
		for _, id := range c.Retire.VMIDs {
			if _, ok := a.vms[id]; ok {
				delete(a.vms, id)
				r.VMIDs = append(r.VMIDs, id)
			}
		}
	case protocol.CmdDelete:
		for _, id := range c.Delete.VMIDs {
			if _, ok := a.vms[id]; ok {
				delete(a.vms, id)
				r.VMIDs = append(r.VMIDs, id)
				a.fleet.deletes.Add(1)
			}
		}
	}
	return r
}

func freePort(network string) (int, error) {
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func waitHTTP(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, _, err := timedGet(ctx, url); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return err
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

func timedGet(ctx context.Context, url string) (time.Duration, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return time.Since(t0), int(n), nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times (100 on
// every Linux architecture Canopy runs on).
const clockTicks = 100

// cpuTicks returns a process's user + system CPU time in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parens.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad CPU times", pid)
	}
	return ut + st, nil
}

// memory returns a process's resident set and its peak, in MiB.
func memory(pid int) (rss, hwm float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[0], 64)
		switch k {
		case "VmRSS":
			rss = kb / 1024
		case "VmHWM":
			hwm = kb / 1024
		}
	}
	return rss, hwm, sc.Err()
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}
