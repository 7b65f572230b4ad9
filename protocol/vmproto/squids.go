package vmproto

import "time"

// PathSquids is where the agent's VM endpoint serves its squid list
// (GET PathSquids?kind=cvmfs&n=5).
const PathSquids = "/v1/squids"

// SquidProxy is one squid as the agent serves it, best first.
type SquidProxy struct {
	// Name is the squid's name in the hub's registry, if known.
	Name string `json:"name,omitempty"`
	// Address is host:port (IPv6 hosts in brackets).
	Address string `json:"address"`
	// URL is http://Address, as written in CVMFS_HTTP_PROXY.
	URL string `json:"url"`
	// Cost, DistanceKm and Load are the hub's ranking figures (zero for
	// fallback entries).
	Cost       float64 `json:"cost,omitempty"`
	DistanceKm float64 `json:"distance_km,omitempty"`
	Load       float64 `json:"load,omitempty"`
}

// Sources of a squid list (SquidList.Source).
const (
	SquidSourceHub       = "hub"
	SquidSourcePush      = "hub-push"
	SquidSourceStateFile = "state-file"
	SquidSourceFallback  = "fallback"
)

// SquidList is the answer to GET PathSquids.
type SquidList struct {
	// Kind is the upstream kind the squids serve (cvmfs, frontier).
	Kind string `json:"kind"`
	// Proxies are the squids, best first; never null.
	Proxies []SquidProxy `json:"proxies"`
	// Source says where the list came from (hub, hub-push, state-file,
	// fallback).
	Source string `json:"source"`
	// FetchedAt is when the hub gave this list (zero for fallback).
	FetchedAt time.Time `json:"fetched_at,omitzero"`
	// AgeSeconds is how old the list is.
	AgeSeconds float64 `json:"age_seconds"`
	// Stale is set when the hub has not confirmed the list for StaleAfter.
	Stale bool `json:"stale"`
	// LastError is the last failure to refresh it, if any since.
	LastError string `json:"last_error,omitempty"`
}
