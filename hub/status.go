package hub

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/snapshot"
	"github.com/canopy-grid/canopy/protocol"
)

// Status is what the hub publishes after every cycle for readers: the JSON
// API, /metrics and the status page read it without touching live state.
// It is immutable once published.
type Status struct {
	At     time.Time      `json:"at"`
	HubID  string         `json:"hub_id"`
	Sites  []SiteStatus   `json:"sites"`
	VMs    []VMStatus     `json:"vms"`
	Demand DemandStatus   `json:"demand"`
	Events []intent.Event `json:"events"`
	// Evidence is what the snapshot builder concluded (the pool view).
	Evidence snapshot.Report `json:"evidence"`
	// Waiting lists the clouds a starting hub waits for before it plans.
	Waiting []string `json:"waiting,omitempty"`
	// Groups are every group configured or with jobs (empty ones too),
	// and Unmatchable the idle jobs no cloud can take, by shape.
	Groups      []GroupRow       `json:"groups"`
	Unmatchable []UnmatchableRow `json:"unmatchable"`
	// Boots and BootFailures count servers ordered and boot commands
	// failed since the hub started.
	Boots        uint64 `json:"boots"`
	BootFailures uint64 `json:"boot_failures"`

	seq       uint64
	byID      map[string]int // index into VMs
	heldNames map[string]bool

	// Encoded answers, made once per status on first use.
	sitesOnce, vmsOnce sync.Once
	sitesJSON, vmsJSON []byte
}

// SitesJSON is the JSON API's answer for the clouds, encoded once.
func (st *Status) SitesJSON() []byte {
	st.sitesOnce.Do(func() { st.sitesJSON = encodeJSON(st.Sites) })
	return st.sitesJSON
}

// VMsJSON is the JSON API's answer for the VMs, encoded once.
func (st *Status) VMsJSON() []byte {
	st.vmsOnce.Do(func() { st.vmsJSON = encodeJSON(st.VMs) })
	return st.vmsJSON
}

// SiteStatus is one cloud in the JSON API and on the status page.
type SiteStatus struct {
	Name          string    `json:"name"`
	Connected     bool      `json:"connected"`
	Software      string    `json:"software,omitempty"`
	ConnectedAt   time.Time `json:"connected_at,omitzero"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	InventoryAt   time.Time `json:"inventory_at,omitzero"`
	Flavors       int       `json:"flavors"`
	MaxCores      int       `json:"max_cores"`
	UsedCores     int       `json:"used_cores"`
	MaxInstances  int       `json:"max_instances"`
	VMs           int       `json:"vms"`
	ForeignVMs    int       `json:"foreign_vms"`
	Pending       int       `json:"pending_boots"`
	Paused        bool      `json:"paused"`
	// State is the planner's state for the cloud (ok, disconnected,
	// backoff, ...) and Reason why.
	State  planner.CloudState `json:"state,omitempty"`
	Reason string             `json:"reason,omitempty"`
	// Storage is the cloud's last storage health report, if it sends one.
	Storage *protocol.StorageReport `json:"storage,omitempty"`

	// Mode is an admin's run-time mode (paused, disabled, draining), set
	// with `hub cloud`; empty when none. Disabled is the effective setting
	// (config or mode).
	Mode     string `json:"mode,omitempty"`
	Disabled bool   `json:"disabled"`
	// Counts are the site's Canopy VMs by state for people (DisplayStates).
	Counts map[string]int `json:"counts"`
	// Canopy and foreign servers' cores and memory, from their flavors.
	CanopyCores   int `json:"canopy_cores"`
	CanopyRAMMiB  int `json:"canopy_ram_mib"`
	ForeignCores  int `json:"foreign_cores"`
	ForeignRAMMiB int `json:"foreign_ram_mib"`
	MaxRAMMiB     int `json:"max_ram_mib"`
	UsedRAMMiB    int `json:"used_ram_mib"`
	// Caps and SoftQuota are the config's limits on Canopy's use (0: none).
	Caps      planner.Caps `json:"caps"`
	SoftQuota planner.Caps `json:"soft_quota"`
	// APIUp: the agent listed the cloud recently (its inventory is fresh);
	// APIMillis is how long the cloud API took for the last one.
	APIUp     bool `json:"api_up"`
	APIMillis int  `json:"api_ms"`
	// Slots are the site's VMs in the pool; IdleSlotCores the cores they
	// offer that no job uses.
	Slots         int `json:"slots"`
	IdleSlotCores int `json:"idle_slot_cores"`
	// RunningJobs are the jobs running on the site's VMs, by group.
	RunningJobs map[string]int `json:"running_jobs"`
	// Images are the cloud's images' statuses, by image name.
	Images map[string]string `json:"images,omitempty"`
}

// DisplayStates are the VM states the page and `hub status` count, in
// order: the planner's states, refined by what the hub knows (held by an
// admin, unknown or unregistered in the pool).
var DisplayStates = []string{"booting", "starting", "unregistered", "idle", "busy", "retiring", "error", "held", "unknown"}

// DisplayState is a VM's state for people (one of DisplayStates).
func DisplayState(vm *VMStatus) string { return displayState(vm) }

// displayState is a VM's state for the per-site counts.
func displayState(vm *VMStatus) string {
	switch {
	case vm.Held:
		return "held"
	case vm.State == planner.VMError:
		return "error"
	case vm.Evidence == planner.EvidenceUnknown:
		return "unknown"
	case vm.Evidence == planner.EvidenceUnregistered && vm.State == planner.VMStarting:
		return "unregistered"
	}
	return string(vm.State)
}

// GroupRow is one group's jobs.
type GroupRow struct {
	Name      string `json:"name"`
	Idle      int    `json:"idle"`
	Running   int    `json:"running"`
	Waiting   int    `json:"waiting"`
	Shortfall int    `json:"shortfall"`
	Paused    bool   `json:"paused,omitempty"`
}

// UnmatchableRow is idle jobs of one shape that no cloud takes, and why.
type UnmatchableRow struct {
	Group     string `json:"group"`
	VMType    string `json:"vm_type"`
	Cpus      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	Count     int    `json:"count"`
	Why       string `json:"why"`
}

// VMStatus is one VM in the JSON API and on the status page.
type VMStatus struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Site   string          `json:"site"`
	Group  string          `json:"group"`
	VMType string          `json:"vm_type"`
	Flavor string          `json:"flavor"`
	State  planner.VMState `json:"state"`
	// Evidence is what the hub knows of the VM's place in the pool.
	Evidence planner.Evidence `json:"evidence,omitempty"`
	Held     bool             `json:"held,omitempty"`
	// Cores and RAMMiB are the VM's flavor's.
	Cores       int `json:"cores,omitempty"`
	RAMMiB      int `json:"ram_mib,omitempty"`
	RunningJobs int `json:"running_jobs"`
	// JobsStarted is how many jobs the VM's machine started, as the pool
	// reports it (0 when unknown).
	JobsStarted int       `json:"jobs_started,omitempty"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	// Fault is the cloud's message for a VM in error or stopped.
	Fault string `json:"fault,omitempty"`
	// RetireDeadline is set once a retirement was ordered.
	RetireDeadline time.Time `json:"retire_deadline,omitzero"`
	// RetireState is the retirement's progress as the agent reports it
	// (ordered, draining, drained, failed) and RetireError why it failed:
	// a VM whose retirement failed is kept, and the admin sees why here.
	RetireState string `json:"retire_state,omitempty"`
	RetireError string `json:"retire_error,omitempty"`
}

// DemandStatus summarizes demand for the API.
type DemandStatus struct {
	Shapes   []planner.Shape `json:"shapes"`
	Idle     int             `json:"idle"`
	Running  int             `json:"running"`
	Finished int             `json:"finished"`
	TakenAt  time.Time       `json:"taken_at,omitzero"`
	Error    string          `json:"error,omitempty"`
	Plan     planner.Plan    `json:"last_plan"`
	PlanAt   time.Time       `json:"plan_at,omitzero"`
}

// recentEvents is how many events the published status carries.
const recentEvents = 200

// statusInput is what a status is built from: copies and immutable values
// taken on the control loop, so that the status can be built elsewhere.
type statusInput struct {
	seq        uint64 // orders statuses built off the loop
	now        time.Time
	report     snapshot.Report
	waiting    []string
	demand     demand.Demand
	demandAt   time.Time
	demandErr  string
	plan       planner.Plan
	planAt     time.Time
	views      map[string]*cloudView
	fresh      map[string]bool
	pending    map[string]intent.PendingBoot
	hold       map[string]intent.Hold
	retire     map[string]intent.RetireOrder
	errs       map[string]intent.ErrorMark
	lastStates map[string]planner.VMState
	lastEvid   map[string]planner.Evidence
	events     []intent.Event
	pol        *policy
	modes      map[string]intent.SiteMode
	boots      uint64
	failures   uint64
}

// statusInput takes what the status needs. It runs on the control loop and
// is cheap: the intent's small tables are copied, the rest is immutable.
func (l *loop) statusInput(now time.Time) statusInput {
	l.statusSeq++
	in := statusInput{seq: l.statusSeq, now: now, report: l.report, waiting: slices.Clone(l.waiting), demand: l.demand, demandAt: l.demandAt,
		demandErr: l.demandErr, plan: l.lastPlan, planAt: l.planAt, views: l.views(), fresh: map[string]bool{},
		pending: maps.Clone(l.st.Pending), hold: maps.Clone(l.st.Hold), retire: maps.Clone(l.st.Retire),
		errs: maps.Clone(l.st.Error), lastStates: l.lastStates, lastEvid: l.lastEvid, pol: l.h.policy(),
		modes: maps.Clone(l.st.Sites), boots: l.boots, failures: l.bootFailures}
	for name, v := range in.views {
		in.fresh[name] = l.fresh(v, now)
	}
	n := min(len(l.st.Events), recentEvents)
	in.events = make([]intent.Event, 0, n)
	for i := len(l.st.Events) - 1; i >= len(l.st.Events)-n; i-- {
		in.events = append(in.events, l.st.Events[i])
	}
	return in
}

// status builds the status readers see, on the control loop.
func (l *loop) status(now time.Time) *Status { return l.h.buildStatus(l.statusInput(now)) }

// buildStatus builds a status from its input; it may run off the loop.
func (h *Hub) buildStatus(in statusInput) *Status {
	now := in.now
	st := &Status{seq: in.seq, At: now, HubID: h.cfg.ID, Evidence: in.report, Waiting: in.waiting,
		byID: map[string]int{}, heldNames: map[string]bool{}}
	d := DemandStatus{Shapes: in.demand.Shapes, Finished: in.demand.Finished, TakenAt: in.demandAt, Error: in.demandErr,
		Plan: in.plan, PlanAt: in.planAt}
	for _, sh := range d.Shapes {
		d.Idle += sh.Idle
		d.Running += sh.Running
	}
	st.Demand = d
	cloudState := map[string]planner.CloudStatus{}
	for _, c := range in.plan.Clouds {
		cloudState[c.Site] = c
	}
	pending := map[string]int{}
	for _, p := range in.pending {
		pending[p.Site]++
	}
	views := in.views
	total := len(in.pending)
	for _, v := range views {
		if v.Inventory != nil {
			total += len(v.Inventory.VMs)
		}
	}
	// First the VMs' names and where they are, sorted; then each status
	// is built once, in its place (VMStatus is large: copying or sorting
	// 20,000 of them costs more than building them).
	type ref struct {
		name  string
		cloud string
		vm    *protocol.VM
		pend  string // pending boot's name when vm is nil
		cores int
		ram   int
	}
	refs := make([]ref, 0, total)
	for _, name := range slices.Sorted(maps.Keys(views)) {
		v := views[name]
		cs := cloudState[name]
		sc := in.pol.Sites[name]
		mode := in.modes[name].Mode
		s := SiteStatus{Name: name, Connected: in.fresh[name], Software: v.Software, ConnectedAt: v.ConnectedAt,
			LastHeartbeat: v.LastHeartbeat, InventoryAt: v.InventoryAt, Pending: pending[name],
			Paused: sc.Paused || mode == intent.ModePaused, Disabled: sc.Disabled || mode == intent.ModeDisabled || mode == intent.ModeDraining,
			Mode: mode, State: cs.State, Reason: cs.Reason, Caps: sc.Caps, SoftQuota: sc.SoftQuota,
			Counts: map[string]int{}, RunningJobs: map[string]int{}, APIUp: in.fresh[name]}
		if inv := v.Inventory; inv != nil {
			s.Flavors, s.MaxCores, s.UsedCores, s.MaxInstances = len(inv.Flavors), inv.Limits.MaxCores, inv.Limits.UsedCores, inv.Limits.MaxInstances
			s.MaxRAMMiB, s.UsedRAMMiB, s.APIMillis = inv.Limits.MaxRAMMiB, inv.Limits.UsedRAMMiB, inv.APIMillis
			s.Storage = inv.Storage
			if len(inv.Images) > 0 {
				s.Images = make(map[string]string, len(inv.Images))
				for _, im := range inv.Images {
					s.Images[im.Name] = string(im.Status)
				}
			}
			flavors := make(map[string]protocol.Flavor, len(inv.Flavors))
			for _, f := range inv.Flavors {
				flavors[f.Name] = f
			}
			for i := range inv.VMs {
				vm := &inv.VMs[i]
				f := flavors[vm.Flavor]
				if vm.Foreign || (vm.Hub != "" && vm.Hub != h.cfg.ID) {
					s.ForeignVMs++
					s.ForeignCores += f.VCPUs
					s.ForeignRAMMiB += f.RAMMiB
					continue
				}
				s.VMs++
				s.CanopyCores += f.VCPUs
				s.CanopyRAMMiB += f.RAMMiB
				m, inPool := in.demand.Machines[vm.Name]
				if inPool {
					s.Slots++
					if m.State == demand.MachineIdle {
						s.IdleSlotCores += f.VCPUs
					} else {
						s.IdleSlotCores += m.FreeCpus
					}
				}
				// Running jobs: the VM's own count, else the pool's.
				switch {
				case vm.Jobs != nil && vm.Jobs.Running > 0:
					s.RunningJobs[vm.Group] += vm.Jobs.Running
				case vm.Jobs == nil && inPool && m.RunningJobs > 0:
					s.RunningJobs[vm.Group] += m.RunningJobs
				}
				refs = append(refs, ref{name: vm.Name, cloud: name, vm: vm, cores: f.VCPUs, ram: f.RAMMiB})
			}
		}
		st.Sites = append(st.Sites, s)
	}
	for name, p := range in.pending {
		refs = append(refs, ref{name: name, cloud: p.Site, pend: name})
	}
	siteIndex := make(map[string]int, len(st.Sites))
	for i := range st.Sites {
		siteIndex[st.Sites[i].Name] = i
	}
	slices.SortFunc(refs, func(a, b ref) int { return strings.Compare(a.name, b.name) })
	st.VMs = make([]VMStatus, len(refs))
	for k, r := range refs {
		vs := &st.VMs[k]
		if r.vm == nil {
			p := in.pending[r.pend]
			*vs = VMStatus{Name: r.name, Site: p.Site, Group: p.Group, VMType: p.VMType, Flavor: p.Flavor,
				State: planner.VMBooting, CreatedAt: p.OrderedAt, Cores: p.Cpus, RAMMiB: p.MemoryMiB}
			if si := siteIndex[p.Site]; si >= 0 && si < len(st.Sites) && st.Sites[si].Name == p.Site {
				st.Sites[si].Counts[displayState(vs)]++
			}
			continue
		}
		vm := r.vm
		*vs = VMStatus{ID: vm.ID, Name: vm.Name, Site: r.cloud, Group: vm.Group, VMType: vm.VMType, Flavor: vm.Flavor,
			CreatedAt: vm.CreatedAt, Fault: vm.Fault, State: vmState(vm, in.lastStates), RetireState: vm.RetireState,
			RetireError: vm.RetireError, Evidence: in.lastEvid[vm.ID], Cores: r.cores, RAMMiB: r.ram}
		m, inPool := in.demand.Machines[vm.Name]
		switch {
		case vm.Jobs != nil:
			vs.RunningJobs = vm.Jobs.Running
		case inPool:
			vs.RunningJobs = m.RunningJobs
		}
		vs.JobsStarted = m.JobsStarted
		if _, ok := in.hold[vm.ID]; ok {
			vs.Held = true
			st.heldNames[vm.Name] = true
		}
		if o, ok := in.retire[vm.ID]; ok {
			vs.RetireDeadline = o.Deadline
		}
		if e, ok := in.errs[vm.ID]; ok && vs.Fault == "" {
			vs.Fault = e.Fault
		}
		st.byID[vm.ID] = k
		st.Sites[siteIndex[r.cloud]].Counts[displayState(vs)]++
	}
	st.Events = in.events
	st.Boots, st.BootFailures = in.boots, in.failures
	st.Groups, st.Unmatchable = groupRows(in), unmatchable(in.plan)
	return st
}

// groupRows lists every group configured, with jobs or in the last plan,
// sorted by name: a group without jobs is listed with zeros.
func groupRows(in statusInput) []GroupRow {
	by := map[string]*GroupRow{}
	get := func(name string) *GroupRow {
		if g := by[name]; g != nil {
			return g
		}
		g := &GroupRow{Name: name}
		by[name] = g
		return g
	}
	for name, g := range in.pol.Groups {
		get(name).Paused = g.Paused
	}
	for _, sh := range in.demand.Shapes {
		g := get(sh.Group)
		g.Idle += sh.Idle
		g.Running += sh.Running
	}
	for _, gs := range in.plan.Groups {
		g := get(gs.Name)
		g.Waiting, g.Shortfall = gs.Waiting, gs.Shortfall
	}
	out := make([]GroupRow, 0, len(by))
	for _, name := range slices.Sorted(maps.Keys(by)) {
		out = append(out, *by[name])
	}
	return out
}

// unmatchable lists the shapes whose idle jobs the plan leaves without a
// VM, and the planner's reason.
func unmatchable(p planner.Plan) []UnmatchableRow {
	var out []UnmatchableRow
	for _, ss := range p.Shapes {
		if ss.Waiting <= 0 {
			continue
		}
		why := ss.Reason
		if why == "" {
			why = "no cloud has room for it now"
		}
		out = append(out, UnmatchableRow{Group: ss.Shape.Group, VMType: ss.Shape.VMType, Cpus: ss.Shape.Cpus,
			MemoryMiB: ss.Shape.MemoryMiB, Count: ss.Waiting, Why: why})
	}
	return out
}

// vmState is a VM's state for people, from the last plan's snapshot when
// it has one, else from the inventory alone.
func vmState(vm *protocol.VM, last map[string]planner.VMState) planner.VMState {
	if s, ok := last[vm.ID]; ok {
		return s
	}
	switch vm.State {
	case protocol.VMBooting:
		return planner.VMBooting
	case protocol.VMError, protocol.VMStopped:
		return planner.VMError
	case protocol.VMDeleting:
		return planner.VMRetiring
	}
	if vm.Retiring {
		return planner.VMRetiring
	}
	if !vm.Ready {
		return planner.VMStarting
	}
	if vm.Jobs != nil && vm.Jobs.Running > 0 {
		return planner.VMBusy
	}
	return planner.VMIdle
}

// publish makes st what readers see, unless a status built from a later
// input is published already (statuses may be built off the loop, and an
// admin action publishes at once).
func (h *Hub) publish(st *Status) {
	h.publishMu.Lock()
	defer h.publishMu.Unlock()
	if cur := h.status.Load(); cur != nil && cur.seq > st.seq {
		return
	}
	h.status.Store(st)
	if h.con != nil {
		h.observe(st)
	}
}

// Status returns the last published status.
func (h *Hub) Status() *Status { return h.status.Load() }

// Sites returns every cloud's status, sorted by name.
func (h *Hub) Sites() []SiteStatus { return h.Status().Sites }

// VMs returns every Canopy VM the hub knows, including boots not yet listed.
func (h *Hub) VMs() []VMStatus { return h.Status().VMs }

// Demand returns the last demand and plan.
func (h *Hub) Demand() DemandStatus { return h.Status().Demand }

// VM returns one VM by server id.
func (st *Status) VM(id string) (VMStatus, bool) {
	i, ok := st.byID[id]
	if !ok {
		return VMStatus{}, false
	}
	return st.VMs[i], true
}

// HeldByName reports whether the VM with this server name is under manual
// control (for job sources that must leave it alone).
func (h *Hub) HeldByName(name string) bool {
	return h.Status().heldNames[name]
}

// encodeJSON is writeJSON's encoding, for answers encoded once.
func encodeJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return []byte("null\n")
	}
	return b.Bytes()
}
