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
}

// Demand is one poll's result.
type Demand struct {
	Shapes   []planner.Shape
	Machines map[string]Machine
	// Finished counts jobs completed since the source started (for the
	// status page and metrics; zero when the source cannot tell).
	Finished int
	TakenAt  time.Time
	// Stale names the parts of the source that could not be read fresh
	// for this poll (for HTCondor: schedds whose queue failed). Their last
	// good demand may still be in Shapes, for a while, or be gone. Nil
	// when everything is fresh. A poll that is not Fresh must not be the
	// basis of a retirement: a VM may be idle only because the queue that
	// would feed it could not be read.
	Stale []string
}

// Fresh reports whether every part of the source was read for this poll.
func (d Demand) Fresh() bool { return len(d.Stale) == 0 }

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
