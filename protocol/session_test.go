package protocol

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/canopy-grid/canopy/protocol/pki"
)

// testPKI is a CA with a hub certificate, made once per test.
type testPKI struct {
	dir   string
	ca    *pki.CA
	roots *x509.CertPool
	hub   tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(dir, []string{"localhost", "127.0.0.1"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.HubCert), filepath.Join(dir, pki.HubKey))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return &testPKI{dir: dir, ca: ca, roots: roots, hub: hub}
}

func (p *testPKI) agentCert(t testing.TB, site string, notBefore, notAfter time.Time) (tls.Certificate, string) {
	t.Helper()
	iss, err := p.ca.IssueAgent(site, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, pki.SerialHex(iss.Serial)
}

// testServer accepts QUIC sessions, runs the server handshake on the first
// stream and records refusals.
type testServer struct {
	ln *quic.Listener
	v  *pki.Verifier

	mu       sync.Mutex
	rejected []error
	accepted chan string
}

func startServer(t testing.TB, p *testPKI, revoked map[string]bool) *testServer {
	t.Helper()
	s := &testServer{v: &pki.Verifier{Roots: p.roots, Revoked: revoked}, accepted: make(chan string, 16)}
	conf := ServerTLS(p.hub, s.v, func(_ string, err error) {
		s.mu.Lock()
		s.rejected = append(s.rejected, err)
		s.mu.Unlock()
	})
	ln, err := quic.ListenAddr("127.0.0.1:0", conf, QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = ln.Close() })
	go func() {
		for {
			qc, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				site, err := PeerSite(qc, s.v)
				if err != nil {
					_ = qc.CloseWithError(1, "refused")
					return
				}
				st, err := qc.AcceptStream(ctx)
				if err != nil {
					return
				}
				c := NewConn(st, st)
				if _, err := ServerHandshake(c, site, Welcome{HubID: "test-hub", HeartbeatEvery: time.Second}); err != nil {
					_ = st.Close()
					return
				}
				s.accepted <- site
				for {
					if _, err := c.Recv(); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *testServer) lastRejection() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rejected) == 0 {
		return nil
	}
	return s.rejected[len(s.rejected)-1]
}

// dialAndHello connects, opens the control stream and says Hello.
func dialAndHello(t testing.TB, addr string, conf *tls.Config, h Hello) (Welcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, conf, QUICConfig())
	if err != nil {
		return Welcome{}, err
	}
	defer qc.CloseWithError(0, "")
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return Welcome{}, err
	}
	return ClientHandshake(NewConn(st, st), h)
}

func TestMutualTLS(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t) // a different CA
	now := time.Now()
	good, _ := p.agentCert(t, "west", now.Add(-time.Hour), now.Add(time.Hour))
	expired, _ := p.agentCert(t, "west", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	revoked, revokedSerial := p.agentCert(t, "west", now.Add(-time.Hour), now.Add(time.Hour))
	foreign, _ := other.agentCert(t, "west", now.Add(-time.Hour), now.Add(time.Hour))
	srv := startServer(t, p, map[string]bool{revokedSerial: true})
	addr := srv.ln.Addr().String()

	cases := []struct {
		name   string
		certs  []tls.Certificate
		reason pki.RejectReason // "" = accepted
	}{
		{"valid agent certificate", []tls.Certificate{good}, ""},
		{"no client certificate", nil, pki.RejectNoCert},
		{"certificate from another CA", []tls.Certificate{foreign}, pki.RejectUnknownCA},
		{"expired certificate", []tls.Certificate{expired}, pki.RejectExpired},
		{"revoked certificate", []tls.Certificate{revoked}, pki.RejectRevoked},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := ClientTLS(p.roots, tls.Certificate{}, "localhost")
			conf.Certificates = tc.certs
			w, err := dialAndHello(t, addr, conf, Hello{Site: "west"})
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("valid agent refused: %v", err)
				}
				if w.HubID != "test-hub" || w.Version != Version {
					t.Fatalf("welcome = %+v", w)
				}
				select {
				case site := <-srv.accepted:
					if site != "west" {
						t.Fatalf("identity = %q", site)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("server never accepted")
				}
				return
			}
			if err == nil {
				t.Fatal("connection accepted, want refused")
			}
			var re *pki.RejectError
			if got := srv.lastRejection(); !errors.As(got, &re) || re.Reason != tc.reason {
				t.Fatalf("server logged %v, want reason %q", got, tc.reason)
			}
		})
	}
}

func TestTLS12Refused(t *testing.T) {
	p := newTestPKI(t)
	now := time.Now()
	good, _ := p.agentCert(t, "west", now.Add(-time.Hour), now.Add(time.Hour))
	conf := ServerTLS(p.hub, &pki.Verifier{Roots: p.roots}, nil)
	if conf.MinVersion != tls.VersionTLS13 {
		t.Fatalf("server MinVersion = %x", conf.MinVersion)
	}
	if c := ClientTLS(p.roots, good, "localhost"); c.MinVersion != tls.VersionTLS13 || c.NextProtos[0] != ALPN {
		t.Fatalf("client config %+v", c)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	p := newTestPKI(t)
	now := time.Now()
	good, _ := p.agentCert(t, "west", now.Add(-time.Hour), now.Add(time.Hour))
	srv := startServer(t, p, nil)
	conf := ClientTLS(p.roots, good, "localhost")
	cases := []struct {
		name  string
		hello Hello
		code  ErrorCode
	}{
		{"site other than the certificate's", Hello{Site: "east"}, CodeBadIdentity},
		{"no common version", Hello{Site: "west", Versions: []uint16{99}}, CodeBadVersion},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialAndHello(t, srv.ln.Addr().String(), conf, tc.hello)
			if !errors.Is(err, ErrPeerRefused) || !strings.Contains(err.Error(), string(tc.code)) {
				t.Fatalf("err = %v, want refusal with %s", err, tc.code)
			}
		})
	}
}

// BenchmarkHeartbeatsOneConnection measures how many heartbeats per second
// a hub-side reader takes from one agent over one QUIC connection.
func BenchmarkHeartbeatsOneConnection(b *testing.B) {
	p := newTestPKI(b)
	now := time.Now()
	cert, _ := p.agentCert(b, "west", now.Add(-time.Hour), now.Add(time.Hour))
	v := &pki.Verifier{Roots: p.roots}
	ln, err := quic.ListenAddr("127.0.0.1:0", ServerTLS(p.hub, v, nil), QUICConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan int, 1)
	go func() {
		qc, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		st, err := qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		c := NewConn(st, st)
		n := 0
		for {
			if _, err := c.Recv(); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	qc, err := quic.DialAddr(ctx, ln.Addr().String(), ClientTLS(p.roots, cert, "localhost"), QUICConfig())
	if err != nil {
		b.Fatal(err)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		b.Fatal(err)
	}
	c := NewConn(st, st)
	b.ResetTimer()
	start := time.Now()
	var seq uint64
	for b.Loop() {
		seq++
		if err := c.Send(Heartbeat{Seq: seq, SentAt: now}); err != nil {
			b.Fatal(err)
		}
	}
	_ = st.Close()
	n := <-got
	elapsed := time.Since(start)
	b.StopTimer()
	if n != int(seq) {
		b.Fatalf("received %d of %d heartbeats", n, seq)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "heartbeats/s")
	_ = qc.CloseWithError(0, "")
}
