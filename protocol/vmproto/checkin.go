package vmproto

import "time"

// PathCheckin is where a vmagent posts its check-ins on the agent's VM
// endpoint (Settings.AgentURL).
const PathCheckin = "/v1/checkin"

// CheckinRequest is what a vmagent sends its agent.
type CheckinRequest struct {
	// ServerID and Server identify the VM (from its metadata).
	ServerID string `json:"server_id"`
	Server   string `json:"server"`
	// State is "ready" while taking jobs, "retiring" while its jobs finish
	// after a retirement order, "drained" once HTCondor confirmed that no
	// job runs and no slot is claimed, and "failed" when the VM could not
	// stop taking jobs (Error says why; the VM is kept and retries).
	State string `json:"state"`
	// Jobs is the VM's own count of its startd's jobs, taken from HTCondor
	// on the VM; nil when the count failed or was not taken (unknown, which
	// is never the same as none).
	Jobs *JobCount `json:"jobs,omitempty"`
	// Error explains a failed retirement or a failed count, for the hub's
	// status page.
	Error string `json:"error,omitempty"`
}

// JobCount is what HTCondor on the VM says runs there.
type JobCount struct {
	// Running is how many jobs run; Claimed how many slots are claimed.
	Running int `json:"running"`
	Claimed int `json:"claimed"`
	// At is when the count was taken (the VM's clock).
	At time.Time `json:"at"`
}

// CheckinResponse tells a vmagent what to do.
type CheckinResponse struct {
	// Retire orders the VM to stop taking jobs and let its jobs finish.
	Retire bool `json:"retire"`
	// Deadline is how long the running jobs may still take (with Retire).
	Deadline time.Duration `json:"deadline"`
	// Reason says why the VM is retired, for its log.
	Reason string `json:"reason,omitempty"`
}

// Check-in states (CheckinRequest.State).
const (
	CheckinReady    = "ready"
	CheckinRetiring = "retiring"
	CheckinDrained  = "drained"
	CheckinFailed   = "failed"
)

// MaxCheckinError bounds CheckinRequest.Error.
const MaxCheckinError = 1024
