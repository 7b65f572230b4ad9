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
	// after a retirement order, and "drained" once it has stopped.
	State string `json:"state"`
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
)
