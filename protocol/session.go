package protocol

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/canopy-grid/canopy/protocol/pki"
)

// Link timers. quic-go's defaults (no keepalive, 30 s idle timeout) would
// drop a quiet link and notice a dead one late: here a keepalive every 2 s
// keeps NAT and firewall state warm, and 8 s of silence closes the link.
const (
	KeepAlivePeriod  = 2 * time.Second
	MaxIdleTimeout   = 8 * time.Second
	HandshakeTimeout = 5 * time.Second
)

// QUICConfig is the transport configuration both sides use.
func QUICConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:       KeepAlivePeriod,
		MaxIdleTimeout:        MaxIdleTimeout,
		HandshakeIdleTimeout:  HandshakeTimeout,
		MaxIncomingStreams:    16,
		MaxIncomingUniStreams: -1,
	}
}

// ServerTLS returns the hub's TLS configuration: TLS 1.3 only, the Canopy
// ALPN, and a client certificate required and checked by v. onReject is
// called with the peer address and the reason for every refused handshake,
// so the hub can log it.
func ServerTLS(cert tls.Certificate, v *pki.Verifier, onReject func(remote string, err error)) *tls.Config {
	base := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
		Certificates: []tls.Certificate{cert},
		// Request, not require: a missing certificate must reach
		// VerifyConnection so that the refusal is logged with its reason.
		ClientAuth: tls.RequestClientCert,
	}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		remote := "unknown"
		if hello.Conn != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if _, err := v.Verify(cs.PeerCertificates); err != nil {
				if onReject != nil {
					onReject(remote, err)
				}
				return err
			}
			return nil
		}
		return c, nil
	}
	return base
}

// ClientTLS returns an agent's TLS configuration: it trusts only the hub's
// CA, presents the agent's certificate, and checks the hub's name.
func ClientTLS(roots *x509.CertPool, cert tls.Certificate, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
		RootCAs:      roots,
		Certificates: []tls.Certificate{cert},
		ServerName:   serverName,
	}
}

// PeerSite returns the site identity of a verified QUIC connection.
func PeerSite(c *quic.Conn, v *pki.Verifier) (string, error) {
	return v.Verify(c.ConnectionState().TLS.PeerCertificates)
}

// Negotiate picks the newest version both sides speak.
func Negotiate(offered []uint16) (uint16, bool) {
	for _, v := range SupportedVersions {
		if slices.Contains(offered, v) {
			return v, true
		}
	}
	return 0, false
}

// ErrPeerRefused is wrapped by handshake errors the peer reported in an Error frame.
var ErrPeerRefused = errors.New("peer refused")

// ServerHandshake reads the agent's Hello on c, checks that it claims the
// site its certificate names and offers a version this hub speaks, and
// answers Welcome. On refusal it sends an Error frame and returns why.
func ServerHandshake(c *Conn, certSite string, w Welcome) (Hello, error) {
	m, err := c.Recv()
	if err != nil {
		_ = c.SendError(err)
		return Hello{}, fmt.Errorf("read hello: %w", err)
	}
	h, ok := m.(Hello)
	if !ok {
		err := frameErr(CodeUnexpected, "first message is %s, want hello", m.Kind())
		_ = c.SendError(err)
		return Hello{}, err
	}
	if h.Site != certSite {
		err := frameErr(CodeBadIdentity, "hello claims site %q, certificate is for %q", h.Site, certSite)
		_ = c.SendError(err)
		return h, err
	}
	v, ok := Negotiate(h.Versions)
	if !ok {
		err := frameErr(CodeBadVersion, "agent offers versions %v, hub speaks %v", h.Versions, SupportedVersions)
		_ = c.SendError(err)
		return h, err
	}
	w.Version = v
	if err := c.Send(w); err != nil {
		return h, err
	}
	c.SetVersion(v)
	return h, nil
}

// ClientHandshake sends Hello for site on c and waits for Welcome.
func ClientHandshake(c *Conn, h Hello) (Welcome, error) {
	if len(h.Versions) == 0 {
		h.Versions = SupportedVersions
	}
	if err := c.Send(h); err != nil {
		return Welcome{}, err
	}
	m, err := c.Recv()
	if err != nil {
		return Welcome{}, fmt.Errorf("read welcome: %w", err)
	}
	switch v := m.(type) {
	case Welcome:
		if !slices.Contains(h.Versions, v.Version) {
			return v, frameErr(CodeBadVersion, "hub chose version %d, not offered", v.Version)
		}
		c.SetVersion(v.Version)
		return v, nil
	case Error:
		return Welcome{}, fmt.Errorf("%w: %s: %s", ErrPeerRefused, v.Code, v.Message)
	default:
		return Welcome{}, frameErr(CodeUnexpected, "hub answered hello with %s", m.Kind())
	}
}

// Backoff computes reconnect delays: exponential from Min to Max with full
// jitter, so that many agents cut off together do not return together.
type Backoff struct {
	Min, Max time.Duration
	attempt  int
}

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	ceiling := b.Min << min(b.attempt, 20)
	if ceiling > b.Max || ceiling <= 0 {
		ceiling = b.Max
	}
	b.attempt++
	// Full jitter in [ceiling/2, ceiling): never hammer, never stall.
	half := ceiling / 2
	return half + rand.N(half+1)
}

// Reset starts the sequence again after a successful connection.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits for d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
