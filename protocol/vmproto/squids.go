package vmproto

import (
	"fmt"
	"math"
	"time"
)

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
	// fallback entries; DistanceKm -1 when the hub could not tell).
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

// Limits on a squid list as the agent serves it.
const (
	// MaxSquidProxies bounds the proxies in one SquidList.
	MaxSquidProxies = 1000
	// maxSquidField bounds a proxy's name, address and URL.
	maxSquidField = 300
)

// Validate checks a SquidProxy: an address, fields within bounds, and
// ranking figures that are finite and not negative (NaN would poison any
// ordering by them; DistanceKm may be -1, unknown). The address's host:port syntax is checked where it is
// turned into configuration (agent/squidcache, vmagent/proxy).
func (p SquidProxy) Validate() error {
	if p.Address == "" || len(p.Address) > maxSquidField {
		return fmt.Errorf("squid address of %d bytes, want 1 to %d", len(p.Address), maxSquidField)
	}
	if len(p.Name) > maxSquidField || len(p.URL) > maxSquidField {
		return fmt.Errorf("squid %.64q: name or URL over %d bytes", p.Address, maxSquidField)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"cost", p.Cost}, {"distance_km", p.DistanceKm}, {"load", p.Load}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 && !(f.name == "distance_km" && f.v == -1) {
			return fmt.Errorf("squid %.64q: %s is %v, want a finite number >= 0", p.Address, f.name, f.v)
		}
	}
	return nil
}

// Validate checks a SquidList: at most MaxSquidProxies proxies, each
// valid, and a finite, non-negative age.
func (l SquidList) Validate() error {
	if len(l.Proxies) > MaxSquidProxies {
		return fmt.Errorf("squid list has %d proxies, limit %d", len(l.Proxies), MaxSquidProxies)
	}
	if math.IsNaN(l.AgeSeconds) || math.IsInf(l.AgeSeconds, 0) || l.AgeSeconds < 0 {
		return fmt.Errorf("squid list age_seconds is %v, want a finite number >= 0", l.AgeSeconds)
	}
	for i, p := range l.Proxies {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("squid list proxy %d: %w", i, err)
		}
	}
	return nil
}
