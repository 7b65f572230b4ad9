package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/agentdb"
	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// vmBook is what the agent learns from its VMs' check-ins and the hub's
// retirement orders, keyed by server id. It is the agent's durable intent:
// every change marks the entry dirty, and flush (persist.go) writes dirty
// entries to the state file in one transaction.
type vmBook struct {
	mu   sync.Mutex
	byID map[string]*vmStatus
	// deleted remembers servers this agent deleted, so that a token
	// replayed after the deletion is refused at once, whatever a cached
	// server listing says, also after a restart.
	deleted map[string]time.Time
	// dirty and dirtyDeleted name entries changed since the last flush.
	dirty        map[string]struct{}
	dirtyDeleted map[string]struct{}
}

// vmStatus is one VM's entry in the book.
type vmStatus struct {
	name     string
	ready    bool
	readyAt  time.Time
	lastSeen time.Time
	// jobs is the VM's last job count, nil when it never sent one;
	// jobsSeen is the agent's time of the check-in that carried it.
	jobs     *protocol.VMJobs
	jobsSeen time.Time
	// retireBy is zero unless a retirement was ordered.
	retireBy    time.Time
	reason      string
	orderedAt   time.Time
	retireState string // protocol.Retire*; "" without an order
	retireError string
	drained     time.Time // when the VM reported it had drained
	// unreachable is when the gossip pool declared the VM failed; zero
	// while it answers.
	unreachable time.Time
	// condorMinted is when the agent last minted this VM an HTCondor
	// token (not persisted): a VM that keeps reporting an old expiry (an
	// answer lost, an old vmagent) gets another only after a while.
	condorMinted time.Time
	// missed counts consecutive inventories whose listing lacked the
	// server (not persisted): an entry goes after missedListings.
	missed int
}

// missedListings is how many consecutive cloud listings must lack a server
// before its book entry (and any retirement order) is dropped: one odd
// listing does not erase intent.
const missedListings = 2

func newVMBook() *vmBook {
	return &vmBook{byID: map[string]*vmStatus{}, deleted: map[string]time.Time{},
		dirty: map[string]struct{}{}, dirtyDeleted: map[string]struct{}{}}
}

// entry returns id's entry, creating it, and marks it dirty. b.mu is held.
func (b *vmBook) entry(id string) *vmStatus {
	s, ok := b.byID[id]
	if !ok {
		s = &vmStatus{}
		b.byID[id] = s
	}
	b.dirty[id] = struct{}{}
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

// retire records a retirement order; the earliest deadline wins. It
// reports the entry as it now stands.
func (b *vmBook) retire(id string, by time.Time, reason string, now time.Time) vmStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.entry(id)
	if s.retireBy.IsZero() {
		s.retireBy, s.reason, s.orderedAt, s.retireState = by, reason, now, protocol.RetireOrdered
	} else if by.Before(s.retireBy) {
		s.retireBy, s.reason = by, reason
	}
	return *s
}

// forget drops a deleted server and remembers that it was deleted.
func (b *vmBook) forget(id string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.byID, id)
	b.dirty[id] = struct{}{}
	b.deleted[id] = now
	b.dirtyDeleted[id] = struct{}{}
	if len(b.deleted) > maxDeleted {
		// Drop the expired, then any others until under the bound.
		for k, at := range b.deleted {
			if k != id && (now.Sub(at) > deletedMemory || len(b.deleted) > maxDeleted) {
				delete(b.deleted, k)
				b.dirtyDeleted[k] = struct{}{}
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

// prune drops entries for servers the cloud stopped listing (after
// missedListings listings in a row), and deleted-server memories past
// deletedMemory.
func (b *vmBook) prune(live map[string]bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, s := range b.byID {
		if live[id] {
			s.missed = 0
			continue
		}
		if s.missed++; s.missed >= missedListings {
			delete(b.byID, id)
			b.dirty[id] = struct{}{}
		}
	}
	for id, at := range b.deleted {
		if now.Sub(at) > deletedMemory {
			delete(b.deleted, id)
			b.dirtyDeleted[id] = struct{}{}
		}
	}
}

// dueVM is a retiring VM the reaper may delete: drained (positive
// evidence), or past its deadline plus grace (an admin-set deadline).
type dueVM struct {
	id       string
	deadline bool // the retirement deadline plus grace has passed
}

// due returns retiring VMs that drained, or whose deadline plus grace has
// passed. A VM the gossip pool declares failed is not among them: an
// unreachable VM is unknown, not idle, and waits for its deadline.
func (b *vmBook) due(now time.Time, grace time.Duration) []dueVM {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []dueVM
	for id, s := range b.byID {
		if s.retireBy.IsZero() {
			continue
		}
		switch {
		case now.After(s.retireBy.Add(grace)):
			out = append(out, dueVM{id: id, deadline: true})
		case s.retireState == protocol.RetireDrained:
			out = append(out, dueVM{id: id})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// checkinUpdate is what one accepted check-in changed.
type checkinUpdate struct {
	first   bool // the VM's first check-in: it became ready
	drained bool // the VM reported drained just now
	failed  bool // the VM reported a failed retirement just now
	// busy is true when the VM went from no jobs (or no count) to jobs
	// or claimed slots, or back: worth an early inventory.
	busy bool
	resp vmproto.CheckinResponse
}

// checkin records an accepted check-in.
func (b *vmBook) checkin(id string, req vmproto.CheckinRequest, now time.Time) checkinUpdate {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.entry(id)
	var u checkinUpdate
	s.name = req.Server
	s.lastSeen = now
	s.unreachable = time.Time{} // a check-in is proof of reachability
	if !s.ready {
		s.ready, s.readyAt, u.first = true, now, true
	}
	if req.Jobs != nil {
		at := req.Jobs.At
		if at.IsZero() {
			at = now
		}
		wasBusy := s.jobs != nil && (s.jobs.Running > 0 || s.jobs.Claimed > 0)
		// At is when the count was first reported: it changes only with
		// the count, so an unchanged VM stays out of inventory deltas;
		// jobsSeen says how fresh it is.
		if s.jobs == nil || s.jobs.Running != req.Jobs.Running || s.jobs.Claimed != req.Jobs.Claimed {
			s.jobs = &protocol.VMJobs{Running: req.Jobs.Running, Claimed: req.Jobs.Claimed, At: at.UTC()}
		}
		u.busy = wasBusy != (s.jobs.Running > 0 || s.jobs.Claimed > 0)
		s.jobsSeen = now
	}
	if !s.retireBy.IsZero() {
		switch req.State {
		case vmproto.CheckinRetiring:
			// Draining (again, after a failure or a restarted vmagent):
			// deletes wait for drained or the deadline.
			if s.retireState != protocol.RetireDraining {
				s.retireState, s.retireError, s.drained = protocol.RetireDraining, "", time.Time{}
			}
		case vmproto.CheckinDrained:
			if s.retireState != protocol.RetireDrained {
				s.retireState, s.retireError, s.drained, u.drained = protocol.RetireDrained, "", now, true
			}
		case vmproto.CheckinFailed:
			if s.retireState != protocol.RetireFailed || s.retireError != req.Error {
				u.failed = s.retireState != protocol.RetireFailed
				s.retireState, s.retireError, s.drained = protocol.RetireFailed, req.Error, time.Time{}
			}
		}
		u.resp = vmproto.CheckinResponse{Retire: true, Reason: s.reason, Deadline: max(0, s.retireBy.Sub(now))}
	}
	return u
}

// toRecord converts an entry to its durable form.
func (s *vmStatus) toRecord() *agentdb.VM {
	r := &agentdb.VM{Name: s.name, Ready: s.ready, ReadyAt: s.readyAt, LastSeen: s.lastSeen, JobsSeen: s.jobsSeen,
		UnreachableSince: s.unreachable}
	if s.jobs != nil {
		j := *s.jobs
		r.Jobs = &j
	}
	if !s.retireBy.IsZero() {
		r.Retire = &agentdb.Retirement{Deadline: s.retireBy, Reason: s.reason, OrderedAt: s.orderedAt, State: s.retireState,
			Error: s.retireError, DrainedAt: s.drained}
	}
	return r
}

// fromRecord is toRecord's inverse.
func fromRecord(r agentdb.VM) *vmStatus {
	s := &vmStatus{name: r.Name, ready: r.Ready, readyAt: r.ReadyAt, lastSeen: r.LastSeen, jobsSeen: r.JobsSeen,
		unreachable: r.UnreachableSince}
	if r.Jobs != nil {
		j := *r.Jobs
		s.jobs = &j
	}
	if r.Retire != nil {
		s.retireBy, s.reason, s.orderedAt, s.retireState = r.Retire.Deadline, r.Retire.Reason, r.Retire.OrderedAt, r.Retire.State
		s.retireError, s.drained = r.Retire.Error, r.Retire.DrainedAt
	}
	return s
}

// load replaces the book with a loaded state.
func (b *vmBook) load(st *agentdb.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byID = make(map[string]*vmStatus, len(st.VMs))
	for id, r := range st.VMs {
		b.byID[id] = fromRecord(r)
	}
	b.deleted = make(map[string]time.Time, len(st.Deleted))
	for id, at := range st.Deleted {
		b.deleted[id] = at
	}
}

// collect moves the dirty entries into batch.
func (b *vmBook) collect(batch *agentdb.Batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dirty) > 0 && batch.VMs == nil {
		batch.VMs = make(map[string]*agentdb.VM, len(b.dirty))
	}
	for id := range b.dirty {
		if s, ok := b.byID[id]; ok {
			batch.VMs[id] = s.toRecord()
		} else {
			batch.VMs[id] = nil
		}
	}
	if len(b.dirtyDeleted) > 0 && batch.Deleted == nil {
		batch.Deleted = make(map[string]time.Time, len(b.dirtyDeleted))
	}
	for id := range b.dirtyDeleted {
		batch.Deleted[id] = b.deleted[id] // zero when forgotten: removed
	}
	clear(b.dirty)
	clear(b.dirtyDeleted)
}

// redirty marks a batch that failed to commit dirty again: the next flush
// writes the entries' current values.
func (b *vmBook) redirty(batch *agentdb.Batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id := range batch.VMs {
		b.dirty[id] = struct{}{}
	}
	for id := range batch.Deleted {
		b.dirtyDeleted[id] = struct{}{}
	}
}

// pending reports whether anything waits for a flush.
func (b *vmBook) pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.dirty) > 0 || len(b.dirtyDeleted) > 0
}

// maxCheckinBody bounds a check-in request.
const maxCheckinBody = 8 << 10

func (a *Agent) vmHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+vmproto.PathEnroll, a.handleEnroll)
	mux.HandleFunc("POST "+vmproto.PathCheckin, a.handleCheckin)
	if a.squids != nil {
		mux.Handle("GET "+vmproto.PathSquids, a.squids.Handler())
	}
	return mux
}

// Refusal reasons of check-ins that never reach the token check.
const (
	reasonNoToken = "no bearer token"
	reasonBadBody = "bad body"
	reasonInvalid = "invalid check-in"
)

// refuse answers a refused check-in, counts it, and logs it (see refuseVM).
func (a *Agent) refuse(w http.ResponseWriter, log *logrus.Entry, status int, reason, detail string) {
	refuseVM(w, log, "check-in", a.metrics.checkinsRefused, a.checkinLog, status, reason, detail)
}

// refuseVM answers a VM's refused request (what: "check-in",
// "enrollment"), counts it by reason, and logs it: in full for the first
// of its reason in an interval, in the interval's summary for the rest
// (see throttle). Only a 400 — the VM's own mistake — says precisely what
// was wrong; other refusals name the reason alone.
func refuseVM(w http.ResponseWriter, log *logrus.Entry, what string, refused *prometheus.CounterVec, th *throttle, status int, reason, detail string) {
	refused.WithLabelValues(reason).Inc()
	if th.allow(reason) {
		e := log.WithField("reason", reason)
		if detail != "" {
			e = e.WithField("detail", detail)
		}
		e.Warn("VM " + what + " refused")
	}
	msg := what + " refused: " + reason
	if status == http.StatusBadRequest && detail != "" {
		msg += ": " + detail
	}
	http.Error(w, msg, status)
}

// Bounds on what a check-in may claim.
const (
	// maxSlots bounds job and slot counts: no machine has more slots.
	maxSlots = 1 << 16
	// maxClockSkew is how far ahead of the agent's clock a VM's count
	// time may be.
	maxClockSkew = 5 * time.Minute
	// maxServerField bounds server_id and server.
	maxServerField = 255
)

// validateCheckin checks what a decoded check-in claims, and says
// precisely what is wrong.
func validateCheckin(req vmproto.CheckinRequest, now time.Time) error {
	switch req.State {
	case vmproto.CheckinReady, vmproto.CheckinRetiring, vmproto.CheckinDrained, vmproto.CheckinFailed:
	default:
		return fmt.Errorf("state %q: want ready, retiring, drained or failed", truncate(req.State, 32))
	}
	if req.ServerID == "" || req.Server == "" {
		return errors.New("server_id and server are required")
	}
	if len(req.ServerID) > maxServerField || len(req.Server) > maxServerField {
		return fmt.Errorf("server_id and server are at most %d bytes", maxServerField)
	}
	if j := req.Jobs; j != nil {
		switch {
		case j.Running < 0 || j.Claimed < 0:
			return fmt.Errorf("jobs: negative count (running %d, claimed %d)", j.Running, j.Claimed)
		case j.Running > maxSlots || j.Claimed > maxSlots:
			return fmt.Errorf("jobs: count over %d (running %d, claimed %d)", maxSlots, j.Running, j.Claimed)
		case j.At.After(now.Add(maxClockSkew)):
			return fmt.Errorf("jobs.at %s is %s ahead of the agent's clock (at most %s)", j.At.UTC().Format(time.RFC3339),
				j.At.Sub(now).Round(time.Second), maxClockSkew)
		}
	}
	if !req.CondorTokenExpires.IsZero() && req.CondorTokenExpires.Year() > 9999 {
		return errors.New("condor_token_expires is out of range")
	}
	if len(req.Error) > vmproto.MaxCheckinError {
		return fmt.Errorf("error is %d bytes, over %d", len(req.Error), vmproto.MaxCheckinError)
	}
	if !utf8.ValidString(req.Error) {
		return errors.New("error is not valid UTF-8")
	}
	for _, r := range req.Error {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return fmt.Errorf("error holds control character %U", r)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (a *Agent) handleCheckin(w http.ResponseWriter, r *http.Request) {
	log := a.log.WithField("remote", r.RemoteAddr)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		a.refuse(w, log, http.StatusUnauthorized, reasonNoToken, "")
		return
	}
	var req vmproto.CheckinRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCheckinBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		a.refuse(w, log, http.StatusBadRequest, reasonBadBody, truncate(err.Error(), 300))
		return
	}
	now := a.now()
	if err := validateCheckin(req, now); err != nil {
		a.refuse(w, log, http.StatusBadRequest, reasonInvalid, err.Error())
		return
	}
	log = log.WithFields(logrus.Fields{"vm": req.Server, "vm_id": req.ServerID})
	claims, err := a.signer.Verify(tok, a.cfg.Site, req.Server, vmtoken.UseCheckin, now)
	if err != nil {
		var te *vmtoken.Error
		if errors.As(err, &te) {
			a.refuse(w, log, http.StatusForbidden, string(te.Reason), te.Detail)
		} else {
			a.refuse(w, log, http.StatusForbidden, string(vmtoken.ReasonMalformed), err.Error())
		}
		return
	}
	// The server must exist, under that name and id, booted for the
	// token's group with this very token: a token replayed after its
	// server was deleted, or by a later server of the same name, is refused.
	if a.vms.wasDeleted(req.ServerID) {
		a.refuse(w, log, http.StatusForbidden, string(vmtoken.ReasonUnknownVM), "deleted by this agent")
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
		a.refuse(w, log, http.StatusForbidden, string(vmtoken.ReasonUnknownVM), "")
		return
	case srv.Name != req.Server:
		a.refuse(w, log, http.StatusForbidden, string(vmtoken.ReasonWrongServer),
			fmt.Sprintf("server %s is named %q, not %q", req.ServerID, srv.Name, req.Server))
		return
	case srv.Metadata[driver.MetaGroup] != claims.Group:
		a.refuse(w, log, http.StatusForbidden, string(vmtoken.ReasonWrongGroup),
			fmt.Sprintf("minted for %q, server booted for %q", claims.Group, srv.Metadata[driver.MetaGroup]))
		return
	case srv.Metadata[driver.MetaTokenID] != claims.Nonce:
		detail := "the server carries another token id"
		if srv.Metadata[driver.MetaTokenID] == "" {
			detail = "the server carries no token id"
		}
		a.refuse(w, log, http.StatusForbidden, string(vmtoken.ReasonReplayed), detail)
		return
	}

	a.metrics.checkins.Inc()
	u := a.vms.checkin(req.ServerID, req, now)
	if u.first {
		log.Info("VM ready")
		a.markChanged()
	}
	if u.drained {
		log.Info("VM drained")
		a.markChanged()
	}
	if u.failed {
		log.WithField("error", req.Error).Warn("VM retirement failed; the VM is kept and retries")
		a.markChanged()
	}
	if u.busy {
		a.markChanged()
	}
	resp := u.resp
	if err := a.renew(log, srv, claims, req, now, &resp); err != nil {
		// The check-in itself is fine; the VM asks again at the next one.
		log.WithError(err).Error("VM check-in: cannot renew its tokens")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

// renew puts new tokens into a check-in's answer when the VM's expire
// within a third of their lifetime: its check-in token (whose expiry the
// agent read from the token itself) and its HTCondor token (whose expiry
// the VM reports). Only servers the agent lists as this hub's get any:
// the caller has already refused servers that are deleted, unlisted or
// renamed; a server booted for another hub keeps checking in, but its
// tokens run out.
func (a *Agent) renew(log *logrus.Entry, srv driver.Server, claims vmtoken.Claims, req vmproto.CheckinRequest, now time.Time,
	resp *vmproto.CheckinResponse) error {
	hubID := a.currentHubID()
	if hubID == "" || srv.Metadata[driver.MetaHub] != hubID {
		log.WithField("hub", srv.Metadata[driver.MetaHub]).Debug("tokens not renewed: server of another hub")
		return nil
	}
	if claims.Expires.Sub(now) < a.cfg.TokenTTL/3 {
		tok, exp, err := a.mintCheckinToken(req.Server, claims.Group, claims.Nonce, now)
		if err != nil {
			return err
		}
		resp.Token, resp.TokenExpires = tok, exp
	}
	if a.condor != nil && a.condor.due(req.CondorTokenExpires, now) && a.vms.mayMintCondor(req.ServerID, now, a.condor.retryAfter()) {
		ct, err := a.mintCondorToken(log, now, "renew")
		if err != nil {
			return err
		}
		resp.Condor = ct
	}
	return nil
}

// mayMintCondor reports whether a VM may get a new HTCondor token now (none
// minted for it within after), and if so records that one is.
func (b *vmBook) mayMintCondor(id string, now time.Time, after time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.byID[id]
	if !ok {
		return true
	}
	if !s.condorMinted.IsZero() && now.Sub(s.condorMinted) < after {
		return false
	}
	s.condorMinted = now
	return true
}
