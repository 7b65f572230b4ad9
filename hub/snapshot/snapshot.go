// Package snapshot builds the planner's input from what the hub knows: the
// agents' inventories, the job source's demand and the hub's durable intent.
// The hub and the simulator (`hub simulate`) build their snapshots with the
// same Builder, so that a simulation plans on exactly what production would
// see.
package snapshot

import (
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
	// MaxInFlight). The builder fills in the rest from the inventory.
	Settings planner.Cloud
	// Connected is true while the agent's session is up and its
	// heartbeats are fresh.
	Connected bool
	// Inventory is the agent's last inventory; nil if none arrived since
	// the hub started.
	Inventory *protocol.Inventory
	// InventoryAt is when the hub received it.
	InventoryAt time.Time
}

// Input is everything a snapshot is built from.
type Input struct {
	Now time.Time
	// HubID is this hub's id: servers whose canopy_hub differs are foreign.
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
	// CheckinMaxAge is how old a VM's last check-in may be (by the agent's
	// clock, against the inventory's TakenAt) and still count as evidence;
	// zero means 30 s.
	CheckinMaxAge time.Duration
}

// Report says what the builder concluded about its evidence, for the
// status page and metrics.
type Report struct {
	// PoolView is "ok", or "failed" when the job source could not read the
	// pool's view of the VMs this cycle.
	PoolView string `json:"pool_view"`
	// PoolReason explains a PoolView other than ok.
	PoolReason string `json:"pool_reason,omitempty"`
}

// Pool view states.
const (
	PoolOK     = "ok"
	PoolFailed = "failed"
)

// Builder builds snapshots. It keeps what it needs from one build to the
// next; it is not safe for concurrent use.
type Builder struct{}

// NewBuilder returns a Builder.
func NewBuilder() *Builder { return &Builder{} }

// Build returns the planner's snapshot for in, and what it concluded.
func (b *Builder) Build(in Input) (planner.Snapshot, Report) {
	now := in.Now
	st := in.Intent
	if st == nil {
		st = intent.New()
	}
	rep := Report{PoolView: PoolOK}
	machines := in.Demand.Machines
	switch {
	case !in.DemandOK:
		rep.PoolView, rep.PoolReason = PoolFailed, "the job source's poll failed"
		machines = nil
	case in.Demand.PoolErr != "":
		rep.PoolView, rep.PoolReason = PoolFailed, in.Demand.PoolErr
		machines = nil
	}
	snap := planner.Snapshot{Now: now, Shapes: in.Demand.Shapes, Config: in.Config, Groups: in.Groups,
		VMTypes: in.VMTypes, Aliases: in.Aliases}
	hist := planner.RestoreHistory(st.History)

	pendingBy := map[string][]intent.PendingBoot{}
	for _, name := range slices.Sorted(maps.Keys(st.Pending)) {
		p := st.Pending[name]
		pendingBy[p.Cloud] = append(pendingBy[p.Cloud], p)
	}
	for _, cl := range in.Clouds {
		c := cl.Settings
		c.Connected = cl.Connected
		inv := cl.Inventory
		if inv == nil {
			inv = &protocol.Inventory{}
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
		flavors := make(map[string]protocol.Flavor, len(inv.Flavors))
		for _, f := range inv.Flavors {
			flavors[f.Name] = f
		}
		for _, vm := range inv.VMs {
			f := flavors[vm.Flavor]
			if vm.Foreign || (vm.Hub != "" && vm.Hub != in.HubID) {
				c.Foreign.VMs++
				c.Foreign.Cores += f.VCPUs
				c.Foreign.RAMMiB += f.RAMMiB
				continue
			}
			order, ordered := st.Retire[vm.ID]
			_, held := st.Hold[vm.ID]
			pv := planner.VM{ID: vm.ID, Site: c.Site, Name: vm.Name, Group: vm.Group, VMType: vm.VMType, Flavor: vm.Flavor,
				Image: vm.Image, Cpus: f.VCPUs, MemoryMiB: f.RAMMiB, CreatedAt: vm.CreatedAt, RetiringSince: order.At,
				Held: held}
			m, inPool := machines[vm.Name]
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
			case vm.State == protocol.VMError || vm.State == protocol.VMStopped:
				pv.State = planner.VMError
				if e, ok := st.Error[vm.ID]; ok {
					pv.ErrorSince = e.Since
				} else {
					pv.ErrorSince = now
				}
			case vm.State == protocol.VMDeleting || vm.Retiring || ordered:
				pv.State = planner.VMRetiring
			case !vm.Ready:
				pv.State = planner.VMStarting
			case inPool && m.RunningJobs > 0:
				pv.State, pv.RunningJobs = planner.VMBusy, m.RunningJobs
				pv.FreeCpus, pv.FreeMemoryMiB = m.FreeCpus, m.FreeMemoryMiB
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
		for _, p := range pendingBy[c.Site] {
			snap.VMs = append(snap.VMs, planner.VM{Site: c.Site, Name: p.Name, Group: p.Group, VMType: p.VMType,
				Flavor: p.Flavor, Cpus: p.Cpus, MemoryMiB: p.MemoryMiB, State: planner.VMBooting, CreatedAt: p.OrderedAt,
				Image: p.Image, KeepAlive: p.KeepAlive})
		}
	}
	hist.Fill(&snap)
	return snap, rep
}
