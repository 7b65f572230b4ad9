package vmproto

import "time"

// PathEnroll is where a vmagent enrolls at boot on the agent's VM
// endpoint (Settings.AgentURL), once.
const PathEnroll = "/v1/enroll"

// EnrollRequest is what a vmagent sends to enroll (bearer: the
// single-use enrollment token from its user-data).
type EnrollRequest struct {
	// ServerID and Server identify the VM (from its metadata).
	ServerID string `json:"server_id"`
	Server   string `json:"server"`
}

// EnrollResponse carries the VM's secrets, which never travel in
// user-data.
type EnrollResponse struct {
	// Token is the VM's check-in token (bearer for PathCheckin), valid
	// until TokenExpires; check-ins renew it.
	Token        string    `json:"token"`
	TokenExpires time.Time `json:"token_expires"`
	// Condor is the startd's HTCondor IDTOKEN; nil when the site's agent
	// mints none (no HTCondor signing key configured).
	Condor *CondorToken `json:"condor,omitempty"`
	// GossipKey is the site gossip pool's encryption key (base64); empty
	// when the settings name no gossip pool.
	GossipKey string `json:"gossip_key,omitempty"`
}

// CondorToken is an HTCondor IDTOKEN for the VM's startd and master,
// written to its token directory (mode 0600).
type CondorToken struct {
	// Token is the IDTOKEN (a compact JWT).
	Token string `json:"token"`
	// Expires is when HTCondor stops accepting it.
	Expires time.Time `json:"expires"`
}
