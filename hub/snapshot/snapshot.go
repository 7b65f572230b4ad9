// Package snapshot builds the planner's input from what the hub knows: the
// agents' inventories, the job source's demand and the hub's durable intent.
// The hub and the simulator (`hub simulate`) build their snapshots with the
// same Builder, so that a simulation plans on exactly what production would
// see.
//
// # Evidence
//
// Canopy deletes a server only on fresh, positive evidence that no job runs
// there, or when a deadline an admin set has passed: unknown is not idle.
// The builder decides, VM by VM, what the evidence says (planner.Evidence):
//
//   - A cloud whose inventory is not fresh (agent not connected, no
//     inventory, or one older than Input.InventoryMaxAge): all its VMs are
//     unknown.
//   - The pool view (Demand.Machines) is evidence only when the poll worked
//     and the view is plausible. A view that suddenly lost most ready VMs —
//     fewer than half of those the last accepted view listed that still
//     exist and are not retiring, or of the ready VMs whose own check-in
//     count is fresh, or none at all while the queue shows running jobs —
//     counts as a failed poll (Report.PoolView "implausible").
//   - A VM the view lists is registered: busy if the pool or its own fresh
//     check-in says jobs run. A VM it does not list is unknown if its fresh
//     check-in reports jobs, or if it has no fresh count and was seen in the
//     pool before ("left the pool"); otherwise it is unregistered.
//   - A VM booting in the cloud is unregistered; one rebooting is unknown;
//     one in error or stopped is in error (unknown if it still reports
//     jobs); one being deleted or told to retire is retiring.
//
// An unknown VM keeps its last known state, so that its capacity is not
// booted for again elsewhere. Check-in freshness is judged by the agent,
// which reports a VM's job count (VM.Jobs) only while the VM's check-ins
// are fresh: a count in the inventory is fresh evidence.
//
// The Builder keeps clocks per VM between builds and counts only time with
// fresh evidence: unregistered time (planner.VM.Unregistered, for
// come-alive), idle time (the effective IdleSince is the later of the
// pool's and now less the fresh idle time), registered time without a job
// (the effective RegisteredAt, for job-alive) and unknown time
// (planner.VM.UnknownFor). This state is soft: a restarted hub starts
// afresh, which only delays retirements.
package snapshot

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
)

// Cloud is what the hub knows about one cloud when it plans.
type Cloud struct {
	// Settings are the admin's settings in planner form (Site, Priority,
	// Paused, Disabled, Caps, SoftQuota, KeepAlive, MaxLifetime, Endpoint,
	// MaxInFlight). The builder fills in the rest from the inventory;
	// Settings.Foreign, when set, is foreign usage the inventory does not
	// list (the simulator's), added to the foreign servers it does.
	Settings planner.Cloud
	// Connected is true while the agent's session is up and its
	// heartbeats are fresh.
	Connected bool
	// Inventory is the agent's last inventory, of whichever session; nil
	// if none arrived since the hub started.
	Inventory *protocol.Inventory
	// InventoryAt is when the hub received it.
	InventoryAt time.Time
}

// Input is everything a snapshot is built from.
type Input struct {
	Now time.Time
	// HubID is this hub's id: servers whose canopy_hub differs (or is
	// missing) are foreign.
	HubID   string
	Config  planner.Config
	Groups  []planner.Group
	VMTypes []planner.VMType
	Aliases map[string][]string
	// Demand is the job source's last good demand.
	Demand demand.Demand
	// DemandOK is false when this cycle's poll failed: Demand is then the
	// last good one and its Machines mean nothing.
	DemandOK bool
	Clouds   []Cloud
	// Intent is the hub's durable state: boots in flight, retirement
	// orders, holds, error marks and the planner's history. Read only.
	Intent *intent.State
	// InventoryMaxAge is how old an inventory may be and still count as
	// evidence; zero means 90 s.
	InventoryMaxAge time.Duration
}

// Defaults of Input's ages.
const (
	DefaultInventoryMaxAge = 90 * time.Second
)

// RegisterGrace is how long after a VM became ready the pool view may
// still lack it without that making the view implausible: a startd joins
// the collector a little after vmagent's first check-in.
const RegisterGrace = 2 * time.Minute

// MaxReportVMs bounds the unknown VMs a Report lists one by one.
const MaxReportVMs = 100

// Report says what the builder concluded about its evidence, for the
// status page and metrics.
type Report struct {
	// PoolView is "ok"; "failed" when the job source could not read the
	// pool's view of the VMs this cycle; "implausible" when the view it
	// read lost most of the VMs it should list. Only an ok view is
	// evidence.
	PoolView string `json:"pool_view"`
	// PoolReason explains a PoolView other than ok.
	PoolReason string `json:"pool_reason,omitempty"`
	// Counts are Canopy's listed VMs by evidence.
	Counts EvidenceCounts `json:"counts"`
	// Clouds lists the clouds whose inventory is not evidence, or that
	// hold VMs whose evidence is unknown, by site.
	Clouds []CloudReport `json:"clouds,omitempty"`
	// Unknown lists VMs on reporting clouds whose evidence is unknown, and
	// why: the first MaxReportVMs in cloud order; UnknownLeftOut counts
	// the others.
	Unknown        []VMReport `json:"unknown,omitempty"`
	UnknownLeftOut int        `json:"unknown_left_out,omitempty"`
}

// EvidenceCounts counts VMs by what the evidence says of them.
type EvidenceCounts struct {
	Registered   int `json:"registered"`
	Unregistered int `json:"unregistered"`
	Unknown      int `json:"unknown"`
}

// CloudReport is one cloud's part in a Report.
type CloudReport struct {
	Site string `json:"site"`
	// Reason says why the cloud's inventory is not evidence; empty when it
	// is.
	Reason string `json:"reason,omitempty"`
	// Unknown counts the cloud's VMs whose evidence is unknown.
	Unknown int `json:"unknown"`
}

// VMReport is one VM whose evidence is unknown.
type VMReport struct {
	Site   string `json:"site"`
	ID     string `json:"id"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
	// For is how long it has been unknown (time between builds).
	For time.Duration `json:"for"`
}

// Pool view states.
const (
	PoolOK          = "ok"
	PoolFailed      = "failed"
	PoolImplausible = "implausible"
)

// Builder builds snapshots. It keeps per-VM evidence clocks and last known
// states from one build to the next; it is not safe for concurrent use.
type Builder struct {
	last time.Time
	gen  uint64
	vms  map[string]*memo // by VM id
	// order is, per site, the VMs the last build listed there, in order:
	// a VM at the same place as last time needs no map lookup.
	order map[string]*siteOrder
	// Buffers reused from build to build.
	seen []seen
	buf  []planner.VM
}

// siteOrder is one site's Canopy VMs in inventory order.
type siteOrder struct {
	ids   []string
	memos []*memo
}

// seen is what one build looked up about one listed Canopy VM.
type seen struct {
	m       *memo
	mach    demand.Machine
	listed  bool // the pool view lists it (usable or not)
	ordered bool
	orderAt time.Time // when it was told to retire
}

// memo is what the builder remembers of one VM between builds.
type memo struct {
	site string
	gen  uint64 // the last build that listed the VM

	// The last state fresh evidence showed (never retiring).
	known                    bool
	state                    planner.VMState
	running, jobsStarted     int
	freeCpus, freeMem        int
	idleSince, registeredAt  time.Time
	firstRegistered          time.Time
	everRegistered, inView   bool
	lastEv                   planner.Evidence // at the last build that listed the VM
	unreg, idle, noJob, dark time.Duration
}

// NewBuilder returns a Builder.
func NewBuilder() *Builder { return &Builder{vms: map[string]*memo{}, order: map[string]*siteOrder{}} }

// obs is what one build concludes about one VM.
type obs struct {
	ev  planner.Evidence
	why string
	// state is the observed state; keep says the last known state stands
	// in for it (unknown evidence).
	state planner.VMState
	keep  bool
	// running and free come from the pool or the check-in; registered
	// says the pool lists the VM.
	running           int
	freeCpus, freeMem int
	inPool            bool
	machine           demand.Machine
}

// Build returns the planner's snapshot for in, and what it concluded. The
// snapshot's VMs are in a buffer the next Build reuses: plan on it before
// building the next.
func (b *Builder) Build(in Input) (planner.Snapshot, Report) {
	now := in.Now
	st := in.Intent
	if st == nil {
		st = intent.New()
	}
	if b.vms == nil {
		b.vms, b.order = map[string]*memo{}, map[string]*siteOrder{}
	}
	invMax := cmpOr(in.InventoryMaxAge, DefaultInventoryMaxAge)
	var dt time.Duration
	if !b.last.IsZero() && now.After(b.last) {
		dt = now.Sub(b.last)
	}
	b.last = now
	b.gen++

	// Which clouds' inventories are evidence, and why not.
	fresh := make([]bool, len(in.Clouds))
	cloudWhy := make([]string, len(in.Clouds))
	nVMs := 0
	for i := range in.Clouds {
		cl := &in.Clouds[i]
		switch inv := cl.Inventory; {
		case inv == nil:
			cloudWhy[i] = "cloud not reporting: no inventory since the hub started"
		case !cl.Connected:
			cloudWhy[i] = "cloud not reporting: agent not connected"
		case now.Sub(cl.InventoryAt) > invMax:
			cloudWhy[i] = fmt.Sprintf("cloud not reporting: inventory %s old", now.Sub(cl.InventoryAt).Round(time.Second))
		default:
			fresh[i] = true
		}
		if cl.Inventory != nil {
			nVMs += len(cl.Inventory.VMs)
		}
	}

	rep := Report{PoolView: PoolOK}
	polled := in.DemandOK && in.Demand.PoolErr == ""
	tally := b.lookUp(in, st, polled, fresh)
	switch {
	case !in.DemandOK:
		rep.PoolView, rep.PoolReason = PoolFailed, "the job source's poll failed"
	case in.Demand.PoolErr != "":
		rep.PoolView, rep.PoolReason = PoolFailed, in.Demand.PoolErr
	default:
		if why := tally.implausible(in.Demand); why != "" {
			rep.PoolView, rep.PoolReason = PoolImplausible, why
		}
	}
	poolOK := rep.PoolView == PoolOK
	poolWhy := "pool view " + rep.PoolView + ": " + rep.PoolReason

	if n := nVMs + len(st.Pending); cap(b.buf) < n {
		b.buf = make([]planner.VM, 0, n+n/8)
	}
	snap := planner.Snapshot{Now: now, Shapes: in.Demand.Shapes, Config: in.Config, Groups: in.Groups,
		VMTypes: in.VMTypes, Aliases: in.Aliases, VMs: b.buf[:0]}
	hist := planner.RestoreHistory(st.History)

	pendingBy := map[string][]intent.PendingBoot{}
	for _, name := range slices.Sorted(maps.Keys(st.Pending)) {
		p := st.Pending[name]
		pendingBy[p.Site] = append(pendingBy[p.Site], p)
	}
	keepSites := map[string]bool{} // sites whose VMs are not listed now
	k := 0                         // index into b.seen
	for ci := range in.Clouds {
		cl := &in.Clouds[ci]
		c := cl.Settings
		c.Connected = fresh[ci]
		inv := cl.Inventory
		if inv == nil {
			inv = &protocol.Inventory{}
			keepSites[c.Site] = true
		}
		c.Flavors, c.Limits = inv.Flavors, inv.Limits
		if pol := inv.Policy; pol != nil {
			// The cloud's own settings: the stricter of them and the hub's.
			c.Disabled = c.Disabled || pol.Disabled
			if c.KeepAlive == 0 {
				c.KeepAlive = pol.KeepAlive
			}
			if pol.CoresSoftMax > 0 && (c.SoftQuota.Cores == 0 || pol.CoresSoftMax < c.SoftQuota.Cores) {
				c.SoftQuota.Cores = pol.CoresSoftMax
			}
		}
		for _, p := range pendingBy[c.Site] {
			if !p.AckedAt.IsZero() {
				c.Unlisted++
				if c.UnlistedSince.IsZero() || p.AckedAt.Before(c.UnlistedSince) {
					c.UnlistedSince = p.AckedAt
				}
			}
		}
		cr := CloudReport{Site: c.Site, Reason: cloudWhy[ci]}
		for vi := range inv.VMs {
			vm := &inv.VMs[vi]
			f := flavor(inv.Flavors, vm.Flavor)
			if vm.Foreign || vm.Hub != in.HubID {
				c.Foreign.VMs++
				c.Foreign.Cores += f.VCPUs
				c.Foreign.RAMMiB += f.RAMMiB
				continue
			}
			sn := &b.seen[k]
			k++
			m := sn.m
			// Time counts from the last build only if it listed the VM.
			step := time.Duration(0)
			if m.gen+1 == b.gen {
				step = dt
			}
			m.site, m.gen = c.Site, b.gen

			var o obs
			if !fresh[ci] {
				o = obs{ev: planner.EvidenceUnknown, why: cloudWhy[ci], keep: true}
			} else {
				o = observe(vm, sn, poolOK, poolWhy, m)
				if poolOK {
					m.inView = o.inPool
				}
			}
			pv := vmFor(vm, f, c.Site, o, m, now, step, sn, st, in.Config.HoldMax)
			switch pv.Evidence {
			case planner.EvidenceRegistered:
				rep.Counts.Registered++
			case planner.EvidenceUnregistered:
				rep.Counts.Unregistered++
			default:
				rep.Counts.Unknown++
				cr.Unknown++
				if fresh[ci] {
					if len(rep.Unknown) < MaxReportVMs {
						rep.Unknown = append(rep.Unknown, VMReport{Site: c.Site, ID: vm.ID, Name: vm.Name, Reason: pv.Why, For: pv.UnknownFor})
					} else {
						rep.UnknownLeftOut++
					}
				}
			}
			snap.VMs = append(snap.VMs, pv)
		}
		if cr.Reason != "" || cr.Unknown > 0 {
			rep.Clouds = append(rep.Clouds, cr)
		}
		snap.Clouds = append(snap.Clouds, c)
		for _, p := range pendingBy[c.Site] {
			snap.VMs = append(snap.VMs, planner.VM{Site: c.Site, Name: p.Name, Group: p.Group, VMType: p.VMType,
				Flavor: p.Flavor, Cpus: p.Cpus, MemoryMiB: p.MemoryMiB, State: planner.VMBooting, CreatedAt: p.OrderedAt,
				Image: p.Image, KeepAlive: p.KeepAlive, MaxLifetime: p.MaxLifetime, Evidence: planner.EvidenceUnregistered})
		}
	}
	// Forget VMs that no longer exist; keep those of clouds that list
	// nothing now (no inventory yet): unknown is not gone.
	if len(b.vms) > len(b.seen) {
		for id, m := range b.vms {
			if m.gen != b.gen && !keepSites[m.site] {
				delete(b.vms, id)
			}
		}
	}
	if len(b.order) > len(in.Clouds) {
		sites := make(map[string]bool, len(in.Clouds))
		for i := range in.Clouds {
			sites[in.Clouds[i].Settings.Site] = true
		}
		for site := range b.order {
			if !sites[site] {
				delete(b.order, site)
			}
		}
	}
	b.buf = snap.VMs[:0]
	slices.SortFunc(rep.Clouds, func(a, b CloudReport) int { return cmp.Compare(a.Site, b.Site) })
	hist.Fill(&snap)
	return snap, rep
}

// lookUp fills b.seen with what the build needs to look up about each
// listed Canopy VM, once: its memo (created if new), the pool's view of it
// (when the poll worked) and its retirement order; and counts what the
// plausibility of the pool view is judged on.
func (b *Builder) lookUp(in Input, st *intent.State, polled bool, fresh []bool) viewTally {
	var t viewTally
	b.seen = b.seen[:0]
	for ci := range in.Clouds {
		inv := in.Clouds[ci].Inventory
		if inv == nil {
			continue
		}
		site := in.Clouds[ci].Settings.Site
		so := b.order[site]
		if so == nil {
			so = &siteOrder{}
			b.order[site] = so
		}
		n := 0
		for vi := range inv.VMs {
			vm := &inv.VMs[vi]
			if vm.Foreign || vm.Hub != in.HubID {
				continue
			}
			var m *memo
			if n < len(so.ids) && so.ids[n] == vm.ID {
				m = so.memos[n]
			} else if m = b.vms[vm.ID]; m == nil {
				m = &memo{}
				b.vms[vm.ID] = m
			}
			if n < len(so.ids) {
				so.ids[n], so.memos[n] = vm.ID, m
			} else {
				so.ids, so.memos = append(so.ids, vm.ID), append(so.memos, m)
			}
			n++
			sn := seen{m: m}
			if polled {
				sn.mach, sn.listed = in.Demand.Machines[vm.Name]
			}
			if len(st.Retire) > 0 {
				var r intent.RetireOrder
				r, sn.ordered = st.Retire[vm.ID]
				sn.orderAt = r.At
			}
			b.seen = append(b.seen, sn)
			if fresh[ci] && vm.State == protocol.VMActive && !vm.Retiring && !sn.ordered {
				t.add(vm, m, sn.listed, inv.TakenAt)
			}
		}
		clear(so.memos[n:])
		so.ids, so.memos = so.ids[:n], so.memos[:n]
	}
	return t
}

// viewTally counts, over the active VMs of reporting clouds that are not
// retiring, how many the pool view lists of those it should.
type viewTally struct {
	// prev: listed in the last accepted view; ck: ready, settled, with a
	// fresh check-in; ready: ready and settled. kept: of those, listed now.
	prevN, prevKept, ckN, ckKept, ready int
}

func (t *viewTally) add(vm *protocol.VM, m *memo, listed bool, takenAt time.Time) {
	if m.inView {
		t.prevN++
		if listed {
			t.prevKept++
		}
	}
	if !vm.Ready || !(m.everRegistered || takenAt.Sub(vm.ReadyAt) >= RegisterGrace) {
		return
	}
	t.ready++
	if vm.Jobs != nil {
		t.ckN++
		if listed {
			t.ckKept++
		}
	}
}

// implausible says why the pool view cannot be right, or "" when it may
// be: it lost most of the VMs the last accepted view listed that still
// exist and are not retiring, or most ready VMs whose own check-ins are
// fresh, or lists none at all while the queue shows running jobs.
func (t *viewTally) implausible(d demand.Demand) string {
	switch {
	case t.prevN >= 2 && 2*t.prevKept < t.prevN:
		return fmt.Sprintf("the pool lists %d of the %d VMs it listed before that are still up", t.prevKept, t.prevN)
	case t.ckN >= 2 && 2*t.ckKept < t.ckN:
		return fmt.Sprintf("the pool lists %d of the %d ready VMs whose own check-ins are fresh", t.ckKept, t.ckN)
	}
	if len(d.Machines) == 0 && t.ready > 0 {
		running := 0
		for _, sh := range d.Shapes {
			running += max(0, sh.Running)
		}
		if running > 0 {
			return fmt.Sprintf("the pool lists none of Canopy's %d ready VMs while the queue shows %d running jobs", t.ready, running)
		}
	}
	return ""
}

// observe concludes what fresh inventory, pool view and check-in say of a
// VM on a cloud that reports.
func observe(vm *protocol.VM, sn *seen, poolOK bool, poolWhy string, m *memo) obs {
	counted := vm.Jobs != nil
	jobs := 0
	if counted {
		jobs = max(vm.Jobs.Running, vm.Jobs.Claimed, 0)
	}
	var mach demand.Machine
	inPool := false
	if poolOK {
		mach, inPool = sn.mach, sn.listed
	}
	o := obs{inPool: inPool, machine: mach}
	switch vm.State {
	case protocol.VMBooting:
		o.ev, o.state = planner.EvidenceUnregistered, planner.VMBooting
		return o
	case protocol.VMRebooting:
		o.ev, o.why, o.keep = planner.EvidenceUnknown, "rebooting", true
		return o
	case protocol.VMError, protocol.VMStopped:
		o.state = planner.VMError
		if n := max(jobs, mach.RunningJobs); n > 0 {
			o.ev, o.why = planner.EvidenceUnknown, fmt.Sprintf("cloud reports it %s, but it runs %d jobs", vm.State, n)
		} else {
			o.ev = planner.EvidenceUnregistered
		}
		return o
	case protocol.VMActive, protocol.VMDeleting:
	default:
		o.ev, o.why, o.keep = planner.EvidenceUnknown, fmt.Sprintf("cloud reports state %q", vm.State), true
		return o
	}
	switch {
	case !poolOK:
		o.ev, o.why, o.keep = planner.EvidenceUnknown, poolWhy, true
		if jobs > 0 {
			o.running = jobs
		}
	case inPool:
		o.ev = planner.EvidenceRegistered
		o.running = max(mach.RunningJobs, jobs)
		if o.running > 0 {
			o.state = planner.VMBusy
			o.freeCpus, o.freeMem = mach.FreeCpus, mach.FreeMemoryMiB
		} else {
			o.state = planner.VMIdle
		}
	case jobs > 0:
		o.ev, o.why, o.keep, o.running = planner.EvidenceUnknown, fmt.Sprintf("VM reports %d jobs, the pool does not list it", jobs), true, jobs
	case counted:
		o.ev, o.state = planner.EvidenceUnregistered, planner.VMStarting
	case m.everRegistered:
		o.ev, o.why, o.keep = planner.EvidenceUnknown, "left the pool, no fresh check-in", true
	default:
		o.ev, o.state = planner.EvidenceUnregistered, planner.VMStarting
	}
	return o
}

// vmFor turns one VM's observation into the planner's VM, and moves its
// memo and clocks on by dt (the time since the last build, zero if that
// build did not list the VM). A clock counts dt only when the last build
// saw the same evidence: time between two kinds of evidence is unknown.
func vmFor(vm *protocol.VM, f protocol.Flavor, site string, o obs, m *memo, now time.Time, dt time.Duration,
	sn *seen, st *intent.State, holdMax time.Duration) planner.VM {
	if m.lastEv != o.ev {
		dt = 0
	}
	m.lastEv = o.ev
	ordered := sn.ordered
	held := false
	if len(st.Hold) > 0 {
		h, ok := st.Hold[vm.ID]
		held = ok && h.Active(now, holdMax)
	}
	pv := planner.VM{ID: vm.ID, Site: site, Name: vm.Name, Group: vm.Group, VMType: vm.VMType, Flavor: vm.Flavor,
		Image: vm.Image, Cpus: f.VCPUs, MemoryMiB: f.RAMMiB, CreatedAt: vm.CreatedAt, RetiringSince: sn.orderAt,
		KeepAlive: vm.KeepAlive, MaxLifetime: vm.MaxLifetime, Held: held, Evidence: o.ev, Why: o.why}

	switch o.ev {
	case planner.EvidenceUnknown:
		m.dark += dt
	default:
		m.dark = 0
	}
	switch {
	case o.ev == planner.EvidenceRegistered:
		m.everRegistered = true
		if m.firstRegistered.IsZero() {
			m.firstRegistered = now
		}
		busy := o.state == planner.VMBusy
		if busy {
			m.idle = 0
		} else {
			m.idle += dt
		}
		if !busy && o.machine.JobsStarted <= 0 {
			m.noJob += dt
		}
		pv.State, pv.RunningJobs, pv.FreeCpus, pv.FreeMemoryMiB = o.state, o.running, o.freeCpus, o.freeMem
		pv.JobsStarted = o.machine.JobsStarted
		switch {
		case pv.JobsStarted <= 0:
			pv.RegisteredAt = now.Add(-m.noJob)
		case !vm.ReadyAt.IsZero():
			pv.RegisteredAt = vm.ReadyAt
		default:
			pv.RegisteredAt = m.firstRegistered
		}
		if !busy {
			base := o.machine.IdleSince
			if base.IsZero() {
				base = vm.ReadyAt
			}
			pv.IdleSince = now.Add(-m.idle)
			if base.After(pv.IdleSince) {
				pv.IdleSince = base
			}
		}
	case o.ev == planner.EvidenceUnregistered:
		if o.state == planner.VMBooting || o.state == planner.VMStarting {
			m.unreg += dt
		}
		pv.State = o.state
	case o.keep && m.known:
		pv.State, pv.RunningJobs, pv.FreeCpus, pv.FreeMemoryMiB = m.state, m.running, m.freeCpus, m.freeMem
		pv.IdleSince, pv.RegisteredAt, pv.JobsStarted = m.idleSince, m.registeredAt, m.jobsStarted
		if o.running > pv.RunningJobs {
			// The VM's own fresh count is newer than what was last known.
			pv.State, pv.RunningJobs, pv.FreeCpus, pv.FreeMemoryMiB, pv.IdleSince = planner.VMBusy, o.running, 0, 0, time.Time{}
		}
	case o.keep:
		// Nothing known yet: what the inventory alone says.
		switch {
		case o.running > 0:
			pv.State, pv.RunningJobs = planner.VMBusy, o.running
		case vm.State == protocol.VMBooting:
			pv.State = planner.VMBooting
		case vm.State == protocol.VMError || vm.State == protocol.VMStopped:
			pv.State = planner.VMError
		case vm.Ready:
			pv.State = planner.VMIdle
		default:
			pv.State = planner.VMStarting
		}
	default:
		pv.State, pv.RunningJobs = o.state, o.running
	}
	if o.ev != planner.EvidenceUnknown {
		m.known = true
		m.state, m.running, m.freeCpus, m.freeMem = pv.State, pv.RunningJobs, pv.FreeCpus, pv.FreeMemoryMiB
		m.idleSince, m.registeredAt, m.jobsStarted = pv.IdleSince, pv.RegisteredAt, pv.JobsStarted
	}
	pv.Unregistered, pv.UnknownFor = m.unreg, m.dark

	// A VM told to retire, or being deleted, is retiring: no capacity,
	// gone by its retire deadline. Fresh evidence that it is booting or
	// broken stands (the error delay deletes it sooner).
	fixed := o.ev != planner.EvidenceUnknown && (pv.State == planner.VMError || pv.State == planner.VMBooting)
	if (vm.State == protocol.VMDeleting || vm.Retiring || ordered) && !fixed {
		pv.State, pv.IdleSince = planner.VMRetiring, time.Time{}
	}
	if pv.State == planner.VMError {
		if e, ok := st.Error[vm.ID]; ok {
			pv.ErrorSince = e.Since
		} else {
			pv.ErrorSince = now
		}
	}
	return pv
}

// flavor finds a flavor by name; the zero Flavor if there is none.
func flavor(list []protocol.Flavor, name string) protocol.Flavor {
	for i := range list {
		if list[i].Name == name {
			return list[i]
		}
	}
	return protocol.Flavor{}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
