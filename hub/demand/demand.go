// Package demand holds what a job source tells the hub: idle and running
// jobs grouped by shape, and what the batch pool knows of each worker VM.
// Sources (the trace simulator, HTCondor) produce it; the hub's control
// loop turns it, with the agents' inventories, into a planner snapshot.
package demand

import (
	"time"

	"github.com/canopy-grid/canopy/hub/planner"
)

// MachineState is a worker's state in the batch pool.
type MachineState string

// Machine states.
const (
	// MachineIdle: registered, running no job.
	MachineIdle MachineState = "idle"
	// MachineBusy: running at least one job.
	MachineBusy MachineState = "busy"
	// MachineDraining: accepting no new jobs (peaceful shutdown or drain).
	MachineDraining MachineState = "draining"
)

// Machine is one worker VM as the batch pool sees it, keyed by VM name.
type Machine struct {
	VMName      string       `json:"vm_name"`
	State       MachineState `json:"state"`
	RunningJobs int          `json:"running_jobs"`
	// IdleSince is when the machine last ran a job or, if it never did,
	// when it registered. Zero while busy.
	IdleSince time.Time `json:"idle_since"`
	// JobsStarted counts jobs the machine has started, to tell a VM that
	// never ran a job from one that went idle.
	JobsStarted int `json:"jobs_started"`
	// FreeCpus and FreeMemoryMiB are what the machine's partitionable slot
	// still offers while it runs jobs (room for more); zero when none or
	// unknown.
	FreeCpus      int `json:"free_cpus,omitempty"`
	FreeMemoryMiB int `json:"free_memory_mib,omitempty"`
}

// ScheddState says how one schedd's queue was read in a poll.
type ScheddState struct {
	// Name is the schedd ("" for the default one).
	Name string `json:"name"`
	// Fresh is true when this poll read the queue; false when the schedd
	// failed and its last good demand (taken at TakenAt) stands in.
	Fresh   bool      `json:"fresh"`
	TakenAt time.Time `json:"taken_at"`
	Err     string    `json:"error,omitempty"`
}

// Demand is one poll's result.
type Demand struct {
	Shapes []planner.Shape
	// Machines is the pool's view of Canopy's VMs, by VM name. It means
	// something only when PoolErr is empty.
	Machines map[string]Machine
	// PoolErr is non-empty when the pool's view of the VMs could not be
	// read in this poll (the collector query failed): Machines is then
	// unknown, not empty, and nothing may be retired on its account.
	PoolErr string
	// Schedds says how each schedd's queue was read; empty for sources
	// without schedds.
	Schedds []ScheddState
	// Finished counts jobs completed since the source started (for the
	// status page and metrics; zero when the source cannot tell).
	Finished int
	TakenAt  time.Time
}

// Fresh reports whether every schedd's queue was read in this poll. A
// poll that is not fresh must not be the basis of a retirement: a VM may
// look idle only because the queue that would feed it could not be read
// (its last good demand may stand in for a while, or be gone).
func (d Demand) Fresh() bool {
	for _, s := range d.Schedds {
		if !s.Fresh {
			return false
		}
	}
	return true
}

// Stale names the schedds whose queue this poll could not read.
func (d Demand) Stale() []string {
	var out []string
	for _, s := range d.Schedds {
		if !s.Fresh {
			out = append(out, s.Name)
		}
	}
	return out
}

// PoolVM is what the hub tells a source about one VM it knows; a simulated
// pool uses it to decide which VMs can run jobs. A real pool ignores it.
type PoolVM struct {
	Name      string
	Site      string
	Group     string
	VMType    string
	Cpus      int
	MemoryMiB int
	// Ready is true once the VM's vmagent has contextualized it (its startd
	// would have joined the pool).
	Ready bool
	// Retiring VMs accept no new jobs.
	Retiring bool
}
