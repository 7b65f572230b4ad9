package hub

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/imageplan"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/snapshot"
	"github.com/canopy-grid/canopy/protocol"
)

// loop is the hub's control loop. It alone owns the durable intent, the
// demand and the planner's history: every cycle it takes in command
// results, polls demand, reconciles intent with what the clouds report,
// plans, makes the cycle's intent changes durable in one write, and only
// then sends the commands.
type loop struct {
	h       *Hub
	st      *intent.State
	tx      *intent.Tx
	hist    planner.History
	builder *snapshot.Builder

	demand    demand.Demand
	demandAt  time.Time
	demandErr string

	started   time.Time
	graceOver bool
	waiting   []string // clouds the startup grace waits for

	// sent remembers, per boot command id, what it asked (for results);
	// bootSession the session each pending boot was sent on; retireSent
	// the session each VM's retirement order was last sent on. All are
	// soft: a restarted hub has none, and reconciles from inventories.
	sent        map[string]protocol.Command
	bootSession map[string]int
	retireSent  map[string]int
	invalidate  chan string

	statusSeq uint64
	// pubIn and pubC hand statuses to build to the publisher goroutine
	// (nil in tests that drive cycles by hand: statuses are then built at
	// once).
	pubIn atomic.Pointer[statusInput]
	pubC  chan struct{}

	// images is the image distribution's soft state; imageCells the last
	// image matrix (the snapshot's image readiness comes from it).
	images     imageState
	imageCells []imageplan.Cell
	// listedPre holds, per site with preemptible capacity, the VMs (id to
	// flavor) its last fresh inventory listed; deleting the VMs Canopy
	// ordered deleted. A VM that leaves the listing without a retirement
	// or deletion order was taken back by the cloud: preempted.
	listedPre map[string]map[string]string
	deleting  map[string]bool

	lastPlan   planner.Plan
	lastStates map[string]planner.VMState  // by VM id, from the last snapshot
	lastEvid   map[string]planner.Evidence // by VM id, from the last snapshot
	// boots and bootFailures count servers ordered and boot commands
	// failed since the hub started (for the time series).
	boots, bootFailures uint64
	planAt              time.Time
	planID              string
	report              snapshot.Report
}

func newLoop(h *Hub, st *intent.State) *loop {
	return &loop{h: h, st: st, tx: st.Begin(), hist: planner.RestoreHistory(st.History), builder: snapshot.NewBuilder(),
		lastStates: map[string]planner.VMState{},
		images:     imageState{transfers: map[string]*ImageTransfer{}, failures: map[string]imageplan.Failure{}, deleting: map[string]time.Time{}},
		sent:       map[string]protocol.Command{}, bootSession: map[string]int{}, retireSent: map[string]int{},
		invalidate: make(chan string, 1024)}
}

// adminRequest is a change an admin asks for through the API; the loop
// applies it, makes it durable and answers.
type adminRequest struct {
	apply func(l *loop, now time.Time) error
	reply chan error
}

// admin runs f on the control loop and waits for it to be durable.
func (h *Hub) admin(ctx context.Context, f func(l *loop, now time.Time) error) error {
	req := adminRequest{apply: f, reply: make(chan error, 1)}
	select {
	case h.adminC <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *loop) run(ctx context.Context) {
	h := l.h
	l.started = h.now()
	go l.invalidator(ctx)
	l.pubC = make(chan struct{}, 1)
	go l.publisher(ctx)
	t := time.NewTicker(h.cfg.PlanEvery)
	defer t.Stop()
	for {
		l.cycle(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wakeC:
			if l.graceOver {
				continue // between cycles a wake matters only for the grace
			}
		case req := <-h.adminC:
			l.handleAdmin(req)
			continue
		}
	}
}

// publishStatus hands the cycle's status to the publisher goroutine, so
// that building it (20,000 VMs) is not on the cycle's path; without one it
// builds it at once.
func (l *loop) publishStatus(now time.Time) {
	in := l.statusInput(now)
	if l.pubC == nil {
		l.h.publish(l.h.buildStatus(in))
		return
	}
	l.pubIn.Store(&in)
	select {
	case l.pubC <- struct{}{}:
	default: // one is waiting already; it takes the newest input
	}
}

// publisher builds and publishes the statuses the loop hands it.
func (l *loop) publisher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.pubC:
		}
		if in := l.pubIn.Swap(nil); in != nil {
			l.h.publish(l.h.buildStatus(*in))
		}
	}
}

// handleAdmin applies an admin request, makes it durable, publishes the
// status and then answers, so the caller sees its change everywhere.
func (l *loop) handleAdmin(req adminRequest) {
	now := l.h.now()
	err := req.apply(l, now)
	if err == nil {
		err = l.commit()
	}
	l.h.publish(l.status(now))
	req.reply <- err
}

// commit makes the recorded intent changes durable (one transaction).
func (l *loop) commit() error {
	if l.tx.Len() == 0 {
		return nil
	}
	start := time.Now()
	err := l.h.store.Commit(l.tx.Changes())
	l.h.m.storeCommits.Inc()
	l.h.m.storeSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	l.tx.Reset()
	return nil
}

// event adds an entry to the lifecycle log.
func (l *loop) event(now time.Time, cloud, vm, plan, kind, detail string) {
	l.tx.AddEvent(intent.Event{At: now, Site: cloud, VM: vm, Plan: plan, Kind: kind, Detail: detail})
}

// cycle is one turn of the control loop.
func (l *loop) cycle(ctx context.Context) {
	h := l.h
	start := time.Now()
	now := h.now()
	l.takeResults(now)
	l.tx.SetHistory(l.hist.State())

	pctx, cancel := context.WithTimeout(ctx, max(h.cfg.PlanEvery, 30*time.Second))
	var pool []demand.PoolVM
	if ps, ok := h.source.(PoolSimulator); ok && ps.SimulatesPool() {
		pool = l.poolVMs()
	}
	d, err := h.source.Poll(pctx, now, pool)
	cancel()
	demandOK := err == nil
	if err != nil {
		l.demandErr = err.Error()
		h.m.pollFailures.Inc()
		h.log.WithError(err).Warn("demand poll failed; keeping last good demand, no retirements this cycle")
	} else {
		l.demand, l.demandAt, l.demandErr = d, now, ""
	}

	views := l.views()
	l.reconcile(now, views)
	imageCmds := l.imageCycle(now, views)

	// The builder runs every cycle (its evidence clocks count time between
	// builds); the planner only once the startup grace is over.
	in := l.input(now, views, demandOK)
	if !demandOK && (l.demandAt.IsZero() || now.Sub(l.demandAt) > h.cfg.DemandMaxAge) {
		in.Demand.Shapes = nil // too old to boot for
	}
	snap, rep := l.builder.Build(in)
	l.holdForImages(snap.Clouds)
	l.report = rep
	l.lastStates = make(map[string]planner.VMState, len(snap.VMs)) // the old one may be read by a status being built
	l.lastEvid = make(map[string]planner.Evidence, len(snap.VMs))
	for _, vm := range snap.VMs {
		if vm.ID != "" {
			l.lastStates[vm.ID] = vm.State
			if vm.Evidence != "" {
				l.lastEvid[vm.ID] = vm.Evidence
			}
		}
	}
	plan := planner.Plan{}
	planned := false
	if l.grace(now, views) {
		plan = planner.Decide(snap)
		l.hist.Observe(now, plan)
		if !demandOK || !d.Fresh() {
			// A failed poll never retires or deletes; nor does one that
			// could not read every schedd (a VM may look idle only
			// because the queue that would feed it is missing).
			plan.Retires, plan.Deletes = nil, nil
		}
		l.lastPlan, l.planAt, planned = plan, now, true
	}
	l.hist.Failures.Prune(now.Add(-h.policy().Planner.WithDefaults().FailureWindow))
	l.tx.SetHistory(l.hist.State())
	l.tx.PruneEvents(now.Add(-h.policy().EventsMaxAge))

	var cmds []outgoing
	if planned && !plan.Empty() {
		cmds = l.execute(now, plan, views)
	}
	cmds = append(cmds, l.retireOrders(now, views)...)
	cmds = append(cmds, imageCmds...)
	if err := l.commit(); err != nil {
		// Nothing is sent that is not durable first: the next cycle
		// plans again from the same intent.
		h.log.WithError(err).Error("hub state not saved; this cycle's commands are not sent")
		h.m.storeFailures.Inc()
		l.forgetUnsent(cmds)
		cmds = nil
	}
	for _, c := range cmds {
		l.send(c)
	}
	h.m.planSeconds.Observe(time.Since(start).Seconds())
	l.publishStatus(now)
}

// views loads every cloud's published view, including configured clouds
// whose agent never connected.
func (l *loop) views() map[string]*cloudView {
	out := map[string]*cloudView{}
	for name := range l.h.policy().Sites {
		out[name] = &cloudView{}
	}
	for _, lk := range l.h.allLinks() {
		out[lk.name] = lk.load()
	}
	return out
}

// fresh reports whether a cloud's inventory is evidence now: its agent is
// connected, its heartbeats are fresh, and the inventory is recent and of
// the current session.
func (l *loop) fresh(v *cloudView, now time.Time) bool {
	cfg := &l.h.cfg
	return v.Connected && v.Inventory != nil && v.InventorySession == v.Session &&
		now.Sub(v.LastHeartbeat) <= agentSilenceHeartbeats*cfg.HeartbeatEvery &&
		now.Sub(v.InventoryAt) <= cfg.inventoryMaxAge()
}

// agentSilenceHeartbeats is how many heartbeat intervals without one
// before a cloud counts as disconnected.
const agentSilenceHeartbeats = 3

// takeResults applies the command results the sessions received.
func (l *loop) takeResults(now time.Time) {
	h := l.h
	for _, it := range l.h.inbox.take() {
		r := it.result
		cmd, ok := l.sent[r.CommandID]
		delete(l.sent, r.CommandID)
		log := h.log.WithFields(logrus.Fields{"site": it.cloud, "command": r.CommandID})
		for _, ref := range r.Refused {
			h.m.refusals.WithLabelValues(it.cloud).Inc()
			l.event(now, it.cloud, ref.VMID, "", "refused", "agent refused: "+ref.Reason)
			log.WithField("vm_id", ref.VMID).Warn("agent refused: " + ref.Reason)
		}
		if !ok {
			continue
		}
		switch cmd.Op {
		case protocol.CmdBoot:
			b := cmd.Boot
			if r.OK {
				l.hist.BootSucceeded(it.cloud, b.Image, now)
				for _, name := range b.Names {
					if p, ok := l.st.Pending[name]; ok && p.AckedAt.IsZero() {
						p.AckedAt = now
						l.tx.PutPending(p)
					}
				}
				continue
			}
			h.m.bootFailures.WithLabelValues(it.cloud, string(r.Class)).Inc()
			l.bootFailures++
			l.hist.BootFailed(it.cloud, b.Image, r.Class, now, fmt.Sprintf("%s: %s", r.Class, r.Error))
			l.event(now, it.cloud, "", b.PlanID, "boot_failed", fmt.Sprintf("%s: %s", r.Class, r.Error))
			log.WithField("class", r.Class).Warn("boot failed: " + r.Error)
			// Servers the cloud did not create are no longer pending; the
			// next inventory shows the ones it did.
			for _, name := range b.Names {
				if p, ok := l.st.Pending[name]; ok && p.AckedAt.IsZero() {
					l.tx.DropPending(name)
					delete(l.bootSession, name)
				}
			}
		case protocol.CmdImageCopy, protocol.CmdImageDelete:
			l.imageResult(now, it.cloud, cmd, r, log)
		default:
			if !r.OK && r.Class != protocol.ErrClassRefused {
				log.WithField("class", r.Class).Warn(string(cmd.Op) + " failed: " + r.Error)
			}
		}
	}
}

// reconcile brings the intent in line with what fresh inventories show:
// boots that appeared or were lost, retired servers that are gone, error
// marks, holds of servers that no longer exist. Clouds without fresh
// evidence are left alone: unknown is not gone.
func (l *loop) reconcile(now time.Time, views map[string]*cloudView) {
	h := l.h
	// Indexes of fresh inventories, built only for the clouds some intent
	// record refers to.
	type index struct {
		ids   map[string]*protocol.VM
		names map[string]bool
	}
	l.preemptions(now, views)
	indexes := map[string]*index{}
	lookup := func(cloud string) *index {
		if ix, ok := indexes[cloud]; ok {
			return ix
		}
		var ix *index
		if v := views[cloud]; v != nil && l.fresh(v, now) {
			vms := v.Inventory.VMs
			ix = &index{ids: make(map[string]*protocol.VM, len(vms)), names: make(map[string]bool, len(vms))}
			for i := range vms {
				ix.ids[vms[i].ID] = &vms[i]
				ix.names[vms[i].Name] = true
			}
		}
		indexes[cloud] = ix
		return ix
	}
	for _, name := range slices.Sorted(maps.Keys(l.st.Pending)) {
		p := l.st.Pending[name]
		ix := lookup(p.Site)
		if ix == nil {
			continue
		}
		v := views[p.Site]
		switch {
		case ix.names[name]:
			l.tx.DropPending(name)
			delete(l.bootSession, name)
		case !p.AckedAt.IsZero() && now.Sub(p.AckedAt) > h.cfg.BootListTimeout:
			l.tx.DropPending(name)
			delete(l.bootSession, name)
			h.m.bootFailures.WithLabelValues(p.Site, "not_listed").Inc()
			l.event(now, p.Site, name, p.PlanID, "boot_lost",
				fmt.Sprintf("not listed by the cloud %s after the agent reported it booted", h.cfg.BootListTimeout))
		case p.AckedAt.IsZero() && l.bootSession[name] != v.Session && !slices.Contains(v.Inventory.Running, p.CommandID):
			// Ordered on a session that ended before the agent answered,
			// and the agent is not carrying it out: it never will.
			l.tx.DropPending(name)
			delete(l.bootSession, name)
			l.event(now, p.Site, name, p.PlanID, "boot_dropped", "the session it was sent on ended before the agent answered")
		}
	}
	for _, id := range slices.Sorted(maps.Keys(l.st.Retire)) {
		r := l.st.Retire[id]
		ix := lookup(r.Site)
		if ix == nil {
			continue
		}
		if _, listed := ix.ids[id]; !listed {
			l.tx.DropRetire(id)
			delete(l.retireSent, id)
			l.event(now, r.Site, id, r.PlanID, "deleted", "retired server no longer listed")
			if r.Name != "" {
				select {
				case l.invalidate <- r.Name:
				default:
					h.log.WithField("vm", r.Name).Warn("invalidation queue full; the VM's ads expire by themselves")
				}
			}
		}
	}
	// Error marks: VMs in error or stopped get one the first time a fresh
	// inventory shows them so; marks of VMs no longer so are dropped.
	for _, cloud := range slices.Sorted(maps.Keys(views)) {
		v := views[cloud]
		if !l.fresh(v, now) {
			continue
		}
		vms := v.Inventory.VMs
		for i := range vms {
			vm := &vms[i]
			if vm.State != protocol.VMError && vm.State != protocol.VMStopped {
				continue
			}
			if _, ok := l.st.Error[vm.ID]; !ok {
				fault := vm.Fault
				if fault == "" {
					fault = vm.CloudStatus
				}
				l.tx.PutError(intent.ErrorMark{VMID: vm.ID, Site: cloud, Since: now, Fault: fault})
				l.event(now, cloud, vm.ID, "", string(vm.State), fault)
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(l.st.Error)) {
		e := l.st.Error[id]
		ix := lookup(e.Site)
		if ix == nil {
			continue
		}
		if vm, listed := ix.ids[id]; !listed || (vm.State != protocol.VMError && vm.State != protocol.VMStopped) {
			l.tx.DropError(id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(l.st.Hold)) {
		hd := l.st.Hold[id]
		ix := lookup(hd.Site)
		if ix == nil {
			continue
		}
		if _, listed := ix.ids[id]; !listed {
			l.tx.DropHold(id)
			l.event(now, hd.Site, id, "", "hold_dropped", "held server no longer listed")
		}
	}
}

// preemptions notes the VMs that sites with preemptible capacity took
// back since their last fresh inventory: listed then, not now, on
// preemptible capacity, with no retirement or deletion order of Canopy's.
// Each is an event and a History record (the planner backs off a site
// that preempts too fast), never a boot failure. Sites without a fresh
// inventory are left alone: unknown is not gone.
func (l *loop) preemptions(now time.Time, views map[string]*cloudView) {
	n := len(l.hist.State().Preemptions)
	defer func() {
		// This cycle's snapshot reads the history from the intent.
		if len(l.hist.State().Preemptions) != n {
			l.tx.SetHistory(l.hist.State())
		}
	}()
	for _, site := range slices.Sorted(maps.Keys(l.h.cfg.Sites)) {
		sc := l.h.cfg.Sites[site]
		if !sc.Preemptible && len(sc.PreemptibleFlavors) == 0 {
			continue
		}
		v := views[site]
		if v == nil || !l.fresh(v, now) {
			continue
		}
		cur := make(map[string]string, len(v.Inventory.VMs))
		for i := range v.Inventory.VMs {
			vm := &v.Inventory.VMs[i]
			cur[vm.ID] = vm.Flavor
		}
		for _, id := range slices.Sorted(maps.Keys(l.listedPre[site])) {
			flavor := l.listedPre[site][id]
			if _, listed := cur[id]; listed {
				continue
			}
			_, retired := l.st.Retire[id]
			if retired || l.deleting[id] {
				delete(l.deleting, id)
				continue
			}
			if sc.Preemptible || slices.Contains(sc.PreemptibleFlavors, flavor) {
				l.hist.Preempted(site, id, now)
				l.h.m.preempted.WithLabelValues(site).Inc()
				l.event(now, site, id, "", "preempted", "taken back by the cloud (preemptible capacity); its jobs return to the queue")
			}
		}
		if l.listedPre == nil {
			l.listedPre = map[string]map[string]string{}
		}
		l.listedPre[site] = cur
	}
}

// grace reports whether planning may start: every configured cloud has
// reported once since the hub started, or the startup grace has passed.
// Until then a restarted hub would plan on a partial view.
func (l *loop) grace(now time.Time, views map[string]*cloudView) bool {
	if l.graceOver {
		return true
	}
	l.waiting = l.waiting[:0]
	for _, name := range slices.Sorted(maps.Keys(l.h.policy().Sites)) {
		if v := views[name]; v.Inventory == nil {
			l.waiting = append(l.waiting, name)
		}
	}
	if len(l.waiting) == 0 || now.Sub(l.started) >= l.h.cfg.StartupGrace {
		l.graceOver = true
		if len(l.waiting) > 0 {
			l.h.log.WithField("clouds", strings.Join(l.waiting, ",")).Warn("startup grace over; planning without these clouds' reports")
		}
		l.waiting = nil
		return true
	}
	return false
}

// input assembles the snapshot builder's input.
func (l *loop) input(now time.Time, views map[string]*cloudView, demandOK bool) snapshot.Input {
	cfg := &l.h.cfg
	pol := l.h.policy()
	in := snapshot.Input{Now: now, HubID: cfg.ID, Config: pol.Planner, Demand: l.demand, DemandOK: demandOK,
		Intent: l.st, InventoryMaxAge: cfg.inventoryMaxAge()}
	for _, name := range slices.Sorted(maps.Keys(pol.Groups)) {
		in.Groups = append(in.Groups, pol.Groups[name].PlannerGroup(name))
	}
	for _, name := range slices.Sorted(maps.Keys(views)) {
		v := views[name]
		sc := pol.Sites[name]
		switch l.st.Sites[name].Mode {
		case intent.ModePaused:
			sc.Paused = true
		case intent.ModeDisabled, intent.ModeDraining:
			sc.Disabled = true
		}
		c := snapshot.Cloud{Settings: planner.Cloud{Site: name, Priority: sc.Priority, Paused: sc.Paused, Disabled: sc.Disabled,
			Caps: sc.Caps, SoftQuota: sc.SoftQuota, KeepAlive: sc.KeepAlive, MaxLifetime: sc.MaxLifetime,
			Endpoint: sc.Endpoint, MaxInFlight: sc.MaxInFlight, HS06PerCore: sc.HS06PerCore, HS06Default: sc.HS06Default,
			Preemptible: sc.Preemptible, PreemptibleFlavors: sc.PreemptibleFlavors},
			Connected: l.fresh(v, now), Inventory: v.Inventory, InventoryAt: v.InventoryAt}
		// An inventory of an earlier session still lists the cloud's VMs:
		// the builder holds them unknown, not gone.
		in.Clouds = append(in.Clouds, c)
	}
	return in
}

// outgoing is one command for one cloud's current session.
type outgoing struct {
	cloud string
	cmd   protocol.Command
	// names are the pending boots it carries; vms the retirements.
	names []string
	vms   []string
}

// execute records a plan's intent (boots in flight, retirement orders,
// events) and returns its commands; nothing is sent before the intent is
// durable.
func (l *loop) execute(now time.Time, plan planner.Plan, views map[string]*cloudView) []outgoing {
	h := l.h
	planID := l.tx.NextPlanID()
	l.planID = planID
	log := h.log.WithField("plan", planID)
	var out []outgoing
	for i, b := range plan.Boots {
		v := views[b.Site]
		if v == nil || !l.fresh(v, now) {
			continue // planned only for connected clouds; it went away meanwhile
		}
		var f protocol.Flavor
		for _, fl := range v.Inventory.Flavors {
			if fl.Name == b.Flavor {
				f = fl
			}
		}
		image := b.Image
		if image == "" {
			image = h.policy().Sites[b.Site].Image
		}
		cmd := protocol.Command{ID: fmt.Sprintf("%s-%s-b%d", h.cfg.ID, planID, i), Op: protocol.CmdBoot,
			Epoch: v.Epoch, Generation: v.Inventory.Seq,
			Boot: &protocol.BootCommand{PlanID: planID, Group: b.Group, VMType: b.VMType, Flavor: b.Flavor, Image: image,
				KeepAlive: b.KeepAlive, MaxLifetime: b.MaxLifetime, HS06PerCore: b.HS06PerCore,
				Preemptible: b.Preemptible, PreemptibleGroup: b.PreemptibleGroup}}
		for k := range b.Count {
			name := fmt.Sprintf("canopy-%s-%s-%d-%d", b.Site, planID, i, k)
			cmd.Boot.Names = append(cmd.Boot.Names, name)
			l.tx.PutPending(intent.PendingBoot{Name: name, Site: b.Site, Group: b.Group, VMType: b.VMType, Flavor: b.Flavor,
				Image: image, PlanID: planID, CommandID: cmd.ID, Cpus: f.VCPUs, MemoryMiB: f.RAMMiB, KeepAlive: b.KeepAlive,
				MaxLifetime: b.MaxLifetime, OrderedAt: now})
		}
		out = append(out, outgoing{cloud: b.Site, cmd: cmd, names: cmd.Boot.Names})
		h.m.boots.WithLabelValues(b.Site).Add(float64(b.Count))
		l.boots += uint64(b.Count)
		log.WithFields(logrus.Fields{"site": b.Site, "count": b.Count, "flavor": b.Flavor, "group": b.Group}).Info("boot: " + b.Reason)
		l.event(now, b.Site, "", planID, "boot", fmt.Sprintf("%d x %s for %s/%s: %s", b.Count, b.Flavor, b.Group, b.VMType, b.Reason))
	}
	deadline := now.Add(h.retireDeadline())
	for _, r := range plan.Retires {
		name := ""
		if v := views[r.Site]; v != nil && v.Inventory != nil {
			name = vmName(v.Inventory.VMs, r.VMID)
		}
		l.tx.PutRetire(intent.RetireOrder{VMID: r.VMID, Site: r.Site, Name: name, At: now, Deadline: deadline,
			Rule: string(r.Rule), Reason: r.Reason, PlanID: planID})
		h.m.retires.WithLabelValues(r.Site).Inc()
		log.WithFields(logrus.Fields{"site": r.Site, "vm_id": r.VMID}).Info("retire: " + r.Reason)
		l.event(now, r.Site, r.VMID, planID, "retire", r.Reason)
	}
	deletes := map[string][]planner.Delete{}
	for _, d := range plan.Deletes {
		deletes[d.Site] = append(deletes[d.Site], d)
		if l.deleting == nil {
			l.deleting = map[string]bool{}
		}
		l.deleting[d.VMID] = true
		log.WithFields(logrus.Fields{"site": d.Site, "vm_id": d.VMID}).Info("delete: " + d.Reason)
		l.event(now, d.Site, d.VMID, planID, "delete", d.Reason)
	}
	for _, site := range slices.Sorted(maps.Keys(deletes)) {
		v := views[site]
		if v == nil || !l.fresh(v, now) {
			continue
		}
		// Deletions an admin deadline allows go in their own command: the
		// agent deletes those even if the VM reports running jobs.
		var plain, forced []string
		for _, d := range deletes[site] {
			if d.Deadline {
				forced = append(forced, d.VMID)
			} else {
				plain = append(plain, d.VMID)
			}
		}
		for i, ids := range [][]string{plain, forced} {
			if len(ids) == 0 {
				continue
			}
			dc := &protocol.DeleteCommand{VMIDs: ids, Reason: "planner"}
			if i == 1 {
				dc.Override, dc.Reason = protocol.DeleteDeadline, "retire deadline passed"
			}
			out = append(out, outgoing{cloud: site, cmd: protocol.Command{ID: fmt.Sprintf("%s-%s-d%d-%s", h.cfg.ID, planID, i, site),
				Op: protocol.CmdDelete, Epoch: v.Epoch, Generation: v.Inventory.Seq, Delete: dc}})
		}
	}
	return out
}

// retireOrders returns retire commands for ordered VMs whose agent does not
// know of the order yet (it is new, or the agent reconnected), once per
// session.
func (l *loop) retireOrders(now time.Time, views map[string]*cloudView) []outgoing {
	h := l.h
	by := map[string][]string{}
	for _, id := range slices.Sorted(maps.Keys(l.st.Retire)) {
		r := l.st.Retire[id]
		v := views[r.Site]
		if v == nil || !l.fresh(v, now) || l.retireSent[id] == v.Session {
			continue
		}
		vm, ok := findVM(v.Inventory.VMs, id)
		if !ok || vm.Retiring {
			continue
		}
		by[r.Site] = append(by[r.Site], id)
	}
	var out []outgoing
	for _, cloud := range slices.Sorted(maps.Keys(by)) {
		v := views[cloud]
		ids := by[cloud]
		// One command per deadline would be exact; orders differ in
		// deadline only by when they were made, so the earliest stands.
		deadline := time.Duration(0)
		for _, id := range ids {
			d := l.st.Retire[id].Deadline.Sub(now)
			if deadline == 0 || d < deadline {
				deadline = d
			}
		}
		out = append(out, outgoing{cloud: cloud, vms: ids, cmd: protocol.Command{
			ID: fmt.Sprintf("%s-r%d-%s-%d", h.cfg.ID, l.st.PlanSeq, cloud, v.Session), Op: protocol.CmdRetire,
			Epoch: v.Epoch, Generation: v.Inventory.Seq,
			Retire: &protocol.RetireCommand{VMIDs: ids, Deadline: max(deadline, 0), Reason: "planner"}}})
	}
	return out
}

// send queues a command on its cloud's current session; a cloud without
// one gets nothing (the next cycle decides again from fresh evidence).
func (l *loop) send(c outgoing) {
	lk := l.h.linkFor(c.cloud)
	s := lk.current()
	if s == nil || s.epoch != c.cmd.Epoch || !s.enqueue(c.cmd) {
		l.forgetUnsent([]outgoing{c})
		return
	}
	l.sent[c.cmd.ID] = c.cmd
	l.h.inflight.sent(c.cmd.ID, l.h.now())
	for _, n := range c.names {
		l.bootSession[n] = s.id
	}
	for _, id := range c.vms {
		l.retireSent[id] = s.id
	}
	if len(l.sent) > 100000 {
		// Results that never came (sessions lost): forget the oldest half.
		for id := range l.sent {
			delete(l.sent, id)
			if len(l.sent) <= 50000 {
				break
			}
		}
	}
}

// forgetUnsent undoes the soft bookkeeping of commands that were not sent;
// their intent stays and is reconciled from the next inventories.
func (l *loop) forgetUnsent(cmds []outgoing) {
	for _, c := range cmds {
		delete(l.images.transfers, c.cmd.ID)
		if d := c.cmd.ImageDelete; d != nil {
			delete(l.images.deleting, c.cloud+"|"+d.ImageID)
		}
		for _, n := range c.names {
			delete(l.bootSession, n)
		}
	}
}

// poolVMs lists Canopy's VMs for simulated sources.
func (l *loop) poolVMs() []demand.PoolVM {
	var out []demand.PoolVM
	for _, lk := range l.h.allLinks() {
		v := lk.load()
		if v.Inventory == nil {
			continue
		}
		flavors := map[string]protocol.Flavor{}
		for _, f := range v.Inventory.Flavors {
			flavors[f.Name] = f
		}
		for _, vm := range v.Inventory.VMs {
			if vm.Foreign || vm.State != protocol.VMActive || (vm.Hub != "" && vm.Hub != l.h.cfg.ID) {
				continue
			}
			f := flavors[vm.Flavor]
			_, ordered := l.st.Retire[vm.ID]
			out = append(out, demand.PoolVM{Name: vm.Name, Site: lk.name, Group: vm.Group, VMType: vm.VMType,
				Cpus: f.VCPUs, MemoryMiB: f.RAMMiB, Ready: vm.Ready, Retiring: vm.Retiring || ordered})
		}
	}
	slices.SortFunc(out, func(a, b demand.PoolVM) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// invalidator tells the job source that retired VMs are gone, a few at a
// time, off the control loop.
func (l *loop) invalidator(ctx context.Context) {
	inv, ok := l.h.source.(Invalidator)
	if !ok {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-l.invalidate:
			ictx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := inv.Invalidate(ictx, name); err != nil && ctx.Err() == nil {
				l.h.log.WithField("vm", name).WithError(err).Warn("invalidate the VM's ads in the pool")
			}
			cancel()
		}
	}
}

func findVM(vms []protocol.VM, id string) (protocol.VM, bool) {
	for _, vm := range vms {
		if vm.ID == id {
			return vm, true
		}
	}
	return protocol.VM{}, false
}

// vmName finds a VM's name by id in an inventory's list.
func vmName(vms []protocol.VM, id string) string {
	vm, _ := findVM(vms, id)
	return vm.Name
}
