package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/agentdb"
	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// enrollBook holds the single-use enrollment tokens the agent minted, by
// token id (the nonce recorded on the server as driver.MetaTokenID). Like
// the VM book it is durable: a token is recorded before its server is
// booted, and its use before the enrollment is answered, so a token is
// spent once also across agent restarts.
type enrollBook struct {
	mu    sync.Mutex
	byID  map[string]*agentdb.Enrollment
	dirty map[string]struct{}
}

func newEnrollBook() *enrollBook {
	return &enrollBook{byID: map[string]*agentdb.Enrollment{}, dirty: map[string]struct{}{}}
}

// enrollMemory is how long past its expiry an enrollment is remembered:
// after that the token's own expiry refuses it.
const enrollMemory = time.Hour

// add records a minted token.
func (b *enrollBook) add(id string, e agentdb.Enrollment) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byID[id] = &e
	b.dirty[id] = struct{}{}
}

// get returns a token's record.
func (b *enrollBook) get(id string) (agentdb.Enrollment, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byID[id]
	if !ok {
		return agentdb.Enrollment{}, false
	}
	return *e, true
}

// claim marks an unused token used by serverID. It returns the record as
// it was and whether this call spent it: false when it is unknown or was
// already spent (two enrollments racing: one wins).
func (b *enrollBook) claim(id, serverID string, now time.Time) (agentdb.Enrollment, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byID[id]
	if !ok {
		return agentdb.Enrollment{}, false
	}
	was := *e
	if !e.UsedAt.IsZero() {
		return was, false
	}
	e.UsedAt, e.UsedBy = now, serverID
	b.dirty[id] = struct{}{}
	return was, true
}

// unclaim undoes a claim whose commit failed: nothing was answered, so the
// VM may try again.
func (b *enrollBook) unclaim(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.byID[id]; ok {
		e.UsedAt, e.UsedBy = time.Time{}, ""
		b.dirty[id] = struct{}{}
	}
}

// prune forgets records past their expiry plus enrollMemory.
func (b *enrollBook) prune(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, e := range b.byID {
		if now.Sub(e.Expires) > enrollMemory {
			delete(b.byID, id)
			b.dirty[id] = struct{}{}
		}
	}
}

func (b *enrollBook) load(st map[string]agentdb.Enrollment) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byID = make(map[string]*agentdb.Enrollment, len(st))
	for id, e := range st {
		b.byID[id] = &e
	}
}

// collect moves the dirty records into batch.
func (b *enrollBook) collect(batch *agentdb.Batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dirty) > 0 && batch.Enrollments == nil {
		batch.Enrollments = make(map[string]*agentdb.Enrollment, len(b.dirty))
	}
	for id := range b.dirty {
		if e, ok := b.byID[id]; ok {
			c := *e
			batch.Enrollments[id] = &c
		} else {
			batch.Enrollments[id] = nil
		}
	}
	clear(b.dirty)
}

func (b *enrollBook) redirty(batch *agentdb.Batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id := range batch.Enrollments {
		b.dirty[id] = struct{}{}
	}
}

func (b *enrollBook) pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.dirty) > 0
}

// mintEnrollToken mints the single-use enrollment token for a server
// about to be booted and records it (durable at the next flush, which
// boot does before booting). The returned id goes into the server's
// metadata under driver.MetaTokenID.
func (a *Agent) mintEnrollToken(server, group string) (tok, id string, err error) {
	id, err = vmtoken.NewNonce()
	if err != nil {
		return "", "", err
	}
	now := a.now()
	exp := now.Add(a.cfg.EnrollTTL)
	tok, err = a.signer.Mint(vmtoken.Claims{Site: a.cfg.Site, Server: server, Group: group, Expires: exp, Nonce: id, Use: vmtoken.UseEnroll})
	if err != nil {
		return "", "", err
	}
	a.enrolls.add(id, agentdb.Enrollment{Server: server, Group: group, IssuedAt: now, Expires: exp})
	return tok, id, nil
}

// mintCheckinToken mints a VM's check-in token, bound like its enrollment
// token to the server's token id.
func (a *Agent) mintCheckinToken(server, group, id string, now time.Time) (string, time.Time, error) {
	exp := now.Add(a.cfg.TokenTTL)
	tok, err := a.signer.Mint(vmtoken.Claims{Site: a.cfg.Site, Server: server, Group: group, Expires: exp, Nonce: id, Use: vmtoken.UseCheckin})
	return tok, exp.UTC(), err
}

// mintCondorToken mints a VM's HTCondor IDTOKEN (nil when the agent mints
// none) and logs its jti with the server, so that the collector's audit
// log (the token's payload) leads back to the VM.
func (a *Agent) mintCondorToken(log *logrus.Entry, now time.Time, why string) (*vmproto.CondorToken, error) {
	if a.condor == nil {
		return nil, nil
	}
	ct, tok, err := a.condor.mint(now)
	if err != nil {
		return nil, err
	}
	a.metrics.condorTokens.WithLabelValues(why).Inc()
	log.WithFields(logrus.Fields{"jti": tok.ID, "expires": tok.Expires.UTC().Format(time.RFC3339), "why": why}).Info("HTCondor token minted")
	return ct, nil
}

// Enrollment refusal reasons beyond vmtoken's.
const (
	reasonEnrollUnknown = "unknown enrollment token"
	reasonEnrollSpent   = "enrollment token already used"
	reasonForeignServer = "server booted for another hub"
	reasonUnavailable   = "cannot record the enrollment"
)

// refuseEnroll answers a refused enrollment, counts it and logs it (rate
// limited like check-in refusals, see refuseVM).
func (a *Agent) refuseEnroll(w http.ResponseWriter, log *logrus.Entry, status int, reason, detail string) {
	refuseVM(w, log, "enrollment", a.metrics.enrollsRefused, a.enrollLog, status, reason, detail)
}

// maxEnrollBody bounds an enrollment request.
const maxEnrollBody = 4 << 10

// handleEnroll spends a VM's enrollment token and answers with its
// secrets. The token must be this agent's, for this site, this server
// name and enrollment, unexpired and unused; the server must be listed
// under that id and name, carry the token's id, and have been booted for
// the token's group by this agent for the hub it serves. The token is
// marked used durably before the answer: a second enrollment (a job that
// read the user-data, a replay) is refused.
func (a *Agent) handleEnroll(w http.ResponseWriter, r *http.Request) {
	log := a.log.WithField("remote", r.RemoteAddr)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		a.refuseEnroll(w, log, http.StatusUnauthorized, reasonNoToken, "")
		return
	}
	var req vmproto.EnrollRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxEnrollBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		a.refuseEnroll(w, log, http.StatusBadRequest, reasonBadBody, truncate(err.Error(), 300))
		return
	}
	if req.ServerID == "" || req.Server == "" || len(req.ServerID) > maxServerField || len(req.Server) > maxServerField {
		a.refuseEnroll(w, log, http.StatusBadRequest, reasonInvalid, fmt.Sprintf("server_id and server are required, at most %d bytes", maxServerField))
		return
	}
	now := a.now()
	log = log.WithFields(logrus.Fields{"vm": req.Server, "vm_id": req.ServerID})
	claims, err := a.signer.Verify(tok, a.cfg.Site, req.Server, vmtoken.UseEnroll, now)
	if err != nil {
		var te *vmtoken.Error
		if errors.As(err, &te) {
			a.refuseEnroll(w, log, http.StatusForbidden, string(te.Reason), te.Detail)
		} else {
			a.refuseEnroll(w, log, http.StatusForbidden, string(vmtoken.ReasonMalformed), err.Error())
		}
		return
	}
	if a.vms.wasDeleted(req.ServerID) {
		a.refuseEnroll(w, log, http.StatusForbidden, string(vmtoken.ReasonUnknownVM), "deleted by this agent")
		return
	}
	rec, found := a.enrolls.get(claims.Nonce)
	switch {
	case !found:
		a.refuseEnroll(w, log, http.StatusForbidden, reasonEnrollUnknown, "no record of token "+claims.Nonce)
		return
	case !rec.UsedAt.IsZero():
		a.refuseEnroll(w, log, http.StatusForbidden, reasonEnrollSpent,
			fmt.Sprintf("token %s was used at %s by server %s", claims.Nonce, rec.UsedAt.UTC().Format(time.RFC3339), rec.UsedBy))
		return
	}
	srv, listed, err := a.lookupServer(r.Context(), req.ServerID)
	if err != nil {
		log.WithError(err).Warn("VM enrollment: cannot list servers")
		http.Error(w, "cannot list servers", http.StatusServiceUnavailable)
		return
	}
	hubID := a.currentHubID()
	switch {
	case !listed || srv.Status == driver.StatusDeleted:
		a.refuseEnroll(w, log, http.StatusForbidden, string(vmtoken.ReasonUnknownVM), "")
		return
	case srv.Name != req.Server:
		a.refuseEnroll(w, log, http.StatusForbidden, string(vmtoken.ReasonWrongServer),
			fmt.Sprintf("server %s is named %q, not %q", req.ServerID, srv.Name, req.Server))
		return
	case srv.Metadata[driver.MetaTokenID] != claims.Nonce:
		a.refuseEnroll(w, log, http.StatusForbidden, string(vmtoken.ReasonReplayed), "the server carries another token id")
		return
	case srv.Metadata[driver.MetaGroup] != claims.Group:
		a.refuseEnroll(w, log, http.StatusForbidden, string(vmtoken.ReasonWrongGroup),
			fmt.Sprintf("minted for %q, server booted for %q", claims.Group, srv.Metadata[driver.MetaGroup]))
		return
	case hubID == "" || srv.Metadata[driver.MetaHub] != hubID:
		a.refuseEnroll(w, log, http.StatusForbidden, reasonForeignServer,
			fmt.Sprintf("booted for hub %q, this agent serves %q", srv.Metadata[driver.MetaHub], hubID))
		return
	}
	if was, spent := a.enrolls.claim(claims.Nonce, req.ServerID, now); !spent {
		a.refuseEnroll(w, log, http.StatusForbidden, reasonEnrollSpent,
			fmt.Sprintf("token %s was used at %s by server %s", claims.Nonce, was.UsedAt.UTC().Format(time.RFC3339), was.UsedBy))
		return
	}
	if err := a.flush(); err != nil {
		// Not durably spent: answer nothing, so the VM may try again.
		a.enrolls.unclaim(claims.Nonce)
		log.WithError(err).Error("VM enrollment: cannot record it")
		http.Error(w, "enrollment refused: "+reasonUnavailable, http.StatusServiceUnavailable)
		return
	}
	resp := vmproto.EnrollResponse{}
	resp.Token, resp.TokenExpires, err = a.mintCheckinToken(req.Server, claims.Group, claims.Nonce, now)
	if err == nil {
		resp.Condor, err = a.mintCondorToken(log, now, "enroll")
	}
	if err != nil {
		// Spent, yet the VM got nothing: it cannot try again. Say so.
		log.WithError(err).Error("VM enrollment: cannot mint its tokens; the VM cannot enroll again")
		http.Error(w, "cannot mint tokens", http.StatusInternalServerError)
		return
	}
	if a.gkeys.Pool != nil {
		resp.GossipKey = gossip.EncodeKey(a.gkeys.Pool)
	}
	a.metrics.enrolls.Inc()
	log.WithField("token_id", claims.Nonce).Info("VM enrolled")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

// advertisedHost returns the host of an https:// VM endpoint URL.
func advertisedHost(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("%.100q is not an https://host:port URL (the VM endpoint is TLS only)", raw)
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		return "", fmt.Errorf("%.100q names no host VMs can dial", raw)
	}
	return u.Hostname(), nil
}

// vmEndpointErrorLog is the VM endpoint server's error log: failed TLS
// handshakes (a client that does not trust the CA, plain HTTP, a scanner)
// are refusals, rate limited like the others.
func vmEndpointErrorLog(a *Agent) *log.Logger {
	return log.New(throttledWriter{a: a}, "", 0)
}

type throttledWriter struct{ a *Agent }

func (t throttledWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	reason := "connection error"
	if strings.Contains(line, "TLS handshake error") {
		reason = "TLS handshake failed"
	}
	t.a.metrics.vmTLSErrors.WithLabelValues(reason).Inc()
	if t.a.tlsLog.allow(reason) {
		t.a.log.WithFields(logrus.Fields{"reason": reason, "detail": truncate(line, 300)}).Warn("VM endpoint connection refused")
	}
	return len(p), nil
}
