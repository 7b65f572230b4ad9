package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// vmBook is what the agent learns from its VMs' check-ins and the hub's
// retirement orders, keyed by server id.
type vmBook struct {
	mu   sync.Mutex
	byID map[string]*vmStatus
	// deleted remembers servers this agent deleted, so that a token
	// replayed after the deletion is refused at once, whatever a cached
	// server listing says.
	deleted map[string]time.Time

	// servers caches the cloud's server listing for check-ins: with
	// hundreds of VMs checking in, listing servers at each would load the
	// cloud's API. See lookupServer.
	listMu   sync.Mutex // held while listing
	servers  map[string]driver.Server
	listedAt time.Time
}

type vmStatus struct {
	name     string
	ready    bool
	readyAt  time.Time
	lastSeen time.Time
	retireBy time.Time // zero unless a retirement was ordered
	reason   string
	drained  time.Time // when the VM reported it had drained
	// unreachable is when the gossip pool declared the VM failed; zero
	// while it answers.
	unreachable time.Time
}

func newVMBook() *vmBook {
	return &vmBook{byID: map[string]*vmStatus{}, deleted: map[string]time.Time{}}
}

func (b *vmBook) entry(id string) *vmStatus {
	s, ok := b.byID[id]
	if !ok {
		s = &vmStatus{}
		b.byID[id] = s
	}
	return s
}

func (b *vmBook) get(id string) (vmStatus, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.byID[id]
	if !ok {
		return vmStatus{}, false
	}
	return *s, true
}

func (b *vmBook) retire(id string, by time.Time, reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.entry(id)
	if s.retireBy.IsZero() || by.Before(s.retireBy) {
		s.retireBy, s.reason = by, reason
	}
}

// forget drops a deleted server and remembers that it was deleted.
func (b *vmBook) forget(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.byID, id)
	delete(b.servers, id)
	now := time.Now()
	b.deleted[id] = now
	if len(b.deleted) > maxDeleted {
		// Drop the expired, then any others until under the bound.
		for k, at := range b.deleted {
			if k != id && (now.Sub(at) > deletedMemory || len(b.deleted) > maxDeleted) {
				delete(b.deleted, k)
			}
		}
	}
}

// How long and how many deleted servers are remembered: long enough for a
// server listing to stop showing them.
const (
	deletedMemory = time.Hour
	maxDeleted    = 4096
)

func (b *vmBook) wasDeleted(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.deleted[id]
	return ok
}

// prune drops entries for servers the cloud no longer lists.
func (b *vmBook) prune(live map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id := range b.byID {
		if !live[id] {
			delete(b.byID, id)
		}
	}
}

// due returns retiring VMs that drained more than a moment ago, or whose
// deadline plus grace has passed.
func (b *vmBook) due(now time.Time, grace time.Duration) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for id, s := range b.byID {
		if s.retireBy.IsZero() {
			continue
		}
		// A retiring VM that drained, fell silent in the pool, or missed
		// its deadline is deleted.
		if !s.drained.IsZero() || !s.unreachable.IsZero() || now.After(s.retireBy.Add(grace)) {
			out = append(out, id)
		}
	}
	return out
}

// maxCheckinBody bounds a check-in request.
const maxCheckinBody = 8 << 10

// Server listing cache for check-ins (see lookupServer).
const (
	serverCacheTTL  = 5 * time.Second
	serverRelistMin = time.Second
)

// mintVMToken mints the identity token for a server about to be booted.
// The returned id goes into the server's metadata under driver.MetaTokenID.
func (a *Agent) mintVMToken(server, group string) (tok, id string, err error) {
	id, err = vmtoken.NewNonce()
	if err != nil {
		return "", "", err
	}
	tok, err = a.signer.Mint(vmtoken.Claims{Site: a.cfg.Site, Server: server, Group: group,
		Expires: a.now().Add(a.cfg.TokenTTL), Nonce: id})
	if err != nil {
		return "", "", err
	}
	return tok, id, nil
}

func (a *Agent) vmHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+vmproto.PathCheckin, a.handleCheckin)
	if a.squids != nil {
		mux.Handle("GET "+vmproto.PathSquids, a.squids.Handler())
	}
	return mux
}

// refuse answers a refused check-in and logs why, once, at the edge.
func (a *Agent) refuse(w http.ResponseWriter, log *logrus.Entry, status int, reason vmtoken.Reason, detail string) {
	e := log.WithField("reason", string(reason))
	if detail != "" {
		e = e.WithField("detail", detail)
	}
	e.Warn("VM check-in refused")
	http.Error(w, "check-in refused: "+string(reason), status)
}

func (a *Agent) handleCheckin(w http.ResponseWriter, r *http.Request) {
	log := a.log.WithField("remote", r.RemoteAddr)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		log.WithField("reason", "no bearer token").Warn("VM check-in refused")
		http.Error(w, "missing bearer token", http.StatusUnauthorized)
		return
	}
	var req vmproto.CheckinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCheckinBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		log.WithField("reason", "bad body").WithError(err).Warn("VM check-in refused")
		http.Error(w, "bad check-in body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.State != vmproto.CheckinReady && req.State != vmproto.CheckinRetiring && req.State != vmproto.CheckinDrained {
		log.WithField("reason", "bad state").Warn("VM check-in refused")
		http.Error(w, "state must be ready, retiring or drained", http.StatusBadRequest)
		return
	}
	log = log.WithFields(logrus.Fields{"vm": req.Server, "vm_id": req.ServerID})
	now := a.now()
	claims, err := a.signer.Verify(tok, a.cfg.Site, req.Server, now)
	if err != nil {
		var te *vmtoken.Error
		if errors.As(err, &te) {
			a.refuse(w, log, http.StatusForbidden, te.Reason, te.Detail)
		} else {
			a.refuse(w, log, http.StatusForbidden, vmtoken.ReasonMalformed, err.Error())
		}
		return
	}
	// The server must exist, under that name and id, booted for the
	// token's group with this very token: a token replayed after its
	// server was deleted, or by a later server of the same name, is refused.
	if a.vms.wasDeleted(req.ServerID) {
		a.refuse(w, log, http.StatusForbidden, vmtoken.ReasonUnknownVM, "deleted by this agent")
		return
	}
	srv, found, err := a.lookupServer(r.Context(), req.ServerID)
	if err != nil {
		log.WithError(err).Warn("VM check-in: cannot list servers")
		http.Error(w, "cannot list servers", http.StatusServiceUnavailable)
		return
	}
	switch {
	case !found || srv.Status == driver.StatusDeleted:
		a.refuse(w, log, http.StatusForbidden, vmtoken.ReasonUnknownVM, "")
		return
	case srv.Name != req.Server:
		a.refuse(w, log, http.StatusForbidden, vmtoken.ReasonWrongServer,
			fmt.Sprintf("server %s is named %q, not %q", req.ServerID, srv.Name, req.Server))
		return
	case srv.Metadata[driver.MetaGroup] != claims.Group:
		a.refuse(w, log, http.StatusForbidden, vmtoken.ReasonWrongGroup,
			fmt.Sprintf("minted for %q, server booted for %q", claims.Group, srv.Metadata[driver.MetaGroup]))
		return
	case srv.Metadata[driver.MetaTokenID] != claims.Nonce:
		detail := "the server carries another token id"
		if srv.Metadata[driver.MetaTokenID] == "" {
			detail = "the server carries no token id"
		}
		a.refuse(w, log, http.StatusForbidden, vmtoken.ReasonReplayed, detail)
		return
	}

	a.vms.mu.Lock()
	s := a.vms.entry(req.ServerID)
	s.name = req.Server
	first := !s.ready
	s.lastSeen = now
	if !s.ready {
		s.ready, s.readyAt = true, now
	}
	drained := false
	if req.State == vmproto.CheckinDrained && s.drained.IsZero() && !s.retireBy.IsZero() {
		s.drained = now
		drained = true
	}
	resp := vmproto.CheckinResponse{Retire: !s.retireBy.IsZero(), Reason: s.reason}
	if resp.Retire {
		resp.Deadline = max(0, s.retireBy.Sub(now))
	}
	a.vms.mu.Unlock()
	if first {
		log.Info("VM ready")
		a.markChanged()
	}
	if drained {
		log.Info("VM drained")
		a.markChanged()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// lookupServer finds a server by id in a recent listing of the cloud's
// servers. A listing is reused while fresh; a server it lacks (a VM that
// just booted) makes it list again, at most every serverRelistMin: a
// check-in arriving sooner waits for that listing rather than being
// refused. Only holders of a valid token get here.
func (a *Agent) lookupServer(ctx context.Context, id string) (driver.Server, bool, error) {
	b := a.vms
	b.mu.Lock()
	srv, ok := b.servers[id]
	listedAt := b.listedAt
	b.mu.Unlock()
	if ok && time.Since(listedAt) < serverCacheTTL {
		return srv, true, nil
	}
	missAt := time.Now()
	b.listMu.Lock()
	defer b.listMu.Unlock()
	b.mu.Lock()
	srv, ok = b.servers[id]
	listedAt = b.listedAt
	b.mu.Unlock()
	if listedAt.After(missAt) {
		return srv, ok, nil // listed by another check-in while this one waited
	}
	if wait := serverRelistMin - time.Since(listedAt); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return driver.Server{}, false, ctx.Err()
		case <-t.C:
		}
	}
	list, err := a.driver.Servers(ctx)
	if err != nil {
		return driver.Server{}, false, fmt.Errorf("list servers: %w", err)
	}
	m := make(map[string]driver.Server, len(list))
	for _, s := range list {
		m[s.ID] = s
	}
	b.mu.Lock()
	for id := range b.deleted {
		delete(m, id)
	}
	b.servers, b.listedAt = m, time.Now()
	srv, ok = m[id]
	b.mu.Unlock()
	return srv, ok, nil
}
