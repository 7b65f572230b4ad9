package sim

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/snapshot"
	"github.com/canopy-grid/canopy/protocol"
)

// simHub is the hub id the simulated servers carry.
const simHub = "sim"

// Options override a trace's settings for one run; zero fields keep the
// trace's.
type Options struct {
	Seed     uint64
	Duration time.Duration
	Drain    time.Duration
	// NoDrain stops the run at the end of Duration.
	NoDrain bool
}

// Run replays the trace and returns its summary. It is deterministic: the
// same trace and options give the same summary.
func Run(tr *Trace, opt Options) (*Summary, error) {
	e, err := newEngine(tr, opt)
	if err != nil {
		return nil, err
	}
	e.run()
	return e.summary(), nil
}

// vmPhase is where a simulated server is.
type vmPhase uint8

const (
	phaseBooting  vmPhase = iota // created, not ACTIVE
	phaseStarting                // ACTIVE, startd not joined
	phaseRunning                 // in the pool
	phaseRetiring                // told to retire
	phaseError                   // ERROR
	phaseGone                    // deleted
)

type runJob struct {
	shape  int32
	finish time.Time
}

type simVM struct {
	id, name  string
	cloud     int
	group     string
	vmType    string
	image     string
	flavor    protocol.Flavor
	keepAlive time.Duration
	// maxLifetime is the jobs' +VMMaxLifetime the VM was booted for (listed
	// back like the agent does from the server's metadata).
	maxLifetime time.Duration

	phase                               vmPhase
	created, activeAt, registerAt       time.Time
	listedAt                            time.Time
	willError, neverRegister            bool
	registeredAt, idleSince, retiringAt time.Time
	errorSince                          time.Time
	jobsStarted                         int
	freeCpus, freeMem                   int
	jobs                                []runJob
	nextFinish                          time.Time
	// checkin is the VM's own count of its jobs, as vmagent reports it.
	checkin protocol.VMJobs
}

type batch struct {
	arrived time.Time
	count   int
	run     Range
}

type simShape struct {
	sh      planner.Shape
	sites   []string // nil: any
	queue   []batch
	head    int
	idle    int
	running int
}

type arrival struct {
	at    time.Duration
	job   int
	shape int
}

type simCloud struct {
	spec    CloudSpec
	flavors []protocol.Flavor
	stats   CloudStats
	vms     int // live VMs, for the peak
	// used is what Canopy's servers there use.
	used planner.Usage
}

type engine struct {
	tr    *Trace
	opt   Options
	rng   *rand.Rand
	start time.Time
	now   time.Time
	end   time.Time // arrivals and events stop
	stop  time.Time // hard stop

	clouds  []simCloud
	cloudOf map[string]int
	groups  []planner.Group
	shapes  []simShape
	buckets map[[2]string][]int

	arrivals []arrival
	nextArr  int
	events   []Event
	nextEv   int

	vms    []*simVM
	byID   map[string]*simVM
	byName map[string]*simVM
	nextID int
	hist   planner.History

	// The hub's side: its durable intent (changed through tx, as the
	// hub's control loop does), the snapshot builder it plans with, and
	// when a pool outage (an empty pool view) ends.
	st       *intent.State
	tx       *intent.Tx
	builder  *snapshot.Builder
	poolDown time.Time
	planSeq  int

	// Reused buffers for the inventories and the pool view.
	snapShapes []planner.Shape
	invVMs     [][]protocol.VM
	machines   map[string]demand.Machine

	sum       Summary
	groupStat map[string]*GroupStats
	// preempted are the VMs preemptible clouds took back, recent first
	// pruned.
	preempted []planner.Preemption
	day       *dayAcc
	days      []*dayAcc
	allWaits  waitHist
}

func newEngine(tr *Trace, opt Options) (*engine, error) {
	e := &engine{tr: tr, opt: opt, start: tr.Start, cloudOf: map[string]int{}, buckets: map[[2]string][]int{},
		byID: map[string]*simVM{}, byName: map[string]*simVM{}, st: intent.New(), builder: snapshot.NewBuilder(),
		machines: map[string]demand.Machine{}}
	e.tx = e.st.Begin()
	seed := tr.Seed
	if opt.Seed != 0 {
		seed = opt.Seed
	}
	e.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	dur := tr.Duration
	if opt.Duration > 0 {
		dur = opt.Duration
	}
	drain := tr.Drain
	if opt.Drain > 0 {
		drain = opt.Drain
	}
	if opt.NoDrain {
		drain = 0
	}
	e.now = tr.Start
	e.end = tr.Start.Add(dur)
	e.stop = e.end.Add(drain)
	e.sum = Summary{Seed: seed, Start: tr.Start, Duration: dur, Step: tr.Step}

	byName := map[string]protocol.Flavor{}
	for _, f := range tr.Flavors {
		byName[f.Name] = f
	}
	for _, spec := range tr.Clouds {
		c := simCloud{spec: spec, stats: CloudStats{Site: spec.Site}}
		if len(spec.Flavors) == 0 {
			c.flavors = slices.Clone(tr.Flavors)
		}
		for _, name := range spec.Flavors {
			c.flavors = append(c.flavors, byName[name])
		}
		e.cloudOf[spec.Site] = len(e.clouds)
		e.clouds = append(e.clouds, c)
	}
	e.groups = slices.Clone(tr.Groups)
	e.invVMs = make([][]protocol.VM, len(e.clouds))

	shapeOf := map[string]int{}
	for ji, j := range tr.Jobs {
		key := shapeKey(j.Shape)
		si, ok := shapeOf[key]
		if !ok {
			si = len(e.shapes)
			shapeOf[key] = si
			e.shapes = append(e.shapes, simShape{sh: j.Shape, sites: expand(tr.Aliases, j.Shape.Clouds)})
			k := [2]string{j.Shape.Group, j.Shape.VMType}
			e.buckets[k] = append(e.buckets[k], si)
		}
		for at := j.At; ; at += j.Every {
			if at <= dur {
				e.arrivals = append(e.arrivals, arrival{at: at, job: ji, shape: si})
			}
			if j.Every <= 0 || at+j.Every > j.Until {
				break
			}
		}
	}
	slices.SortStableFunc(e.arrivals, func(a, b arrival) int { return cmp.Compare(a.at, b.at) })
	e.events = slices.Clone(tr.Events)
	slices.SortStableFunc(e.events, func(a, b Event) int { return cmp.Compare(a.At, b.At) })
	return e, nil
}

func shapeKey(sh planner.Shape) string {
	return fmt.Sprintf("%s|%s|%d|%d|%d|%s|%s|%d|%d", sh.Group, sh.VMType, sh.Cpus, sh.MemoryMiB, sh.DiskKiB, sh.Image,
		strings.Join(sh.Clouds, ","), sh.KeepAlive, sh.JobsPerVM)
}

func expand(aliases map[string][]string, list []string) []string {
	if len(list) == 0 {
		return nil
	}
	var out []string
	for _, name := range list {
		if sites, ok := aliases[name]; ok {
			out = append(out, sites...)
		} else {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func allowed(sites []string, site string) bool {
	if sites == nil {
		return true
	}
	_, ok := slices.BinarySearch(sites, site)
	return ok
}

// draw picks a duration from r.
func (e *engine) draw(r Range) time.Duration {
	if r.Hi <= r.Lo {
		return r.Lo
	}
	return r.Lo + time.Duration(e.rng.Int64N(int64(r.Hi-r.Lo)+1))
}

func (e *engine) chance(p float64) bool {
	return p > 0 && e.rng.Float64() < p
}

// run advances the clock step by step until the arrivals are over and the
// queue is empty, or the drain time is up.
func (e *engine) run() {
	for {
		if _, _, more := e.step(); !more {
			break
		}
	}
}

// step advances the clock by one step: the world moves, the hub builds its
// snapshot and plans, the plan is carried out. It returns the plan, what
// the builder concluded, and whether the run goes on.
func (e *engine) step() (planner.Plan, snapshot.Report, bool) {
	e.now = e.now.Add(e.tr.Step)
	e.sum.Steps++
	e.enterDay()
	e.applyEvents()
	e.arrive()
	e.advanceVMs()
	e.negotiate()
	snap, rep := e.snapshot()
	snap.Preemptions = e.recentPreemptions()
	plan := planner.Decide(snap)
	e.check(snap, plan)
	e.hist.Observe(e.now, plan)
	e.execute(plan)
	e.record(plan)
	e.tx.Reset() // nothing to make durable in a simulation
	more := e.now.Before(e.stop) && (e.now.Before(e.end) || e.nextArr < len(e.arrivals) || e.jobsLeft() > 0)
	return plan, rep, more
}

// poolOut reports whether the simulated collector lists no machine now.
func (e *engine) poolOut() bool { return e.now.Before(e.poolDown) }

func (e *engine) jobsLeft() int {
	n := 0
	for i := range e.shapes {
		n += e.shapes[i].idle + e.shapes[i].running
	}
	return n
}

func (e *engine) offset() time.Duration { return e.now.Sub(e.start) }

func (e *engine) applyEvents() {
	for e.nextEv < len(e.events) && e.events[e.nextEv].At <= e.offset() && e.now.Before(e.end.Add(e.tr.Step)) {
		ev := &e.events[e.nextEv]
		e.nextEv++
		if ev.PoolOutage > 0 {
			e.poolDown = e.start.Add(ev.At + ev.PoolOutage)
			continue
		}
		if ev.Cloud != "" {
			for _, ci := range e.tr.cloudsMatching(ev.Cloud) {
				for _, kv := range ev.Set {
					// Checked at parse time.
					_ = setCloudKey(&e.clouds[ci].spec, kv, ev.At)
				}
				if f := e.clouds[ci].spec.Reclaim; f > 0 {
					e.reclaim(ci, f)
					e.clouds[ci].spec.Reclaim = 0
				}
			}
			continue
		}
		for gi := range e.groups {
			if e.groups[gi].Name == ev.Group {
				for _, kv := range ev.Set {
					_ = setGroupKey(&e.groups[gi], kv)
				}
			}
		}
	}
}

func (e *engine) arrive() {
	for e.nextArr < len(e.arrivals) && e.arrivals[e.nextArr].at <= e.offset() {
		a := e.arrivals[e.nextArr]
		e.nextArr++
		j := &e.tr.Jobs[a.job]
		if j.Count == 0 {
			continue
		}
		s := &e.shapes[a.shape]
		s.queue = append(s.queue, batch{arrived: e.start.Add(a.at), count: j.Count, run: j.Run})
		s.idle += j.Count
		e.sum.Jobs.Submitted += j.Count
	}
}

// advanceVMs moves servers through booting, starting and the pool, ends
// jobs that are done and deletes retired VMs once empty.
func (e *engine) advanceVMs() {
	now := e.now
	deadline := e.tr.Config.RetireDeadline
	for _, vm := range e.vms {
		c := &e.clouds[vm.cloud]
		switch vm.phase {
		case phaseBooting:
			if now.Before(vm.activeAt) {
				continue
			}
			if vm.willError {
				vm.phase = phaseError
				vm.errorSince = now
				c.stats.Errors++
				e.hist.BootFailed(c.spec.Site, vm.image, protocol.ErrClassNoHost, now, "server went to ERROR while booting")
				continue
			}
			vm.phase = phaseStarting
			fallthrough
		case phaseStarting:
			if vm.neverRegister || now.Before(vm.registerAt) {
				continue
			}
			vm.phase = phaseRunning
			vm.registeredAt = now
			vm.idleSince = now
		case phaseRunning, phaseRetiring:
			if len(vm.jobs) > 0 && !now.Before(vm.nextFinish) {
				e.finishJobs(vm)
			}
			if vm.phase == phaseRetiring {
				if len(vm.jobs) == 0 {
					e.gone(vm)
				} else if deadline > 0 && !now.Before(vm.retiringAt.Add(deadline)) {
					e.killJobs(vm)
					e.gone(vm)
				}
			}
		}
	}
	e.vms = slices.DeleteFunc(e.vms, func(vm *simVM) bool { return vm.phase == phaseGone })
}

func (e *engine) finishJobs(vm *simVM) {
	now := e.now
	next := time.Time{}
	kept := vm.jobs[:0]
	for _, j := range vm.jobs {
		if !now.Before(j.finish) {
			s := &e.shapes[j.shape]
			s.running--
			vm.freeCpus += s.sh.Cpus
			vm.freeMem += s.sh.MemoryMiB
			e.sum.Jobs.Finished++
			e.day.finished++
			continue
		}
		kept = append(kept, j)
		if next.IsZero() || j.finish.Before(next) {
			next = j.finish
		}
	}
	vm.jobs = kept
	vm.nextFinish = next
	if len(kept) == 0 {
		vm.idleSince = now
	}
}

// killJobs ends a VM's jobs before they finish; they go back to the queue.
func (e *engine) killJobs(vm *simVM) {
	e.sum.Failures.KilledJobs += len(vm.jobs)
	e.requeue(vm)
}

// requeue puts a VM's jobs back in the queue, with the run time they had
// left.
func (e *engine) requeue(vm *simVM) {
	for _, j := range vm.jobs {
		s := &e.shapes[j.shape]
		s.running--
		s.idle++
		s.queue = append(s.queue, batch{arrived: e.now, count: 1, run: Range{j.finish.Sub(e.now), j.finish.Sub(e.now)}})
	}
	vm.jobs = nil
}

// reclaim makes cloud ci take back a fraction of the VMs on its
// preemptible capacity (rounded up), oldest first: deleted without Canopy
// asking, their jobs back in the queue (preempted, not killed by Canopy).
func (e *engine) reclaim(ci int, frac float64) {
	sp := &e.clouds[ci].spec
	var on []*simVM
	for _, vm := range e.vms {
		if vm.cloud == ci && vm.phase != phaseGone && (sp.Preemptible || slices.Contains(sp.PreemptibleFlavors, vm.flavor.Name)) {
			on = append(on, vm)
		}
	}
	n := int(math.Ceil(frac * float64(len(on))))
	for _, vm := range on[:n] {
		e.sum.Failures.PreemptedJobs += len(vm.jobs)
		e.requeue(vm)
		e.clouds[ci].stats.Preempted++
		e.preempted = append(e.preempted, planner.Preemption{Site: sp.Site, VMID: vm.id, At: e.now})
		e.gone(vm)
	}
	e.vms = slices.DeleteFunc(e.vms, func(vm *simVM) bool { return vm.phase == phaseGone })
}

// recentPreemptions are the preemptions within the planner's window, as
// the hub would keep them.
func (e *engine) recentPreemptions() []planner.Preemption {
	from := e.now.Add(-cfgOr(e.tr.Config.PreemptWindow, planner.DefaultPreemptWindow))
	e.preempted = slices.DeleteFunc(e.preempted, func(p planner.Preemption) bool { return p.At.Before(from) })
	return e.preempted
}

func (e *engine) gone(vm *simVM) {
	vm.phase = phaseGone
	delete(e.byID, vm.id)
	delete(e.byName, vm.name)
	c := &e.clouds[vm.cloud]
	c.vms--
	c.used.Cores -= vm.flavor.VCPUs
	c.used.RAMMiB -= vm.flavor.RAMMiB
	c.used.VMs--
}

// negotiate gives idle jobs to VMs in the pool with room, oldest jobs of a
// shape first, the way the batch pool's negotiator would; none while the
// collector is out (the negotiator sees no machine).
func (e *engine) negotiate() {
	if e.poolOut() {
		return
	}
	for _, vm := range e.vms {
		if vm.phase != phaseRunning || (vm.freeCpus <= 0 && vm.freeMem <= 0) {
			continue
		}
		site := e.clouds[vm.cloud].spec.Site
		for _, si := range e.buckets[[2]string{vm.group, vm.vmType}] {
			s := &e.shapes[si]
			if s.idle == 0 || !allowed(s.sites, site) {
				continue
			}
			k := e.fit(s, vm)
			if k <= 0 {
				continue
			}
			e.start1(s, int32(si), vm, min(k, s.idle))
		}
	}
}

// fit is how many more jobs of s the VM takes.
func (e *engine) fit(s *simShape, vm *simVM) int {
	sh := &s.sh
	if sh.Cpus == 0 && sh.MemoryMiB == 0 {
		return max(1, sh.JobsPerVM) - len(vm.jobs)
	}
	n := -1
	if sh.Cpus > 0 {
		n = vm.freeCpus / sh.Cpus
	}
	if sh.MemoryMiB > 0 {
		if m := vm.freeMem / sh.MemoryMiB; n < 0 || m < n {
			n = m
		}
	}
	return n
}

// start1 starts n jobs of shape s on the VM, oldest first.
func (e *engine) start1(s *simShape, si int32, vm *simVM, n int) {
	for n > 0 && s.head < len(s.queue) {
		b := &s.queue[s.head]
		take := min(n, b.count)
		wait := e.now.Sub(b.arrived)
		e.day.waits.add(wait, take)
		e.allWaits.add(wait, take)
		for range take {
			f := e.now.Add(max(e.tr.Step, e.draw(b.run)))
			vm.jobs = append(vm.jobs, runJob{shape: si, finish: f})
			if vm.nextFinish.IsZero() || f.Before(vm.nextFinish) {
				vm.nextFinish = f
			}
		}
		b.count -= take
		n -= take
		s.idle -= take
		s.running += take
		vm.freeCpus -= take * s.sh.Cpus
		vm.freeMem -= take * s.sh.MemoryMiB
		vm.jobsStarted += take
		e.sum.Jobs.Started += take
		e.day.started += take
		if b.count == 0 {
			s.head++
		}
	}
	if s.head > 64 && s.head > len(s.queue)/2 {
		s.queue = append(s.queue[:0], s.queue[s.head:]...)
		s.head = 0
	}
}

// snapshot builds what the hub would hand the planner now, the way the
// hub does: the agents' inventories (servers the clouds list, with their
// own check-ins), the pool's view of the VMs and the queue, and the hub's
// intent, reconciled with the inventories as the hub's control loop does,
// through the hub's snapshot.Builder.
func (e *engine) snapshot() (planner.Snapshot, snapshot.Report) {
	now := e.now
	e.snapShapes = e.snapShapes[:0]
	for i := range e.shapes {
		s := &e.shapes[i]
		if s.idle == 0 && s.running == 0 {
			continue
		}
		sh := s.sh
		sh.Idle, sh.Running = s.idle, s.running
		e.snapShapes = append(e.snapShapes, sh)
	}

	// The inventories: what each cloud lists, and what its VMs report.
	for ci := range e.invVMs {
		e.invVMs[ci] = e.invVMs[ci][:0]
	}
	clear(e.machines)
	out := e.poolOut()
	for _, vm := range e.vms {
		if registered := vm.phase == phaseRunning || vm.phase == phaseRetiring; registered && !out {
			e.machines[vm.name] = e.machine(vm)
		}
		if now.Before(vm.listedAt) {
			continue // the cloud does not list it (yet)
		}
		pv := protocol.VM{ID: vm.id, Name: vm.name, Flavor: vm.flavor.Name, Image: vm.image, Group: vm.group, VMType: vm.vmType,
			Hub: simHub, CreatedAt: vm.created, State: protocol.VMActive, KeepAlive: vm.keepAlive, MaxLifetime: vm.maxLifetime}
		switch vm.phase {
		case phaseBooting:
			pv.State = protocol.VMBooting
		case phaseError:
			pv.State = protocol.VMError
		case phaseRunning, phaseRetiring:
			pv.Ready, pv.ReadyAt, pv.Retiring = true, vm.registeredAt, vm.phase == phaseRetiring
			vm.checkin = protocol.VMJobs{Running: len(vm.jobs), Claimed: len(vm.jobs), At: now}
			pv.Jobs = &vm.checkin
		}
		e.invVMs[vm.cloud] = append(e.invVMs[vm.cloud], pv)
	}
	clouds := make([]snapshot.Cloud, len(e.clouds))
	for ci := range e.clouds {
		c := &e.clouds[ci]
		sp := &c.spec
		// The project's usage counts every server, listed or not (a
		// listing that misses a server does not change its quota).
		l := sp.Limits
		u := c.used
		l.UsedCores = u.Cores + sp.Foreign.Cores
		l.UsedRAMMiB = u.RAMMiB + sp.Foreign.RAMMiB
		l.UsedInstances = u.VMs + sp.Foreign.VMs
		clouds[ci] = snapshot.Cloud{
			Settings: planner.Cloud{Site: sp.Site, Priority: sp.Priority, Paused: sp.Paused, Disabled: sp.Disabled,
				Caps: sp.Caps, SoftQuota: sp.SoftQuota, Foreign: sp.Foreign, KeepAlive: sp.KeepAlive, MaxLifetime: sp.MaxLifetime,
				Endpoint: sp.Endpoint, MaxInFlight: sp.MaxInFlight, HS06PerCore: e.tr.HS06PerCore,
				Preemptible: sp.Preemptible, PreemptibleFlavors: sp.PreemptibleFlavors},
			Connected: !sp.Disconnected, InventoryAt: now,
			Inventory: &protocol.Inventory{Flavors: c.flavors, Limits: l, VMs: e.invVMs[ci], TakenAt: now},
		}
	}
	e.hist.Failures.Prune(now.Add(-cfgOr(e.tr.Config.FailureWindow, planner.DefaultFailureWindow)))
	e.tx.SetHistory(e.hist.State())
	e.reconcile()
	return e.builder.Build(snapshot.Input{Now: now, HubID: simHub, Config: e.tr.Config, Groups: e.groups,
		VMTypes: e.tr.VMTypes, Aliases: e.tr.Aliases, DemandOK: true, Clouds: clouds, Intent: e.st,
		Demand: demand.Demand{Shapes: e.snapShapes, Machines: e.machines, TakenAt: now}})
}

// machine is the pool's view of a registered VM. Its free part shows only
// where an idle job would match it, as HTCondor's partitionable slot does
// for the real job source.
func (e *engine) machine(vm *simVM) demand.Machine {
	m := demand.Machine{VMName: vm.name, State: demand.MachineIdle, RunningJobs: len(vm.jobs), JobsStarted: vm.jobsStarted}
	switch {
	case vm.phase == phaseRetiring:
		m.State = demand.MachineDraining
	case len(vm.jobs) > 0:
		m.State = demand.MachineBusy
	}
	if len(vm.jobs) == 0 {
		m.IdleSince = vm.idleSince
	}
	if vm.phase == phaseRunning {
		site := e.clouds[vm.cloud].spec.Site
		for _, si := range e.buckets[[2]string{vm.group, vm.vmType}] {
			s := &e.shapes[si]
			if s.idle > 0 && allowed(s.sites, site) && e.fit(s, vm) > 0 {
				m.FreeCpus, m.FreeMemoryMiB = vm.freeCpus, vm.freeMem
				break
			}
		}
	}
	return m
}

// reconcile brings the intent in line with what the connected clouds list,
// as the hub's control loop does: boots that appeared or were lost,
// retired servers that are gone, error marks.
func (e *engine) reconcile() {
	listed := func(vm *simVM) bool { return vm != nil && !e.now.Before(vm.listedAt) }
	connected := func(site string) bool {
		ci, ok := e.cloudOf[site]
		return ok && !e.clouds[ci].spec.Disconnected
	}
	for name, p := range e.st.Pending {
		if !connected(p.Site) {
			continue
		}
		if listed(e.byName[name]) || (!p.AckedAt.IsZero() && e.now.Sub(p.AckedAt) > e.tr.BootListTimeout) {
			e.tx.DropPending(name)
		}
	}
	for id, r := range e.st.Retire {
		if connected(r.Site) && !listed(e.byID[id]) {
			e.tx.DropRetire(id)
		}
	}
	for _, vm := range e.vms {
		if vm.phase != phaseError || !listed(vm) || !connected(e.clouds[vm.cloud].spec.Site) {
			continue
		}
		if _, ok := e.st.Error[vm.id]; !ok {
			e.tx.PutError(intent.ErrorMark{VMID: vm.id, Site: e.clouds[vm.cloud].spec.Site, Since: e.now})
		}
	}
	for id, m := range e.st.Error {
		if !connected(m.Site) {
			continue
		}
		if vm := e.byID[id]; !listed(vm) || vm.phase != phaseError {
			e.tx.DropError(id)
		}
	}
}

// execute carries a plan out the way the hub and its agents would: the
// hub records retirement orders and boots in flight, agents delete (a
// VM reporting jobs only past a deadline), retire and boot.
func (e *engine) execute(p planner.Plan) {
	e.planSeq++
	planID := fmt.Sprintf("p%d", e.planSeq)
	for _, d := range p.Deletes {
		vm := e.byID[d.VMID]
		if vm == nil || vm.phase == phaseGone {
			continue
		}
		if !d.Deadline && len(vm.jobs) > 0 {
			// The agent refuses: it deletes a VM that reports jobs only
			// past a deadline. The planner should never have asked.
			e.violation(fmt.Sprintf("delete of %s running %d jobs without a deadline (%s: %s)", vm.name, len(vm.jobs), d.Rule, d.Reason))
			continue
		}
		c := &e.clouds[vm.cloud]
		switch d.Rule {
		case planner.RuleComeAlive:
			c.stats.NeverRegistered++
		case planner.RuleOverQuota:
			e.groupStats(vm.group).OverQuotaRetires++
		}
		c.stats.Deleted++
		if len(vm.jobs) > 0 {
			e.killJobs(vm)
		}
		e.gone(vm)
	}
	deadline := e.now.Add(cfgOr(e.tr.Config.RetireDeadline, planner.DefaultRetireDeadline))
	for _, r := range p.Retires {
		vm := e.byID[r.VMID]
		if vm == nil || vm.phase == phaseGone {
			continue
		}
		e.tx.PutRetire(intent.RetireOrder{VMID: r.VMID, Site: r.Site, Name: vm.name, At: e.now, Deadline: deadline,
			Rule: string(r.Rule), PlanID: planID})
		if vm.phase == phaseRetiring {
			continue
		}
		c := &e.clouds[vm.cloud]
		c.stats.Retired++
		if r.Rule == planner.RuleOverQuota {
			st := e.groupStats(vm.group)
			st.OverQuotaRetires++
			if len(vm.jobs) > 0 {
				st.OverQuotaBusy++
			}
		}
		if r.Rule == planner.RuleJobAlive {
			c.stats.NeverRanJob++
		}
		vm.phase = phaseRetiring
		vm.retiringAt = e.now
	}
	e.vms = slices.DeleteFunc(e.vms, func(vm *simVM) bool { return vm.phase == phaseGone })

	for _, b := range p.Boots {
		ci, ok := e.cloudOf[b.Site]
		if !ok {
			continue
		}
		c := &e.clouds[ci]
		fi := slices.IndexFunc(c.flavors, func(f protocol.Flavor) bool { return f.Name == b.Flavor })
		if fi < 0 {
			continue
		}
		f := c.flavors[fi]
		failed := 0
		why := ""
		class := protocol.ErrClassNoHost
		for range b.Count {
			switch {
			case e.offset() < c.spec.Outage:
				why, class = "cloud outage: service unavailable", protocol.ErrClassTransient
			case slices.Contains(c.spec.BadImages, b.Image):
				why, class = "image "+b.Image+" fails to boot", protocol.ErrClassInvalid
			case !e.fitsProject(ci, f):
				why, class = "quota exceeded", protocol.ErrClassQuota
				e.violation(fmt.Sprintf("boot of %s on %s beyond the project limits", f.Name, b.Site))
			case e.chance(c.spec.FailRate):
				why, class = "no valid host", protocol.ErrClassNoHost
			default:
				vm := e.boot(ci, b, f)
				e.tx.PutPending(intent.PendingBoot{Name: vm.name, Site: b.Site, Group: b.Group, VMType: b.VMType,
					Flavor: b.Flavor, Image: b.Image, PlanID: planID, Cpus: f.VCPUs, MemoryMiB: f.RAMMiB,
					KeepAlive: b.KeepAlive, MaxLifetime: b.MaxLifetime, OrderedAt: e.now, AckedAt: e.now})
				continue
			}
			failed++
		}
		c.stats.BootFailures += failed
		if failed > 0 {
			e.hist.BootFailed(b.Site, b.Image, class, e.now, why)
		}
		if failed < b.Count {
			e.hist.BootSucceeded(b.Site, b.Image, e.now)
		}
	}
}

// fitsProject reports whether one more server of f fits the cloud's real
// limits.
func (e *engine) fitsProject(ci int, f protocol.Flavor) bool {
	sp := &e.clouds[ci].spec
	cores, ram, n := e.clouds[ci].used.Cores, e.clouds[ci].used.RAMMiB, e.clouds[ci].used.VMs
	l := sp.Limits
	return (l.MaxCores < 0 || cores+sp.Foreign.Cores+f.VCPUs <= l.MaxCores) &&
		(l.MaxRAMMiB < 0 || ram+sp.Foreign.RAMMiB+f.RAMMiB <= l.MaxRAMMiB) &&
		(l.MaxInstances < 0 || n+sp.Foreign.VMs+1 <= l.MaxInstances)
}

func (e *engine) boot(ci int, b planner.Boot, f protocol.Flavor) *simVM {
	c := &e.clouds[ci]
	sp := &c.spec
	e.nextID++
	vm := &simVM{
		id: fmt.Sprintf("srv-%07d", e.nextID), name: fmt.Sprintf("%s-%07d", sp.Site, e.nextID),
		cloud: ci, group: b.Group, vmType: b.VMType, image: b.Image, flavor: f, keepAlive: b.KeepAlive, maxLifetime: b.MaxLifetime,
		created: e.now, listedAt: e.now, freeCpus: f.VCPUs, freeMem: f.RAMMiB,
	}
	boot := sp.Boot
	if e.chance(sp.SlowFraction) {
		boot = sp.SlowBoot
	}
	vm.activeAt = e.now.Add(e.draw(boot))
	vm.registerAt = vm.activeAt.Add(e.draw(sp.Register))
	vm.willError = e.chance(sp.ErrorRate)
	vm.neverRegister = e.chance(sp.NeverRegister)
	if e.chance(sp.UnlistedRate) {
		vm.listedAt = e.now.Add(sp.UnlistedFor)
		c.stats.Unlisted++
	}
	e.vms = append(e.vms, vm)
	c.stats.Boots++
	if c.stats.BootsByGroup == nil {
		c.stats.BootsByGroup = map[string]int{}
	}
	c.stats.BootsByGroup[b.Group]++
	c.vms++
	c.used.Cores += f.VCPUs
	c.used.RAMMiB += f.RAMMiB
	c.used.VMs++
	c.stats.PeakVMs = max(c.stats.PeakVMs, c.vms)
	e.day.boots++
	e.byID[vm.id] = vm
	e.byName[vm.name] = vm
	return vm
}
