// Package planner decides what Canopy should do next: from a snapshot of
// demand (idle and running jobs by shape), clouds (flavors, limits, admin
// settings) and VMs (state and age), Plan returns the boots, retirements and
// deletions to carry out, each with a short reason a person can read.
//
// Decide is a pure function: no clock, no I/O, no randomness. The same
// snapshot always gives the same plan, so the policy can be tested by tables
// and properties and replayed by the simulator.
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
	// Clouds restricts the shape to these sites; empty means any.
	Clouds []string `json:"clouds,omitempty"`
	Idle   int      `json:"idle"`
	// Running jobs keep their VMs; they are not demand for new ones.
	Running int `json:"running"`
}

// Caps are admin-set hard maxima for one cloud; zero means no cap.
type Caps struct {
	Cores  int `json:"cores" yaml:"cores"`
	RAMMiB int `json:"ram_mib" yaml:"ram_mib"`
	VMs    int `json:"vms" yaml:"vms"`
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
	// Limits are the cloud's own absolute limits and usage.
	Limits protocol.Limits
	Caps   Caps
	// KeepAlive overrides Config.KeepAlive for this cloud when non-zero.
	KeepAlive time.Duration
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
}

// Config holds the policy's knobs.
type Config struct {
	// KeepAlive is how long an idle VM is kept before retirement.
	KeepAlive time.Duration
	// ErrorDelay is how long a VM may sit in error before deletion.
	ErrorDelay time.Duration
	// RetireDeadline is how long a retiring VM may take to finish its jobs.
	RetireDeadline time.Duration
	// MaxBootsPerCloud caps how many VMs one cloud may have booting at once.
	MaxBootsPerCloud int
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		KeepAlive:        10 * time.Minute,
		ErrorDelay:       5 * time.Minute,
		RetireDeadline:   24 * time.Hour,
		MaxBootsPerCloud: 20,
	}
}

// Snapshot is everything the planner looks at.
type Snapshot struct {
	Now    time.Time
	Shapes []Shape
	Clouds []Cloud
	VMs    []VM
	Config Config
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
}

// Retire asks a VM to finish its jobs and go.
type Retire struct {
	Site   string `json:"site"`
	VMID   string `json:"vm_id"`
	Reason string `json:"reason"`
}

// Delete removes a VM at once (it runs no jobs that matter).
type Delete struct {
	Site   string `json:"site"`
	VMID   string `json:"vm_id"`
	Reason string `json:"reason"`
}

// Note is a decision not to act, kept so people can see why.
type Note struct {
	Site   string `json:"site,omitempty"`
	Reason string `json:"reason"`
}

// Plan is the planner's output.
type Plan struct {
	Boots   []Boot   `json:"boots"`
	Retires []Retire `json:"retires"`
	Deletes []Delete `json:"deletes"`
	Notes   []Note   `json:"notes"`
}

// Empty reports whether the plan asks for nothing.
func (p Plan) Empty() bool {
	return len(p.Boots) == 0 && len(p.Retires) == 0 && len(p.Deletes) == 0
}
