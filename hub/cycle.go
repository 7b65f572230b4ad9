package hub

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/store"
	"github.com/canopy-grid/canopy/protocol"
)

// agentSilence is how long without a heartbeat before a site counts as
// disconnected for planning.
const agentSilenceHeartbeats = 3

// cycle polls demand, plans and sends the plan's commands.
func (h *Hub) cycle(ctx context.Context) {
	start := time.Now()
	now := h.now()
	pool := h.poolVMs()
	pctx, cancel := context.WithTimeout(ctx, max(h.cfg.PlanEvery, 30*time.Second))
	d, err := h.source.Poll(pctx, now, pool)
	cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.demandErr = err.Error()
		h.m.pollFailures.Inc()
		h.log.WithError(err).Warn("demand poll failed; keeping last good demand, no retirements this cycle")
		// A failed poll never retires or deletes: plan boots only, from the
		// last good demand while it is fresh enough.
		if h.demandAt.IsZero() || now.Sub(h.demandAt) > h.cfg.DemandMaxAge {
			return
		}
		d = h.demand
		d.Machines = nil
	} else {
		h.demand, h.demandAt, h.demandErr = d, now, ""
	}
	h.expirePendingLocked(now)
	snap := h.snapshotLocked(now, d)
	h.history.Fill(&snap)
	plan := planner.Decide(snap)
	h.history.Observe(now, plan)
	if err != nil || !d.Fresh() {
		// A poll that could not read part of the pool (a schedd) never
		// retires either: a VM may look idle only because the queue
		// that feeds it is missing.
		plan.Retires, plan.Deletes = nil, nil
	}
	h.lastPlan, h.planAt = plan, now
	h.m.planSeconds.Observe(time.Since(start).Seconds())
	if plan.Empty() {
		return
	}
	if err := h.executeLocked(plan); err != nil {
		h.log.WithError(err).Error("execute plan")
	}
}

// poolVMs lists Canopy's VMs for simulated sources.
func (h *Hub) poolVMs() []demand.PoolVM {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []demand.PoolVM
	for _, s := range h.sites {
		flavors := flavorIndex(s.inv.Flavors)
		for _, vm := range s.inv.VMs {
			if vm.Foreign || vm.State != protocol.VMActive {
				continue
			}
			f := flavors[vm.Flavor]
			_, ordered := s.retiring[vm.ID]
			out = append(out, demand.PoolVM{Name: vm.Name, Site: s.name, Group: vm.Group, VMType: vm.VMType,
				Cpus: f.VCPUs, MemoryMiB: f.RAMMiB, Ready: vm.Ready, Retiring: vm.Retiring || ordered})
		}
	}
	slices.SortFunc(out, func(a, b demand.PoolVM) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func flavorIndex(fs []protocol.Flavor) map[string]protocol.Flavor {
	m := make(map[string]protocol.Flavor, len(fs))
	for _, f := range fs {
		m[f.Name] = f
	}
	return m
}

func (h *Hub) connectedLocked(s *site, now time.Time) bool {
	return s.conn != nil && !s.invAt.IsZero() && now.Sub(s.lastHeartbeat) <= agentSilenceHeartbeats*h.cfg.HeartbeatEvery
}

// expirePendingLocked forgets boots the cloud never listed.
func (h *Hub) expirePendingLocked(now time.Time) {
	for _, s := range h.sites {
		for name, p := range s.pending {
			if now.Sub(p.orderedAt) > h.cfg.BootListTimeout {
				delete(s.pending, name)
				h.m.bootFailures.WithLabelValues(s.name, "not_listed").Inc()
				h.appendEvent(s.name, name, p.planID, "boot_lost", fmt.Sprintf("not listed by the cloud %s after the boot order", h.cfg.BootListTimeout))
			}
		}
	}
}

// snapshotLocked builds the planner's input.
func (h *Hub) snapshotLocked(now time.Time, d demand.Demand) planner.Snapshot {
	snap := planner.Snapshot{Now: now, Shapes: d.Shapes, Config: h.cfg.Planner}
	for _, name := range slices.Sorted(maps.Keys(h.cfg.Groups)) {
		g := h.cfg.Groups[name]
		snap.Groups = append(snap.Groups, planner.Group{Name: name, Share: g.Share, Caps: g.Caps, CloudCaps: g.CloudCaps,
			Clouds: g.Clouds, KeepAlive: g.KeepAlive, Paused: g.Paused})
	}
	for _, s := range h.sites {
		sc := h.cfg.Sites[s.name]
		c := planner.Cloud{
			Site: s.name, Priority: sc.Priority, Connected: h.connectedLocked(s, now), Paused: sc.Paused,
			Disabled: sc.Disabled, Flavors: s.inv.Flavors, Limits: s.inv.Limits, Caps: sc.Caps, SoftQuota: sc.SoftQuota,
			KeepAlive: sc.KeepAlive, MaxLifetime: sc.MaxLifetime, Endpoint: sc.Endpoint, MaxInFlight: sc.MaxInFlight,
		}
		if pol := s.inv.Policy; pol != nil {
			// The cloud's own settings: the stricter of them and the hub's.
			c.Disabled = c.Disabled || pol.Disabled
			if c.KeepAlive == 0 {
				c.KeepAlive = pol.KeepAlive
			}
			if pol.CoresSoftMax > 0 && (c.SoftQuota.Cores == 0 || pol.CoresSoftMax < c.SoftQuota.Cores) {
				c.SoftQuota.Cores = pol.CoresSoftMax
			}
		}
		for _, p := range s.pending {
			if !p.ackedAt.IsZero() {
				c.Unlisted++
				if c.UnlistedSince.IsZero() || p.ackedAt.Before(c.UnlistedSince) {
					c.UnlistedSince = p.ackedAt
				}
			}
		}
		flavors := flavorIndex(s.inv.Flavors)
		for _, vm := range s.inv.VMs {
			f := flavors[vm.Flavor]
			if vm.Foreign {
				c.Foreign.VMs++
				c.Foreign.Cores += f.VCPUs
				c.Foreign.RAMMiB += f.RAMMiB
				continue
			}
			pv := planner.VM{ID: vm.ID, Site: s.name, Name: vm.Name, Group: vm.Group, VMType: vm.VMType, Flavor: vm.Flavor,
				Image: vm.Image, Cpus: f.VCPUs, MemoryMiB: f.RAMMiB, CreatedAt: vm.CreatedAt, RetiringSince: s.retiring[vm.ID],
				Held: h.held[vm.ID]}
			_, ordered := s.retiring[vm.ID]
			m, inPool := d.Machines[vm.Name]
			if vm.Ready {
				// vmagent checks in once the startd config is written and
				// condor started: the VM's registration time.
				pv.RegisteredAt = vm.ReadyAt
				if inPool {
					pv.JobsStarted = m.JobsStarted
				}
			}
			switch {
			case vm.State == protocol.VMBooting:
				pv.State = planner.VMBooting
			case vm.State == protocol.VMError:
				pv.State = planner.VMError
				pv.ErrorSince = s.errorSince[vm.ID]
			case vm.State == protocol.VMDeleting || vm.Retiring || ordered:
				pv.State = planner.VMRetiring
			case !vm.Ready:
				pv.State = planner.VMStarting
			case inPool && m.RunningJobs > 0:
				pv.State, pv.RunningJobs = planner.VMBusy, m.RunningJobs
			default:
				pv.State = planner.VMIdle
				pv.IdleSince = vm.ReadyAt
				if inPool && !m.IdleSince.IsZero() {
					pv.IdleSince = m.IdleSince
				}
			}
			snap.VMs = append(snap.VMs, pv)
		}
		snap.Clouds = append(snap.Clouds, c)
		for _, p := range s.pending {
			snap.VMs = append(snap.VMs, planner.VM{Site: s.name, Name: p.name, Group: p.group, VMType: p.vmType,
				Flavor: p.flavor, Cpus: p.cpus, MemoryMiB: p.memMiB, State: planner.VMBooting, CreatedAt: p.orderedAt})
		}
	}
	return snap
}

// executeLocked turns a plan into commands.
func (h *Hub) executeLocked(plan planner.Plan) error {
	n, err := h.store.NextPlanID()
	if err != nil {
		return err
	}
	planID := fmt.Sprintf("p%d", n)
	h.planID = planID
	now := h.now()
	log := h.log.WithField("plan", planID)
	var events []store.Event
	for i, b := range plan.Boots {
		s := h.sites[b.Site]
		if s == nil {
			continue
		}
		f := flavorIndex(s.inv.Flavors)[b.Flavor]
		image := b.Image
		if image == "" {
			image = h.cfg.Sites[b.Site].Image
		}
		cmd := protocol.Command{ID: fmt.Sprintf("%s-%s-b%d", h.cfg.ID, planID, i), Op: protocol.CmdBoot,
			Boot: &protocol.BootCommand{PlanID: planID, Group: b.Group, VMType: b.VMType, Flavor: b.Flavor, Image: image}}
		for k := range b.Count {
			name := fmt.Sprintf("canopy-%s-%s-%d-%d", b.Site, planID, i, k)
			cmd.Boot.Names = append(cmd.Boot.Names, name)
			s.pending[name] = &pendingVM{name: name, group: b.Group, vmType: b.VMType, flavor: b.Flavor, planID: planID,
				cmdID: cmd.ID, cpus: f.VCPUs, memMiB: f.RAMMiB, orderedAt: now}
		}
		h.sendLocked(s, cmd)
		h.m.boots.WithLabelValues(b.Site).Add(float64(b.Count))
		log.WithFields(logrus.Fields{"site": b.Site, "count": b.Count, "flavor": b.Flavor, "group": b.Group}).Info("boot: " + b.Reason)
		events = append(events, store.Event{At: now, Site: b.Site, Plan: planID, Kind: "boot",
			Detail: fmt.Sprintf("%d x %s for %s/%s: %s", b.Count, b.Flavor, b.Group, b.VMType, b.Reason)})
	}
	retires := map[string][]string{}
	for _, r := range plan.Retires {
		if s := h.sites[r.Site]; s != nil {
			retires[r.Site] = append(retires[r.Site], r.VMID)
			s.retiring[r.VMID] = now
			log.WithFields(logrus.Fields{"site": r.Site, "vm_id": r.VMID}).Info("retire: " + r.Reason)
			events = append(events, store.Event{At: now, Site: r.Site, VM: r.VMID, Plan: planID, Kind: "retire", Detail: r.Reason})
		}
	}
	for site, ids := range retires {
		h.sendLocked(h.sites[site], protocol.Command{ID: fmt.Sprintf("%s-%s-r-%s", h.cfg.ID, planID, site), Op: protocol.CmdRetire,
			Retire: &protocol.RetireCommand{VMIDs: ids, Deadline: h.retireDeadline(), Reason: "planner"}})
		h.m.retires.WithLabelValues(site).Add(float64(len(ids)))
	}
	deletes := map[string][]string{}
	for _, d := range plan.Deletes {
		if s := h.sites[d.Site]; s != nil {
			deletes[d.Site] = append(deletes[d.Site], d.VMID)
			log.WithFields(logrus.Fields{"site": d.Site, "vm_id": d.VMID}).Info("delete: " + d.Reason)
			events = append(events, store.Event{At: now, Site: d.Site, VM: d.VMID, Plan: planID, Kind: "delete", Detail: d.Reason})
		}
	}
	for site, ids := range deletes {
		h.sendLocked(h.sites[site], protocol.Command{ID: fmt.Sprintf("%s-%s-d-%s", h.cfg.ID, planID, site), Op: protocol.CmdDelete,
			Delete: &protocol.DeleteCommand{VMIDs: ids, Reason: "planner"}})
	}
	return h.store.Append(events...)
}

func (h *Hub) appendEvent(site, vm, plan, kind, detail string) {
	if err := h.store.Append(store.Event{At: h.now(), Site: site, VM: vm, Plan: plan, Kind: kind, Detail: detail}); err != nil {
		h.log.WithError(err).Warn("lifecycle log")
	}
}
