package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/agentdb"
	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// commandLog remembers recent commands so a command id seen twice is
// carried out once: a replay while the command runs is dropped (its result
// follows), a replay after it ended gets the stored result again. Finished
// results are durable (the state file), so this holds across restarts.
type commandLog struct {
	mu    sync.Mutex
	max   int
	order []string
	byID  map[string]*protocol.Result // nil while running
	seq   map[string]uint64           // finish order of stored results
	at    map[string]time.Time
	next  uint64
	dirty map[string]struct{}
}

func newCommandLog(max int) *commandLog {
	return &commandLog{max: max, byID: map[string]*protocol.Result{}, seq: map[string]uint64{}, at: map[string]time.Time{},
		dirty: map[string]struct{}{}}
}

// begin reports whether id is new; if not, it returns the stored result
// (nil while the first run is still going).
func (l *commandLog) begin(id string) (bool, *protocol.Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.byID[id]; ok {
		return false, r
	}
	l.byID[id] = nil
	l.order = append(l.order, id)
	for len(l.order) > l.max {
		old := l.order[0]
		l.order = l.order[1:]
		if _, stored := l.seq[old]; stored {
			l.dirty[old] = struct{}{}
		}
		delete(l.byID, old)
		delete(l.seq, old)
		delete(l.at, old)
	}
	return true, nil
}

// drop forgets a command that was not carried out (refused as stale), so a
// replay is judged again.
func (l *commandLog) drop(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.byID[id]; !ok || r != nil {
		return
	}
	delete(l.byID, id)
	for i, o := range l.order {
		if o == id {
			l.order = append(l.order[:i], l.order[i+1:]...)
			break
		}
	}
}

func (l *commandLog) finish(id string, r *protocol.Result, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.byID[id]; ok {
		l.byID[id] = r
		l.next++
		l.seq[id], l.at[id] = l.next, now
		l.dirty[id] = struct{}{}
	}
}

// running lists the commands still being carried out, oldest first.
func (l *commandLog) running() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, id := range l.order {
		if l.byID[id] == nil {
			out = append(out, id)
		}
	}
	return out
}

// load fills the log from stored results (oldest first).
func (l *commandLog) load(rs []agentdb.Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(rs) > l.max {
		for _, r := range rs[:len(rs)-l.max] {
			l.dirty[r.Result.CommandID] = struct{}{} // over the bound: removed at the next flush
		}
		rs = rs[len(rs)-l.max:]
	}
	for _, r := range rs {
		res := r.Result
		id := res.CommandID
		l.byID[id] = &res
		l.seq[id], l.at[id] = r.Seq, r.At
		l.order = append(l.order, id)
		l.next = max(l.next, r.Seq)
	}
}

// collect moves changed results into batch.
func (l *commandLog) collect(b *agentdb.Batch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.dirty) > 0 && b.Results == nil {
		b.Results = make(map[string]*agentdb.Result, len(l.dirty))
	}
	for id := range l.dirty {
		r, ok := l.byID[id]
		if !ok || r == nil {
			b.Results[id] = nil
			continue
		}
		b.Results[id] = &agentdb.Result{Seq: l.seq[id], At: l.at[id], Result: *r}
	}
	clear(l.dirty)
}

func (l *commandLog) redirty(b *agentdb.Batch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range b.Results {
		l.dirty[id] = struct{}{}
	}
}

func (l *commandLog) pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.dirty) > 0
}

// execute carries out cmd once. fresh is false for a replay; res is nil for
// a replay of a command still running. A command planned on another run of
// this agent (another epoch) is refused as stale: the hub planned it on
// what a previous run reported. The result is durable before it is
// returned, so a replay after a restart gets it again.
func (a *Agent) execute(ctx context.Context, cmd protocol.Command) (res *protocol.Result, fresh bool) {
	isNew, prev := a.cmds.begin(cmd.ID)
	if !isNew {
		a.log.WithField("command", cmd.ID).Debug("replayed command; not run again")
		return prev, false
	}
	log := a.log.WithFields(logrus.Fields{"command": cmd.ID, "op": cmd.Op})
	if cmd.Epoch != "" && cmd.Epoch != a.epoch {
		a.cmds.drop(cmd.ID)
		a.metrics.commandsStale.Inc()
		log.WithFields(logrus.Fields{"epoch": cmd.Epoch, "current_epoch": a.epoch}).Warn("stale command refused: planned on another run of this agent")
		return &protocol.Result{CommandID: cmd.ID, Class: protocol.ErrClassStale,
			Error: fmt.Sprintf("planned on agent run %s; this run is %s: plan again on its inventory", cmd.Epoch, a.epoch)}, true
	}
	var ids []string
	var refused []protocol.Refusal
	var err error
	switch cmd.Op {
	case protocol.CmdBoot:
		if cmd.Boot == nil {
			err = invalidf("boot command without boot")
			break
		}
		ids, err = a.boot(ctx, *cmd.Boot)
	case protocol.CmdRetire:
		if cmd.Retire == nil {
			err = invalidf("retire command without retire")
			break
		}
		ids, refused, err = a.retire(ctx, *cmd.Retire)
	case protocol.CmdDelete:
		if cmd.Delete == nil {
			err = invalidf("delete command without delete")
			break
		}
		ids, refused, err = a.deleteVMs(ctx, cmd.Delete.VMIDs, cmd.Delete.Reason, cmd.Delete.Override, sourceCommand)
	case protocol.CmdImageCopy:
		if cmd.ImageCopy == nil {
			err = invalidf("image copy command without body")
			break
		}
		ids, err = a.copyImage(ctx, cmd.ID, *cmd.ImageCopy)
	case protocol.CmdImageDelete:
		if cmd.ImageDelete == nil {
			err = invalidf("image delete command without body")
			break
		}
		ids, refused, err = a.deleteImage(ctx, *cmd.ImageDelete)
	default:
		err = invalidf("unknown command %q", cmd.Op)
	}
	r := &protocol.Result{CommandID: cmd.ID, OK: err == nil && len(refused) == 0, VMIDs: ids, Refused: refused}
	switch {
	case err != nil:
		r.Class = Classify(err)
		r.Error = err.Error()
		log.WithError(err).WithField("class", r.Class).Warn("command failed")
	case len(refused) > 0:
		r.Class = protocol.ErrClassRefused
		r.Error = fmt.Sprintf("refused %d of %d servers", len(refused), len(refused)+len(ids))
		log.WithFields(logrus.Fields{"vms": len(ids), "refused": len(refused)}).Info("command done in part")
	default:
		log.WithField("vms", len(ids)).Info("command done")
	}
	a.cmds.finish(cmd.ID, r, a.now())
	if ferr := a.flush(); ferr != nil {
		// The work is done; say so, and that it may not survive a restart.
		log.WithError(ferr).Error("command result not saved")
		if r.Error == "" {
			r.OK, r.Class, r.Error = false, protocol.ErrClassInternal, ferr.Error()
		}
	}
	return r, true
}

// invalidError is a malformed command.
type invalidError struct{ msg string }

// Error returns the message.
func (e invalidError) Error() string { return e.msg }

// ErrorClass reports the class the hub sees: invalid.
func (e invalidError) ErrorClass() protocol.ErrorClass { return protocol.ErrClassInvalid }

func invalidf(format string, args ...any) error { return invalidError{fmt.Sprintf(format, args...)} }

// Classify maps an error to the class reported to the hub.
func Classify(err error) protocol.ErrorClass {
	var ce driver.ClassifiedError
	if errors.As(err, &ce) {
		return ce.ErrorClass()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return protocol.ErrClassTransient
	}
	if strings.Contains(strings.ToLower(err.Error()), "quota exceeded") {
		return protocol.ErrClassQuota
	}
	return protocol.ErrClassInternal
}

// boot creates the named servers that do not exist yet. Listing first makes
// a replayed or retried boot find its servers instead of booting again.
func (a *Agent) boot(ctx context.Context, b protocol.BootCommand) ([]string, error) {
	// A recent listing finds a replayed command's servers; a name it lacks
	// is looked for again in a new listing before it is booted.
	existing, err := a.listing.get(ctx, listingMaxAge)
	if err == nil {
		for _, name := range b.Names {
			if _, ok := existing.named(name); !ok {
				existing, err = a.listing.get(ctx, 0)
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list servers before boot: %w", err)
	}
	defer a.listing.invalidate()
	a.mu.Lock()
	hubID, vmURL := a.hubID, a.vmURL
	a.mu.Unlock()
	pool := a.gossipPool()
	var gossipJoin string
	if pool != nil {
		gossipJoin = pool.Addr()
	}
	// Mint every new server's enrollment token and make the records
	// durable before booting any: a VM must find its token on record
	// even if this agent restarts before it enrolls.
	type pending struct {
		name, tokID string
		userData    []byte
	}
	var ids []string
	var todo []pending
	for _, name := range b.Names {
		if s, ok := existing.named(name); ok {
			ids = append(ids, s.ID)
			continue
		}
		tok, tokID, err := a.mintEnrollToken(name, b.Group)
		if err != nil {
			return ids, err
		}
		settings := a.vmSettings(vmURL, tok, gossipJoin, b.Group, b.VMType)
		settings.KeepAlive, settings.MaxLifetime = b.KeepAlive, b.MaxLifetime
		settings.HS06PerCore = b.HS06PerCore
		ud, err := a.userData.Render(settings)
		if err != nil {
			return ids, err
		}
		todo = append(todo, pending{name: name, tokID: tokID, userData: ud})
	}
	if len(todo) > 0 {
		if err := a.flush(); err != nil {
			return ids, fmt.Errorf("record enrollment tokens before booting: %w", err)
		}
	}
	var errs []error
	for _, p := range todo {
		name := p.name
		meta := map[string]string{driver.MetaHub: hubID, driver.MetaSite: a.cfg.Site, driver.MetaGroup: b.Group,
			driver.MetaVMType: b.VMType, driver.MetaPlan: b.PlanID, driver.MetaTokenID: p.tokID}
		if b.KeepAlive > 0 {
			meta[driver.MetaKeepAlive] = b.KeepAlive.String()
		}
		if b.MaxLifetime > 0 {
			meta[driver.MetaMaxLifetime] = b.MaxLifetime.String()
		}
		s, err := a.driver.Boot(ctx, driver.BootSpec{
			Name:     name,
			Flavor:   b.Flavor,
			Image:    b.Image,
			Metadata: meta,
			UserData: p.userData,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("boot %s on %s: %w", name, a.cfg.Site, err))
			if Classify(err) == protocol.ErrClassQuota || ctx.Err() != nil {
				break // the rest would fail the same way
			}
			continue
		}
		a.log.WithFields(map[string]any{"vm": name, "id": s.ID, "flavor": b.Flavor, "plan": b.PlanID}).Info("booted")
		ids = append(ids, s.ID)
	}
	return ids, errors.Join(errs...)
}

// vmSettings are the settings a new VM's user-data carries: nothing a job
// in the VM could misuse (see vmproto.Settings).
func (a *Agent) vmSettings(vmURL, enrollToken, gossipJoin, group, vmType string) vmproto.Settings {
	s := vmproto.Settings{AgentURL: vmURL, AgentCA: a.caPEM, EnrollToken: enrollToken, CondorHost: a.cfg.CondorHost,
		CondorTrustDomain: a.cfg.Condor.TrustDomain, CondorUIDDomain: a.cfg.Condor.UIDDomain, CondorCCBAddress: a.cfg.Condor.CCBAddress,
		Site: a.cfg.Site, Group: group, VMType: vmType, CheckinEvery: a.cfg.CheckinEvery, GossipJoin: gossipJoin}
	if gossipJoin != "" {
		s.GossipAgentKey = gossip.EncodeKey(a.gkeys.AgentKey())
	}
	return s
}

// Who asked for a deletion (metrics and logs).
const (
	sourceCommand = "command"
	sourceReaper  = "reaper"
)

// Refusal reasons, as metric labels; Refusal.Reason says more.
const (
	refuseForeign  = "foreign"
	refuseUnlisted = "unlisted"
	refuseJobs     = "jobs"
	refuseDraining = "draining"
)

// listByID returns the cloud's servers by id, from a listing at most
// listingMaxAge old, or a new one if the recent one lacks any of ids: a
// server is never taken for gone on an old listing.
func (a *Agent) listByID(ctx context.Context, ids []string) (map[string]driver.Server, error) {
	l, err := a.listing.get(ctx, listingMaxAge)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, ok := l.server(id); !ok {
			if l, err = a.listing.get(ctx, 0); err != nil {
				return nil, err
			}
			break
		}
	}
	m := make(map[string]driver.Server, len(l.servers))
	for _, s := range l.servers {
		m[s.ID] = s
	}
	return m, nil
}

// currentHubID is the id of the hub this agent serves: the last Welcome's,
// kept in the state file across restarts.
func (a *Agent) currentHubID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hubID
}

// ownership says why a server is not this hub's to act on, "" when it is.
func ownership(s driver.Server, hubID string) string {
	owner := s.Metadata[driver.MetaHub]
	switch {
	case owner == "":
		return "foreign server: no " + driver.MetaHub + " metadata (not booted by Canopy)"
	case hubID == "":
		return fmt.Sprintf("server booted by hub %q, and this agent does not know its hub's id yet", owner)
	case owner != hubID:
		return fmt.Sprintf("server booted by hub %q, not by this agent's hub %q", owner, hubID)
	}
	return ""
}

// retire records the retirement orders; each VM learns its order by gossip
// or at its next check-in, drains, and reports; the reaper then deletes the
// server. Orders are durable before retire returns. Servers the cloud does
// not list, or that are not this hub's, are refused.
func (a *Agent) retire(ctx context.Context, r protocol.RetireCommand) ([]string, []protocol.Refusal, error) {
	byID, err := a.listByID(ctx, r.VMIDs)
	if err != nil {
		return nil, nil, fmt.Errorf("list servers before retiring on %s: %w", a.cfg.Site, err)
	}
	now := a.now()
	deadline := now.Add(r.Deadline)
	hubID := a.currentHubID()
	pool := a.gossipPool()
	var done []string
	var refused []protocol.Refusal
	type order struct {
		name string
		st   vmStatus
	}
	var orders []order
	for _, id := range r.VMIDs {
		log := a.log.WithField("vm_id", id)
		s, ok := byID[id]
		if !ok {
			refused = append(refused, protocol.Refusal{VMID: id, Reason: "the cloud does not list this server"})
			a.metrics.retiresRefused.WithLabelValues(refuseUnlisted).Inc()
			log.Warn("retirement refused: the cloud does not list the server")
			continue
		}
		log = log.WithField("vm", s.Name)
		if why := ownership(s, hubID); why != "" {
			refused = append(refused, protocol.Refusal{VMID: id, Reason: why})
			a.metrics.retiresRefused.WithLabelValues(refuseForeign).Inc()
			log.WithField("why", why).Warn("retirement refused")
			continue
		}
		st := a.vms.retire(id, deadline, r.Reason, now)
		orders = append(orders, order{name: s.Name, st: st})
		done = append(done, id)
		log.WithFields(logrus.Fields{"reason": r.Reason, "deadline": st.retireBy.Format(time.RFC3339)}).Info("retirement ordered")
	}
	if len(done) > 0 {
		if err := a.flush(); err != nil {
			return nil, refused, fmt.Errorf("retirement orders on %s not saved: %w", a.cfg.Site, err)
		}
	}
	// Gossip reaches the VM within a second; its check-in is the backup.
	for _, o := range orders {
		if pool == nil {
			break
		}
		if _, err := pool.Retire(o.name, o.st.retireBy, o.st.reason); err != nil {
			a.log.WithError(err).WithField("vm", o.name).Warn("gossip retirement order; the VM's check-in delivers it")
		}
	}
	return done, refused, nil
}

// mayDelete is the agent's own check before any deletion, whoever asked:
// Canopy deletes a server only on fresh, positive evidence that no job
// runs there, or when an admin-set deadline has passed. It returns the
// refusal's label and reason, or "" when the server may go. The hub's
// planner applies the same rule; this is the second line.
func (a *Agent) mayDelete(s driver.Server, override string, now time.Time) (label, reason string) {
	if why := ownership(s, a.currentHubID()); why != "" {
		return refuseForeign, why
	}
	if override == protocol.DeleteDeadline {
		return "", ""
	}
	st, ok := a.vms.get(s.ID)
	if !ok {
		return "", ""
	}
	fresh := 3 * a.cfg.CheckinEvery
	if st.jobs != nil && (st.jobs.Running > 0 || st.jobs.Claimed > 0) && now.Sub(st.jobsSeen) <= fresh {
		return refuseJobs, fmt.Sprintf("the VM's vmagent reported %d running jobs and %d claimed slots %s ago; "+
			"deleting it needs override %q (an admin deadline passed)", st.jobs.Running, st.jobs.Claimed,
			now.Sub(st.jobsSeen).Round(time.Millisecond), protocol.DeleteDeadline)
	}
	if st.retireState == protocol.RetireDraining {
		return refuseDraining, fmt.Sprintf("the VM is draining (retirement ordered %s ago, deadline in %s) and has not reported drained; "+
			"deleting it needs override %q", now.Sub(st.orderedAt).Round(time.Second), st.retireBy.Sub(now).Round(time.Second),
			protocol.DeleteDeadline)
	}
	return "", ""
}

// deleteVMs deletes servers after the second-line check (mayDelete). A
// server the cloud no longer lists counts as deleted. Deletions are
// recorded durably before deleteVMs returns their ids.
func (a *Agent) deleteVMs(ctx context.Context, ids []string, reason, override, source string) ([]string, []protocol.Refusal, error) {
	byID, err := a.listByID(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("list servers before deleting on %s: %w", a.cfg.Site, err)
	}
	defer a.listing.invalidate()
	var done []string
	var refused []protocol.Refusal
	var errs []error
	pool := a.gossipPool()
	for _, id := range ids {
		s, ok := byID[id]
		if !ok {
			done = append(done, id) // already gone
			continue
		}
		log := a.log.WithFields(logrus.Fields{"vm": s.Name, "vm_id": id, "source": source})
		if label, why := a.mayDelete(s, override, a.now()); label != "" {
			refused = append(refused, protocol.Refusal{VMID: id, Reason: why})
			a.metrics.deletesRefused.WithLabelValues(label, source).Inc()
			if a.deleteLog.allow(id + "/" + label) {
				log.WithFields(logrus.Fields{"refusal": label, "why": why, "asked_reason": reason}).Warn("delete refused")
			}
			continue
		}
		if err := a.driver.Delete(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("delete %s on %s: %w", id, a.cfg.Site, err))
			continue
		}
		if pool != nil && s.Name != "" {
			pool.Forget(s.Name)
		}
		a.vms.forget(id, a.now())
		a.metrics.deletes.WithLabelValues(source).Inc()
		log.WithFields(logrus.Fields{"reason": reason, "override": override}).Info("deleted")
		done = append(done, id)
	}
	if err := a.flush(); err != nil {
		errs = append(errs, fmt.Errorf("deletions on %s not saved: %w", a.cfg.Site, err))
	}
	return done, refused, errors.Join(errs...)
}

// inventory reports what is true in the cloud now, with what the book
// knows of each VM. What it reports is flushed to the state file before it
// is sent (sendInventory), so a restart changes nothing the hub sees.
func (a *Agent) inventory(ctx context.Context) (protocol.Inventory, error) {
	flavors, imgs, err := a.slowParts(ctx)
	if err != nil {
		return protocol.Inventory{}, err
	}
	apiStart := time.Now()
	limits, err := a.driver.Limits(ctx)
	if err != nil {
		return protocol.Inventory{}, fmt.Errorf("limits: %w", err)
	}
	apiMillis := max(int(time.Since(apiStart).Milliseconds()), 1)
	l, err := a.listing.get(ctx, listingMaxAge)
	if err != nil {
		return protocol.Inventory{}, fmt.Errorf("servers: %w", err)
	}
	now := a.now()
	inv := protocol.Inventory{Seq: a.invSeq.Add(1), Flavors: flavors, Limits: limits, Images: imgs, TakenAt: now.UTC(),
		Storage: a.storageReport(), Squids: a.cfg.SquidList, Policy: a.cfg.Policy, Running: a.cmds.running(), APIMillis: apiMillis}
	hubID := a.currentHubID()
	fresh := 3 * a.cfg.CheckinEvery
	live := make(map[string]bool, len(l.servers))
	inv.VMs = make([]protocol.VM, 0, len(l.servers))
	for _, s := range l.servers {
		if a.vms.wasDeleted(s.ID) {
			continue // deleted by this agent since the listing was taken
		}
		live[s.ID] = true
		vm := protocol.VM{ID: s.ID, Name: s.Name, Flavor: s.Flavor, Image: s.Image, Fault: s.Fault, CreatedAt: s.CreatedAt,
			Hub: s.Metadata[driver.MetaHub], CloudStatus: s.CloudStatus, State: vmState(s.Status)}
		vm.Foreign = vm.Hub == "" || vm.Hub != hubID
		if !vm.Foreign {
			vm.Group, vm.VMType, vm.PlanID = s.Metadata[driver.MetaGroup], s.Metadata[driver.MetaVMType], s.Metadata[driver.MetaPlan]
			vm.KeepAlive, vm.MaxLifetime = metaDuration(s.Metadata[driver.MetaKeepAlive]), metaDuration(s.Metadata[driver.MetaMaxLifetime])
		}
		if st, ok := a.vms.get(s.ID); ok {
			// LastSeen is left out: it moves at every check-in and would
			// put every VM in every delta. A fresh check-in shows as Jobs.
			vm.Ready, vm.ReadyAt = st.ready, st.readyAt
			vm.Retiring = !st.retireBy.IsZero()
			vm.RetireState, vm.RetireError = st.retireState, st.retireError
			vm.Unreachable = !st.unreachable.IsZero()
			if st.jobs != nil && now.Sub(st.jobsSeen) <= fresh {
				j := *st.jobs
				vm.Jobs = &j
			}
		}
		inv.VMs = append(inv.VMs, vm)
	}
	a.vms.prune(live, now)
	return inv, nil
}

// slowEvery is how often flavors and images are listed: they change
// rarely, and image listings can be long.
const slowEvery = 5 * time.Minute

// slowParts returns the cloud's flavors and images, listed again when the
// last listing is older than slowEvery.
func (a *Agent) slowParts(ctx context.Context) ([]protocol.Flavor, []images.Image, error) {
	a.mu.Lock()
	flavors, imgs, at := a.flavors, a.images, a.slowAt
	a.mu.Unlock()
	if !at.IsZero() && a.now().Sub(at) < slowEvery {
		return flavors, imgs, nil
	}
	flavors, err := a.driver.Flavors(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("flavors: %w", err)
	}
	imgs, err = a.driver.Images(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("images: %w", err)
	}
	a.mu.Lock()
	a.flavors, a.images, a.slowAt = flavors, imgs, a.now()
	a.mu.Unlock()
	return flavors, imgs, nil
}

// vmState maps a driver status to the state the hub acts on.
func vmState(s driver.ServerStatus) protocol.VMState {
	switch s {
	case driver.StatusBuild:
		return protocol.VMBooting
	case driver.StatusActive:
		return protocol.VMActive
	case driver.StatusError:
		return protocol.VMError
	case driver.StatusRebooting:
		return protocol.VMRebooting
	case driver.StatusDeleting, driver.StatusDeleted:
		return protocol.VMDeleting
	}
	// Stopped, and any status a driver may add: exists, runs nothing.
	return protocol.VMStopped
}

// reaper deletes retired VMs: those whose vmagent reported it has drained
// (positive evidence that no job runs), and those past their retirement
// deadline plus grace (an admin-set deadline). A VM the gossip pool holds
// failed is not deleted for that: unreachable is unknown, not idle.
func (a *Agent) reaper(ctx context.Context) {
	every := min(a.cfg.CheckinEvery, 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.reap(ctx)
	}
}

// reap runs one pass of the reaper: drained VMs without override (the
// second line still checks their last job count), VMs past their deadline
// plus grace with the deadline override.
func (a *Agent) reap(ctx context.Context) {
	var drained, late []string
	for _, d := range a.vms.due(a.now(), a.cfg.RetireGrace) {
		if d.deadline {
			late = append(late, d.id)
		} else {
			drained = append(drained, d.id)
		}
	}
	for _, batch := range []struct {
		ids      []string
		override string
		reason   string
	}{{drained, "", "retired: drained"}, {late, protocol.DeleteDeadline, "retired: deadline and grace passed"}} {
		if len(batch.ids) == 0 {
			continue
		}
		done, _, err := a.deleteVMs(ctx, batch.ids, batch.reason, batch.override, sourceReaper)
		if err != nil {
			a.log.WithError(err).Warn("delete retired VMs")
		}
		if len(done) > 0 {
			a.markChanged()
		}
	}
}

// metaDuration reads a duration the agent wrote into a server's metadata.
// Anyone with the project's credentials can edit metadata: a value that
// is not a non-negative duration counts as none (the hub's and cloud's own
// settings then apply), which never shortens a VM's life.
func metaDuration(v string) time.Duration {
	if v == "" || len(v) > 32 {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0
	}
	return d
}
