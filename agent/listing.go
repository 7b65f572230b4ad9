package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
)

// listing is the agent's one recent listing of its cloud's servers, shared
// by inventories, boots, retirements, deletions and VM check-ins: with
// hundreds of VMs checking in and commands arriving in bursts, listing the
// cloud for each would load its API. A caller says how old a listing it
// accepts; at most one listing runs at a time, and callers that waited for
// it use its result.
type listing struct {
	list func(context.Context) ([]driver.Server, error)

	listMu sync.Mutex // held while listing

	mu      sync.Mutex
	servers []driver.Server
	byID    map[string]int
	byName  map[string]int
	at      time.Time
	// stale is set when the agent changed the cloud (booted or deleted):
	// the next caller lists again whatever its age limit.
	stale bool
}

// listed is one listing: read only.
type listed struct {
	servers []driver.Server
	byID    map[string]int
	byName  map[string]int
	at      time.Time
}

// server finds a server by id.
func (l listed) server(id string) (driver.Server, bool) {
	i, ok := l.byID[id]
	if !ok {
		return driver.Server{}, false
	}
	return l.servers[i], true
}

// named finds a server by name.
func (l listed) named(name string) (driver.Server, bool) {
	i, ok := l.byName[name]
	if !ok {
		return driver.Server{}, false
	}
	return l.servers[i], true
}

func (l *listing) current() listed {
	l.mu.Lock()
	defer l.mu.Unlock()
	return listed{servers: l.servers, byID: l.byID, byName: l.byName, at: l.at}
}

// get returns a listing taken at most maxAge ago (zero: a new one), listing
// the cloud when the last one is older or stale.
func (l *listing) get(ctx context.Context, maxAge time.Duration) (listed, error) {
	askedAt := time.Now()
	l.mu.Lock()
	fresh := !l.stale && !l.at.IsZero() && time.Since(l.at) <= maxAge
	l.mu.Unlock()
	if fresh && maxAge > 0 {
		return l.current(), nil
	}
	l.listMu.Lock()
	defer l.listMu.Unlock()
	l.mu.Lock()
	doneMeanwhile := !l.stale && l.at.After(askedAt)
	l.mu.Unlock()
	if doneMeanwhile {
		return l.current(), nil // another caller listed while this one waited
	}
	start := time.Now()
	servers, err := l.list(ctx)
	if err != nil {
		return listed{}, fmt.Errorf("list servers: %w", err)
	}
	byID := make(map[string]int, len(servers))
	byName := make(map[string]int, len(servers))
	for i, s := range servers {
		byID[s.ID] = i
		byName[s.Name] = i
	}
	l.mu.Lock()
	l.servers, l.byID, l.byName, l.at, l.stale = servers, byID, byName, start, false
	l.mu.Unlock()
	return l.current(), nil
}

// invalidate makes the next get list again (the agent changed the cloud).
func (l *listing) invalidate() {
	l.mu.Lock()
	l.stale = true
	l.mu.Unlock()
}

// Listing ages the agent accepts: inventories and commands take a listing
// at most listingMaxAge old; a check-in whose server is missing from the
// current listing lists again, at most every checkinRelistMin.
const (
	listingMaxAge    = time.Second
	checkinCacheTTL  = 5 * time.Second
	checkinRelistMin = time.Second
)

// lookupServer finds a server by id for a check-in. A listing is reused
// while younger than checkinCacheTTL; a server it lacks (a VM that just
// booted) makes it list again, at most every checkinRelistMin: a check-in
// arriving sooner waits for that listing rather than being refused. Only
// holders of a valid token get here.
func (a *Agent) lookupServer(ctx context.Context, id string) (driver.Server, bool, error) {
	cur := a.listing.current()
	if s, ok := cur.server(id); ok && time.Since(cur.at) < checkinCacheTTL {
		return s, !a.vms.wasDeleted(id), nil
	}
	if wait := checkinRelistMin - time.Since(cur.at); wait > 0 && !cur.at.IsZero() {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return driver.Server{}, false, ctx.Err()
		case <-t.C:
		}
	}
	l, err := a.listing.get(ctx, checkinRelistMin)
	if err != nil {
		return driver.Server{}, false, err
	}
	s, ok := l.server(id)
	return s, ok && !a.vms.wasDeleted(id), nil
}
