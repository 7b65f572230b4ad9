package planner

import (
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// Shape is a set of identical jobs: the same group, VM type and resource
// request. Demand is counted by shape, never job by job.
type Shape struct {
	Group     string `json:"group"`
	VMType    string `json:"vm_type"`
	Cpus      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	DiskKiB   int64  `json:"disk_kib"`
	// Image is the image the VM type boots; empty means the cloud's default.
	Image string `json:"image,omitempty"`
	// Clouds restricts the shape to these sites; empty means any. An entry
	// may be an alias (Snapshot.Aliases) standing for several sites.
	Clouds []string `json:"clouds,omitempty"`
	Idle   int      `json:"idle"`
	// Running jobs keep their VMs; they are not demand for new ones.
	Running int `json:"running"`
	// KeepAlive is the jobs' own keep-alive request (a job attribute); it
	// overrides the group's and the cloud's for VMs booted for the shape.
	// Zero means the jobs ask for none.
	KeepAlive time.Duration `json:"keep_alive,omitempty"`
	// JobsPerVM asks for a flavor that holds this many jobs at once. Zero or
	// one means the smallest flavor that holds one job (which may still
	// hold several); the VM type's setting applies when zero.
	JobsPerVM int `json:"jobs_per_vm,omitempty"`
	// Flavor is the flavor the jobs ask for by name (+VMInstanceType):
	// their VMs are booted with it, on clouds that offer it and where it
	// holds a job. Empty means the smallest flavor that holds the jobs.
	// Idle VMs of any flavor still cover the shape's jobs if they fit, as
	// HTCondor would match them there.
	Flavor string `json:"flavor,omitempty"`
	// MaxLifetime is the jobs' own limit on how long their VMs live
	// (+VMMaxLifetime): a VM booted for the shape is retired, gracefully,
	// once this old (the smaller of it and the cloud's or config's
	// maximum lifetime applies). Zero means the jobs ask for none.
	MaxLifetime time.Duration `json:"max_lifetime,omitempty"`
	// MinHS06PerCore is the lowest HS06 rating per core the jobs accept
	// (the job attribute RequestHS06PerCore): only flavors rated at least
	// this (Cloud.HS06PerCore) are booted for them, and only VMs of such
	// flavors cover them. Zero means any.
	MinHS06PerCore float64 `json:"min_hs06_per_core,omitempty"`
	// Preemptible jobs accept preemptible capacity (the job attribute
	// Preemptible, or Group.Preemptible): they are placed there first.
	// Jobs that do not are never placed there.
	Preemptible bool `json:"preemptible,omitempty"`
}

// Caps are admin-set hard maxima for one cloud; zero means no cap.
type Caps struct {
	Cores  int `json:"cores" yaml:"cores"`
	RAMMiB int `json:"ram_mib" yaml:"ram_mib"`
	VMs    int `json:"vms" yaml:"vms"`
	// HS06 caps the HS06 rating of the VMs: cores × their flavor's
	// rating per core (Cloud.HS06PerCore).
	HS06 int `json:"hs06,omitempty" yaml:"hs06"`
}

// Usage is an amount of cores, memory and servers in use.
type Usage struct {
	Cores  int `json:"cores"`
	RAMMiB int `json:"ram_mib"`
	VMs    int `json:"vms"`
	// HS06 is the VMs' cores weighted by their flavors' HS06 rating per
	// core, rounded per VM.
	HS06 int `json:"hs06"`
}

// Cloud is one site's cloud as the planner sees it.
type Cloud struct {
	Site string
	// Priority orders clouds for a shape: lower first, then by site name.
	Priority int
	// Connected is false while the site's agent is not connected; such a
	// cloud gets no boots (its commands could not be delivered).
	Connected bool
	// Paused clouds get no new boots; their VMs stay.
	Paused  bool
	Flavors []protocol.Flavor
	// HS06PerCore rates the flavors' cores, by flavor name, in HS06 per
	// core; flavors not listed get HS06Default, and without it 1 (a core
	// is one unit). Ratings must be positive; others are taken as 1.
	HS06PerCore map[string]float64
	HS06Default float64
	// Preemptible clouds, and PreemptibleFlavors (by name) of any cloud,
	// may take their servers back at any time: only jobs that accept it
	// (Shape.Preemptible) are placed there, and they go there first.
	Preemptible        bool
	PreemptibleFlavors []string
	// Limits are the cloud's own absolute limits and usage.
	Limits protocol.Limits
	Caps   Caps
	// KeepAlive overrides Config.KeepAlive for this cloud when non-zero.
	KeepAlive time.Duration

	// Endpoint names the cloud API endpoint the site talks to. Clouds with
	// the same endpoint share one in-flight boot cap. Empty means the site
	// is its own endpoint.
	Endpoint string
	// MaxInFlight overrides Config.MaxBootsPerCloud for this cloud's
	// endpoint when positive (the smallest among the endpoint's clouds
	// applies). Zero means the config's value.
	MaxInFlight int
	// Disabled clouds are drained: no boots, VMs that run nothing are
	// deleted and the others retired. False means enabled.
	Disabled bool
	// SoftQuota is how much of the project Canopy may use, before foreign
	// usage is taken off; zero fields mean no soft quota on that resource.
	SoftQuota Caps
	// Foreign is what servers in the same project that Canopy did not boot
	// use; it is taken off SoftQuota. Zero means none.
	Foreign Usage
	// MaxLifetime overrides Config.MaxLifetime for VMs on this cloud when
	// positive. Zero means the config's value.
	MaxLifetime time.Duration
	// Unlisted counts servers the cloud said it created (a boot result)
	// that its server listing does not show; UnlistedSince is the earliest
	// such creation. A cloud with unlisted servers older than
	// Config.FreezeAfter is frozen. Zero means none.
	Unlisted      int
	UnlistedSince time.Time
	// OverQuotaSince is when the cloud was first reported over one of its
	// limits (Plan.Clouds[].OverQuota) without a break since; History
	// keeps it. Zero means not over, or not known to be: then no VM with
	// running jobs is retired for the cloud's quota.
	OverQuotaSince time.Time
	// ImagesNotReady are images this cloud should hold (the image matrix
	// wants them there) but does not yet, by image name, with why
	// (missing, still copying, refused by quota): VM types booting one of
	// them are not booted here. Nil means none.
	ImagesNotReady map[string]string
}

// Group is one owner group's settings. Groups without an entry get the
// zero Group: share 1, no caps, no restrictions.
type Group struct {
	Name string
	// Share weighs the group's turns when Config.Fairness is FairShare;
	// zero means 1.
	Share int
	// Caps bound the group's VMs over all clouds; zero fields mean no cap.
	// In a tree (Parent) they are the group's quota: they bound the sum of
	// the group's own VMs and its subgroups' (its subtree), and a group
	// that may borrow goes past them by what its siblings leave unused.
	Caps Caps
	// Parent names the group this one is a subgroup of; empty means a top
	// group. A parent that names no group, the group itself or one of its
	// own subgroups (a cycle) is ignored.
	Parent string
	// NoBorrow keeps a subgroup within its own quota (Caps). Without it a
	// subgroup may use what its siblings' quotas leave unused, as long as
	// the siblings with a quota together stay within the sum of their
	// quotas and every ancestor that does not borrow within its own. A top
	// group never borrows.
	NoBorrow bool
	// CloudCaps bound the group's VMs on one site; missing sites and zero
	// fields mean no cap.
	CloudCaps map[string]Caps
	// Clouds restricts the group to these sites (aliases allowed); empty
	// means any.
	Clouds []string
	// KeepAlive overrides the cloud's keep-alive for the group's VMs when
	// non-zero; a job's own keep-alive overrides it in turn.
	KeepAlive time.Duration
	// Paused groups get no new boots; their VMs stay.
	Paused bool
	// OverQuotaSince is like Cloud.OverQuotaSince, for the group's caps.
	OverQuotaSince time.Time
	// Preemptible makes every job of the group accept preemptible
	// capacity (Shape.Preemptible), whatever the job says.
	Preemptible bool
}

// VMType is a VM type's settings for one group, or for every group when
// Group is empty (a group's own entry wins).
type VMType struct {
	Group string
	Name  string
	// JobsPerVM is the default for Shape.JobsPerVM; zero means one.
	JobsPerVM int
}

// VMState is where a VM is in its life, from the planner's point of view.
type VMState string

// VM states.
const (
	// VMBooting: asked for, not yet running in the cloud.
	VMBooting VMState = "booting"
	// VMStarting: running in the cloud, not yet taking jobs.
	VMStarting VMState = "starting"
	// VMIdle: taking jobs, running none.
	VMIdle VMState = "idle"
	// VMBusy: running jobs.
	VMBusy VMState = "busy"
	// VMRetiring: told to retire, finishing its jobs.
	VMRetiring VMState = "retiring"
	// VMError: the cloud reports an error.
	VMError VMState = "error"
)

// Evidence says what the hub knows, now, about a VM's place in the pool:
// whether fresh evidence shows the VM outside the pool, inside it with its
// state and jobs known, or nothing reliable at all. The planner deletes or
// retires a VM for being idle or useless only on fresh evidence; an unknown
// VM goes only by a deadline an admin set.
type Evidence string

// Evidence values.
const (
	// EvidenceUnregistered: fresh evidence that the VM is up, booting or
	// broken and not in the pool, so no job runs there.
	EvidenceUnregistered Evidence = "unregistered"
	// EvidenceRegistered: fresh evidence that the VM is in the pool, with
	// its state and jobs known.
	EvidenceRegistered Evidence = "registered"
	// EvidenceUnknown: the source that would tell is failing, stale or
	// contradicts the VM's own check-ins. The VM keeps its last known
	// state: it counts as capacity (or not) by it, and is never idle to
	// retire.
	EvidenceUnknown Evidence = "unknown"
)

// VM is one worker VM.
type VM struct {
	ID        string
	Site      string
	Name      string
	Group     string
	VMType    string
	Flavor    string
	Cpus      int
	MemoryMiB int
	State     VMState
	// RunningJobs is how many jobs the VM runs now.
	RunningJobs int
	CreatedAt   time.Time
	// IdleSince is when the VM last became idle (or became ready, if it
	// never ran a job); zero while busy or not yet ready.
	IdleSince time.Time
	// Held VMs are under manual control: the planner never touches them.
	Held bool

	// Image is the image the VM was booted from; empty if unknown.
	Image string
	// ErrorSince is when the VM went into error; zero means use CreatedAt.
	ErrorSince time.Time
	// RegisteredAt is when the VM's startd first joined the pool. Zero
	// means unknown, and turns the job-alive rule off for the VM.
	RegisteredAt time.Time
	// JobsStarted counts jobs the VM has started since it registered; read
	// only when RegisteredAt is set.
	JobsStarted int
	// FreeCpus and FreeMemoryMiB are what a busy VM's startd still offers
	// (a partitionable slot's unclaimed part). Zero means nothing free, or
	// unknown: a busy VM then covers no idle job.
	FreeCpus      int
	FreeMemoryMiB int
	// KeepAlive is the keep-alive its jobs asked for (Shape.KeepAlive of
	// the shape it was booted for, or of its last job); zero means none.
	KeepAlive time.Duration
	// MaxLifetime is the maximum lifetime its jobs asked for
	// (Shape.MaxLifetime of the shape it was booted for); zero means none.
	MaxLifetime time.Duration
	// RetiringSince is when the VM was told to retire. Zero means unknown,
	// and turns the stuck-retirement rule off for the VM.
	RetiringSince time.Time

	// Evidence is what the hub knows of the VM now. Empty means the
	// State is taken as known: registered when idle or busy, unregistered
	// (for its whole age) when booting or starting.
	Evidence Evidence
	// Why says why the evidence is unknown, for people.
	Why string
	// Unregistered is how long fresh evidence has shown the VM up and not
	// registered with the pool: what the come-alive rule counts. Read
	// only when Evidence is set.
	Unregistered time.Duration
	// UnknownFor is how long the VM's evidence has been unknown without a
	// break; past Config.UnknownDeadline it is retired.
	UnknownFor time.Duration
}

// Failure is one boot that did not work: a failed boot command or a server
// that went into error while booting.
type Failure struct {
	Site string `json:"site"`
	// Image is set when the failure is the image's fault on this cloud
	// (ImageScoped); only that image then backs off there. Empty means the
	// whole cloud backs off.
	Image  string    `json:"image,omitempty"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// Snapshot is everything the planner looks at.
type Snapshot struct {
	Now    time.Time
	Shapes []Shape
	Clouds []Cloud
	VMs    []VM
	Config Config

	// Groups are per-group settings; groups without one get the defaults.
	Groups []Group
	// VMTypes are per-VM-type settings.
	VMTypes []VMType
	// Aliases name sets of sites that Shape.Clouds and Group.Clouds may use.
	Aliases map[string][]string
	// Failures are recent boot failures since the last good boot of their
	// cloud (or image on that cloud), as a FailureLog keeps them; the
	// planner derives backoff from them.
	Failures []Failure
	// Preemptions are recent VMs a preemptible cloud took back (deleted
	// without Canopy asking): not failures, but a cloud that preempts too
	// fast is backed off (Config.PreemptMax).
	Preemptions []Preemption
}

// Preemption is one VM a preemptible cloud took back.
type Preemption struct {
	Site string    `json:"site"`
	VMID string    `json:"vm_id"`
	At   time.Time `json:"at"`
}

// Boot asks for Count VMs of one flavor on one site.
type Boot struct {
	Site   string `json:"site"`
	Group  string `json:"group"`
	VMType string `json:"vm_type"`
	Flavor string `json:"flavor"`
	Image  string `json:"image,omitempty"`
	Count  int    `json:"count"`
	Reason string `json:"reason"`
	// KeepAlive is the jobs' keep-alive request, to record on the VMs
	// (VM.KeepAlive); zero means none.
	KeepAlive time.Duration `json:"keep_alive,omitempty"`
	// MaxLifetime is the jobs' maximum lifetime request, to record on the
	// VMs (VM.MaxLifetime); zero means none.
	MaxLifetime time.Duration `json:"max_lifetime,omitempty"`
	// Jobs is how many idle jobs the VMs are booted for.
	Jobs int `json:"jobs"`
	// HS06PerCore is the flavor's rating when the site rates its flavors
	// (Cloud.HS06PerCore, HS06Default), for the VMs to advertise; zero
	// when it does not.
	HS06PerCore float64 `json:"hs06_per_core,omitempty"`
}

// Rule names the lifecycle or admin rule behind a retirement or deletion.
type Rule string

// Rules.
const (
	RuleErrorDelay    Rule = "error-delay"
	RuleComeAlive     Rule = "come-alive"
	RuleJobAlive      Rule = "job-alive"
	RuleKeepAlive     Rule = "keep-alive"
	RuleMaxLifetime   Rule = "max-lifetime"
	RuleDisabled      Rule = "cloud-disabled"
	RuleOverQuota     Rule = "over-quota"
	RuleRetireTimeout Rule = "retire-timeout"
	// RuleUnknownDeadline retires a VM whose evidence has been unknown for
	// longer than Config.UnknownDeadline.
	RuleUnknownDeadline Rule = "unknown-deadline"
	// RuleReclaim retires an idle VM whose cores waiting jobs of another
	// group (or, for a preemptible VM, jobs that do not accept preemptible
	// capacity) need on a full cloud.
	RuleReclaim Rule = "reclaim"
)

// Retire asks a VM to finish its jobs and go.
type Retire struct {
	Site   string `json:"site"`
	VMID   string `json:"vm_id"`
	Reason string `json:"reason"`
	// Rule is the rule that retires the VM.
	Rule Rule `json:"rule"`
	// RunningJobs is how many jobs the VM ran when the plan was made; they
	// may run until Config.RetireDeadline.
	RunningJobs int `json:"running_jobs"`
}

// Delete removes a VM at once (it runs no jobs that matter).
type Delete struct {
	Site   string `json:"site"`
	VMID   string `json:"vm_id"`
	Reason string `json:"reason"`
	// Rule is the rule that deletes the VM.
	Rule Rule `json:"rule"`
	// Deadline is true when a deadline an admin set allows the deletion
	// (the retire deadline passed): the VM goes even if it reports
	// running jobs. False: the VM goes only if it runs none.
	Deadline bool `json:"deadline,omitempty"`
}

// Note is a decision not to act, kept so people can see why.
type Note struct {
	Site   string `json:"site,omitempty"`
	Reason string `json:"reason"`
	// Group is set for notes about one group's jobs.
	Group string `json:"group,omitempty"`
}

// CloudState says whether a cloud takes new boots, and if not, why.
type CloudState string

// Cloud states, in the order the planner checks them.
const (
	CloudOK           CloudState = "ok"
	CloudDisconnected CloudState = "disconnected"
	CloudDisabled     CloudState = "disabled"
	CloudPaused       CloudState = "paused"
	CloudFrozen       CloudState = "frozen"
	CloudBackoff      CloudState = "backoff"
)

// CloudStatus is the planner's view of one cloud after planning, for the
// status page, metrics and History.
type CloudStatus struct {
	Site  string     `json:"site"`
	State CloudState `json:"state"`
	// Until is when a backoff ends; zero otherwise.
	Until time.Time `json:"until,omitempty"`
	// Reason explains a state other than ok.
	Reason string `json:"reason,omitempty"`
	// OverQuota is true when Canopy's VMs there (not counting those
	// already retiring) exceed one of the cloud's limits.
	OverQuota bool `json:"over_quota"`
	// Used is what Canopy's VMs there use.
	Used Usage `json:"used"`
	// Room is what the effective limit still allows after this plan's
	// boots; negative when over. Unlimited resources show MaxInt.
	Room Usage `json:"room"`
	// InFlight counts servers booting or booted but not registered at the
	// cloud's endpoint, this plan's boots included; MaxInFlight is the cap
	// (zero: none).
	InFlight    int `json:"in_flight"`
	MaxInFlight int `json:"max_in_flight"`
	// Booted is how many VMs this plan boots there.
	Booted int `json:"booted"`
	// Preempted counts the VMs the cloud took back within
	// Config.PreemptWindow.
	Preempted int `json:"preempted,omitempty"`
}

// GroupStatus sums up one group's demand and what the plan does about it.
type GroupStatus struct {
	Name    string `json:"name"`
	Idle    int    `json:"idle"`
	Running int    `json:"running"`
	// Shortfall is how many idle jobs no starting or idle VM will take.
	Shortfall int `json:"shortfall"`
	// Booted is how many VMs this plan boots for the group, for BootedJobs
	// jobs; Waiting jobs are still without a VM after it.
	Booted     int `json:"booted"`
	BootedJobs int `json:"booted_jobs"`
	Waiting    int `json:"waiting"`
	// Throttled is true when the idle-VM throttle stops the group's boots.
	Throttled bool `json:"throttled"`
	OverQuota bool `json:"over_quota"`
}

// ShapeStatus is what the plan does about one shape.
type ShapeStatus struct {
	Shape Shape `json:"shape"`
	// Covered idle jobs will run on starting or idle VMs; Shortfall is the
	// rest.
	Covered   int `json:"covered"`
	Shortfall int `json:"shortfall"`
	// BootedVMs is how many VMs this plan boots for the shape; they hold
	// BootedJobs of its jobs.
	BootedVMs  int `json:"booted_vms"`
	BootedJobs int `json:"booted_jobs"`
	// Waiting is how many idle jobs are left without a VM, and Reason why.
	Waiting int    `json:"waiting"`
	Reason  string `json:"reason,omitempty"`
}

// Plan is the planner's output.
type Plan struct {
	Boots   []Boot   `json:"boots"`
	Retires []Retire `json:"retires"`
	Deletes []Delete `json:"deletes"`
	Notes   []Note   `json:"notes"`

	// Clouds, Groups and Shapes report the planner's view, sorted by site,
	// group name and shape.
	Clouds []CloudStatus `json:"clouds"`
	Groups []GroupStatus `json:"groups"`
	Shapes []ShapeStatus `json:"shapes"`
}

// Empty reports whether the plan asks for nothing.
func (p Plan) Empty() bool {
	return len(p.Boots) == 0 && len(p.Retires) == 0 && len(p.Deletes) == 0
}
