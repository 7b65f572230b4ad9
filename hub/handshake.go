package hub

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol"
)

// HandshakeIdleTimeout bounds an agent's QUIC handshake on the hub's
// listener: the handshake fails when the agent sends nothing for this long,
// and quic-go bounds the whole handshake at twice this (6 s). An agent on a
// slow path retries with backoff; a peer that opens handshakes and never
// finishes them (a flood of half-open handshakes) holds each for 3 to 6 s
// instead of protocol.HandshakeTimeout's 5 to 10 s. Agents keep
// protocol.QUICConfig's longer timeout on their side.
const HandshakeIdleTimeout = 3 * time.Second

// handshakeLogEvery is how often failed handshakes are logged at most: the
// first is logged at once, the next ones in one summary line per period.
const handshakeLogEvery = 10 * time.Second

// Reasons a handshake failed (label of canopy_hub_agent_handshakes_failed_total).
const (
	// handshakeTimeout: the agent went silent during the handshake, or it
	// took longer than 2 × HandshakeIdleTimeout.
	handshakeTimeout = "timeout"
	// handshakeTLS: the TLS handshake failed (refused certificate, no
	// certificate, no common ALPN or cipher); a refused certificate is
	// also counted in canopy_hub_agent_connections_refused_total.
	handshakeTLS = "tls"
	// handshakePeerClosed: the peer closed or reset the connection first.
	handshakePeerClosed = "peer_closed"
	// handshakeOther: anything else.
	handshakeOther = "other"
)

var handshakeReasons = []string{handshakeTimeout, handshakeTLS, handshakePeerClosed, handshakeOther}

// listenerQUICConfig is the QUIC configuration of the hub's agent
// listener: the shared one, with the hub's short handshake timeout.
func listenerQUICConfig() *quic.Config {
	c := protocol.QUICConfig()
	c.HandshakeIdleTimeout = HandshakeIdleTimeout
	return c
}

// awaitHandshake waits until the agent connection qc (accepted early, when
// the agent's first flight arrived) completes its TLS handshake, and
// reports whether it did. A failed handshake is counted by reason and
// logged (rate-limited); when ctx ends first, qc is closed.
func (h *Hub) awaitHandshake(ctx context.Context, qc *quic.Conn) bool {
	select {
	case <-qc.HandshakeComplete():
		return true
	case <-qc.Context().Done():
	case <-ctx.Done():
		_ = qc.CloseWithError(0, "hub shutting down")
		return false
	}
	select {
	case <-qc.HandshakeComplete():
		return true // completed, then closed: serveAgent sees the close
	default:
	}
	cause := context.Cause(qc.Context())
	reason := handshakeFailure(cause)
	h.m.handshakesFailed.WithLabelValues(reason).Inc()
	h.handshakeLog.note(h.log, qc.RemoteAddr().String(), reason, cause)
	return false
}

// handshakeFailure classifies why a connection closed before its handshake
// completed.
func handshakeFailure(err error) string {
	var (
		hto *quic.HandshakeTimeoutError
		ito *quic.IdleTimeoutError
		te  *quic.TransportError
		ae  *quic.ApplicationError
	)
	switch {
	case errors.As(err, &hto), errors.As(err, &ito):
		return handshakeTimeout
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		return handshakeTLS
	case errors.As(err, &te) && te.Remote, errors.As(err, &ae) && ae.Remote:
		return handshakePeerClosed
	}
	var sr *quic.StatelessResetError
	if errors.As(err, &sr) {
		return handshakePeerClosed
	}
	return handshakeOther
}

// failureLog rate-limits the log lines of failed handshakes: a flood of
// them must not flood the log too.
type failureLog struct {
	// msg is the line's message; empty means the handshake one.
	msg        string
	mu         sync.Mutex
	next       time.Time      // when the next line may be written
	suppressed map[string]int // failures not logged since the last line, by reason
}

// note records one failure and logs it, or a summary of those held back,
// unless a line was written within handshakeLogEvery.
func (f *failureLog) note(log *logrus.Entry, remote, reason string, err error) {
	now := time.Now()
	f.mu.Lock()
	if now.Before(f.next) {
		if f.suppressed == nil {
			f.suppressed = map[string]int{}
		}
		f.suppressed[reason]++
		f.mu.Unlock()
		return
	}
	held := f.suppressed
	f.suppressed = nil
	f.next = now.Add(handshakeLogEvery)
	f.mu.Unlock()
	fields := logrus.Fields{"remote": remote, "reason": reason}
	if len(held) > 0 {
		fields["not_logged"] = summarize(held)
	}
	msg := f.msg
	if msg == "" {
		msg = "agent handshake failed (further failures within 10s are counted in canopy_hub_agent_handshakes_failed_total, not logged)"
	}
	log.WithFields(fields).WithError(err).Warn(msg)
}

// summarize writes counts by reason as "tls=1 timeout=499".
func summarize(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}
