package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// commandLog remembers recent commands so a command id seen twice is
// carried out once: a replay while the command runs is dropped (its result
// follows), a replay after it ended gets the stored result again.
type commandLog struct {
	mu    sync.Mutex
	max   int
	order []string
	byID  map[string]*protocol.Result // nil while running
}

func newCommandLog(max int) *commandLog {
	return &commandLog{max: max, byID: map[string]*protocol.Result{}}
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
	if len(l.order) > l.max {
		old := l.order[0]
		l.order = l.order[1:]
		delete(l.byID, old)
	}
	return true, nil
}

func (l *commandLog) finish(id string, r *protocol.Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.byID[id]; ok {
		l.byID[id] = r
	}
}

// execute carries out cmd once. fresh is false for a replay; res is nil for
// a replay of a command still running.
func (a *Agent) execute(ctx context.Context, cmd protocol.Command) (res *protocol.Result, fresh bool) {
	isNew, prev := a.cmds.begin(cmd.ID)
	if !isNew {
		a.log.WithField("command", cmd.ID).Debug("replayed command; not run again")
		return prev, false
	}
	log := a.log.WithFields(map[string]any{"command": cmd.ID, "op": cmd.Op})
	var ids []string
	var err error
	switch cmd.Op {
	case protocol.CmdBoot:
		ids, err = a.boot(ctx, *cmd.Boot)
	case protocol.CmdRetire:
		ids, err = a.retire(*cmd.Retire)
	case protocol.CmdDelete:
		ids, err = a.deleteVMs(ctx, cmd.Delete.VMIDs, cmd.Delete.Reason)
	}
	r := &protocol.Result{CommandID: cmd.ID, OK: err == nil, VMIDs: ids}
	if err != nil {
		r.Class = Classify(err)
		r.Error = err.Error()
		log.WithError(err).WithField("class", r.Class).Warn("command failed")
	} else {
		log.WithField("vms", len(ids)).Info("command done")
	}
	a.cmds.finish(cmd.ID, r)
	return r, true
}

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
	existing, err := a.driver.Servers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list servers before boot: %w", err)
	}
	byName := make(map[string]driver.Server, len(existing))
	for _, s := range existing {
		byName[s.Name] = s
	}
	a.mu.Lock()
	hubID, vmURL := a.hubID, a.vmURL
	a.mu.Unlock()
	pool := a.gossipPool()
	var gossipJoin string
	if pool != nil {
		gossipJoin = pool.Addr()
	}
	var ids []string
	var errs []error
	for _, name := range b.Names {
		if s, ok := byName[name]; ok {
			ids = append(ids, s.ID)
			continue
		}
		tok, tokID, err := a.mintVMToken(name, b.Group)
		if err != nil {
			return ids, err
		}
		ud, err := a.userData.Render(vmproto.Settings{AgentURL: vmURL, Token: tok, CondorHost: a.cfg.CondorHost,
			Site: a.cfg.Site, Group: b.Group, VMType: b.VMType, CheckinEvery: a.cfg.CheckinEvery, GossipJoin: gossipJoin, GossipKey: gossip.EncodeKey(a.gkeys.Pool), GossipAgentKey: gossip.EncodeKey(a.gkeys.AgentKey())})
		if err != nil {
			return ids, err
		}
		s, err := a.driver.Boot(ctx, driver.BootSpec{
			Name:   name,
			Flavor: b.Flavor,
			Image:  b.Image,
			Metadata: map[string]string{driver.MetaHub: hubID, driver.MetaSite: a.cfg.Site, driver.MetaGroup: b.Group,
				driver.MetaVMType: b.VMType, driver.MetaPlan: b.PlanID, driver.MetaTokenID: tokID},
			UserData: ud,
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

// retire records the retirement order; each VM learns it at its next
// check-in, drains, and reports; the reaper then deletes the server.
func (a *Agent) retire(r protocol.RetireCommand) ([]string, error) {
	deadline := a.now().Add(r.Deadline)
	pool := a.gossipPool()
	for _, id := range r.VMIDs {
		a.vms.retire(id, deadline, r.Reason)
		// Gossip reaches the VM within a second; its check-in is the backup.
		if st, ok := a.vms.get(id); ok && st.name != "" && pool != nil {
			if _, err := pool.Retire(st.name, st.retireBy, st.reason); err != nil {
				a.log.WithError(err).WithField("vm", st.name).Warn("gossip retirement order; the VM's check-in delivers it")
			}
		}
		a.log.WithFields(map[string]any{"vm_id": id, "reason": r.Reason}).Info("retirement ordered")
	}
	return r.VMIDs, nil
}

func (a *Agent) deleteVMs(ctx context.Context, ids []string, reason string) ([]string, error) {
	var done []string
	var errs []error
	pool := a.gossipPool()
	for _, id := range ids {
		if err := a.driver.Delete(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("delete %s on %s: %w", id, a.cfg.Site, err))
			continue
		}
		if st, ok := a.vms.get(id); ok && st.name != "" && pool != nil {
			pool.Forget(st.name)
		}
		a.vms.forget(id)
		a.log.WithFields(map[string]any{"vm_id": id, "reason": reason}).Info("deleted")
		done = append(done, id)
	}
	return done, errors.Join(errs...)
}

// inventory reports what is true in the cloud now.
func (a *Agent) inventory(ctx context.Context) (protocol.Inventory, error) {
	flavors, err := a.driver.Flavors(ctx)
	if err != nil {
		return protocol.Inventory{}, fmt.Errorf("flavors: %w", err)
	}
	limits, err := a.driver.Limits(ctx)
	if err != nil {
		return protocol.Inventory{}, fmt.Errorf("limits: %w", err)
	}
	servers, err := a.driver.Servers(ctx)
	if err != nil {
		return protocol.Inventory{}, fmt.Errorf("servers: %w", err)
	}
	imgs, err := a.driver.Images(ctx)
	if err != nil {
		return protocol.Inventory{}, fmt.Errorf("images: %w", err)
	}
	inv := protocol.Inventory{Seq: a.invSeq.Add(1), Flavors: flavors, Limits: limits, Images: imgs, TakenAt: a.now().UTC(),
		Storage: a.storageReport(), Squids: a.cfg.SquidList, Policy: a.cfg.Policy}
	live := make(map[string]bool, len(servers))
	for _, s := range servers {
		live[s.ID] = true
		vm := protocol.VM{ID: s.ID, Name: s.Name, Flavor: s.Flavor, Image: s.Image, Fault: s.Fault, CreatedAt: s.CreatedAt}
		if s.Metadata[driver.MetaHub] == "" {
			vm.Foreign = true
		} else {
			vm.Group, vm.VMType, vm.PlanID = s.Metadata[driver.MetaGroup], s.Metadata[driver.MetaVMType], s.Metadata[driver.MetaPlan]
		}
		switch s.Status {
		case driver.StatusBuild:
			vm.State = protocol.VMBooting
		case driver.StatusActive:
			vm.State = protocol.VMActive
		case driver.StatusError:
			vm.State = protocol.VMError
		default:
			vm.State = protocol.VMDeleting
		}
		if st, ok := a.vms.get(s.ID); ok {
			vm.Ready, vm.ReadyAt, vm.LastSeen = st.ready, st.readyAt, st.lastSeen
			vm.Retiring = !st.retireBy.IsZero()
			vm.Unreachable = !st.unreachable.IsZero()
		}
		inv.VMs = append(inv.VMs, vm)
	}
	a.vms.prune(live)
	return inv, nil
}

// reaper deletes retired VMs: those whose vmagent reported it has drained,
// and those past their retirement deadline plus grace.
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
		for _, id := range a.vms.due(a.now(), a.cfg.RetireGrace) {
			if _, err := a.deleteVMs(ctx, []string{id}, "retired"); err != nil {
				a.log.WithError(err).Warn("delete retired VM")
				continue
			}
			a.markChanged()
		}
	}
}
