// Package vmproto is the contract between a site agent and the vmagents in
// its VMs, declared once for both sides: the settings a VM receives in its
// user-data at boot (Settings, rendered by the agent with RenderUserData and
// read by the vmagent with ParseUserData), the check-in a vmagent posts to
// its agent (CheckinRequest, CheckinResponse) and the squid list the agent
// serves its VMs (SquidList).
//
// The agent's VM endpoint serves:
//
//	POST PathCheckin   a CheckinRequest (bearer: the VM's token), answered with a CheckinResponse
//	GET  PathSquids    ?kind=cvmfs&n=5, answered with a SquidList
package vmproto
