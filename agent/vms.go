package agent

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/canopy-grid/canopy/agent/vmtoken"
)

// vmBook is what the agent learns from its VMs' check-ins and the hub's
// retirement orders, keyed by server id.
type vmBook struct {
	mu   sync.Mutex
	byID map[string]*vmStatus
}

type vmStatus struct {
	name     string
	ready    bool
	readyAt  time.Time
	lastSeen time.Time
	retireBy time.Time // zero unless a retirement was ordered
	reason   string
	drained  time.Time // when the VM reported it had drained
}

func newVMBook() *vmBook { return &vmBook{byID: map[string]*vmStatus{}} }

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

func (b *vmBook) forget(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.byID, id)
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
		if !s.drained.IsZero() || now.After(s.retireBy.Add(grace)) {
			out = append(out, id)
		}
	}
	return out
}

// CheckinRequest is what a vmagent sends its agent.
type CheckinRequest struct {
	// ServerID and Server identify the VM (from its metadata).
	ServerID string `json:"server_id"`
	Server   string `json:"server"`
	// State is "ready" while taking jobs, "drained" once it has stopped
	// after a retirement order.
	State string `json:"state"`
}

// CheckinResponse tells a vmagent what to do.
type CheckinResponse struct {
	Retire   bool          `json:"retire"`
	Deadline time.Duration `json:"deadline"`
	Reason   string        `json:"reason,omitempty"`
}

// Check-in states.
const (
	CheckinReady   = "ready"
	CheckinDrained = "drained"
)

// maxCheckinBody bounds a check-in request.
const maxCheckinBody = 8 << 10

func (a *Agent) vmHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/checkin", a.handleCheckin)
	return mux
}

func (a *Agent) handleCheckin(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		a.log.WithField("remote", r.RemoteAddr).Warn("VM check-in refused: no bearer token")
		http.Error(w, "missing bearer token", http.StatusUnauthorized)
		return
	}
	var req CheckinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCheckinBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "bad check-in body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.State != CheckinReady && req.State != CheckinDrained {
		http.Error(w, "state must be ready or drained", http.StatusBadRequest)
		return
	}
	log := a.log.WithFields(map[string]any{"vm": req.Server, "vm_id": req.ServerID, "remote": r.RemoteAddr})
	now := a.now()
	if _, err := a.signer.Verify(tok, a.cfg.Site, req.Server, now); err != nil {
		log.WithField("reason", err.Error()).Warn("VM check-in refused")
		http.Error(w, "token refused: "+reasonOf(err), http.StatusForbidden)
		return
	}
	// The server must exist with that name and id: a token replayed after
	// its server was deleted is refused.
	servers, err := a.driver.Servers(r.Context())
	if err != nil {
		http.Error(w, "cannot list servers", http.StatusServiceUnavailable)
		return
	}
	known := false
	for _, s := range servers {
		if s.ID == req.ServerID && s.Name == req.Server {
			known = true
			break
		}
	}
	if !known {
		log.WithField("reason", vmtoken.ReasonUnknownVM).Warn("VM check-in refused")
		http.Error(w, "token refused: "+string(vmtoken.ReasonUnknownVM), http.StatusForbidden)
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
	if req.State == CheckinDrained && s.drained.IsZero() && !s.retireBy.IsZero() {
		s.drained = now
	}
	resp := CheckinResponse{Retire: !s.retireBy.IsZero(), Reason: s.reason}
	if resp.Retire {
		resp.Deadline = max(0, s.retireBy.Sub(now))
	}
	a.vms.mu.Unlock()
	if first {
		log.Info("VM ready")
		a.markChanged()
	}
	if req.State == CheckinDrained {
		log.Info("VM drained")
		a.markChanged()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func reasonOf(err error) string {
	var te *vmtoken.Error
	if errors.As(err, &te) {
		return string(te.Reason)
	}
	return "invalid"
}
