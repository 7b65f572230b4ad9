// Package vmproto is the contract between a site agent and the vmagents in
// its VMs, declared once for both sides: the settings a VM receives in its
// user-data at boot (Settings, rendered by the agent with RenderUserData and
// read by the vmagent with ParseUserData), the check-in a vmagent posts to
// its agent (CheckinRequest, CheckinResponse), the enrollment that gives a
// VM its secrets (EnrollRequest, EnrollResponse), the squid list the agent
// serves its VMs (SquidList), and how a VM trusts its agent (ClientTLS).
//
// The agent's VM endpoint serves, over TLS 1.3 only, with a certificate
// from the hub's CA for the site (ServerTLS):
//
//	POST PathEnroll    an EnrollRequest (bearer: the single-use enrollment token from user-data), answered with an EnrollResponse
//	POST PathCheckin   a CheckinRequest (bearer: the VM's check-in token), answered with a CheckinResponse
//	GET  PathSquids    ?kind=cvmfs&n=5, answered with a SquidList
package vmproto
