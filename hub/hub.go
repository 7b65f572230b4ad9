// Package hub is Canopy's central manager side: it accepts site agents'
// mutual-TLS QUIC sessions, keeps what they report (clouds, flavors, limits,
// VMs), reads demand from a job source, asks the planner what to do, sends
// the agents their commands, and serves the status page, /metrics and the
// JSON API.
package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/hub/storagemetrics"
	"github.com/canopy-grid/canopy/hub/store"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// Source is where demand comes from: a simulated pool (hub/trace) or
// HTCondor. pool lists the VMs the hub knows, for sources that simulate.
type Source interface {
	Poll(ctx context.Context, now time.Time, pool []demand.PoolVM) (demand.Demand, error)
}

// PoolSimulator is implemented by sources that simulate the batch pool and
// need the hub's list of VMs at every poll (hub/trace); other sources get
// nil and the hub saves building it.
type PoolSimulator interface {
	SimulatesPool() bool
}

// Invalidator is implemented by sources that must be told when a VM's
// server is gone, so the batch system forgets it at once (HTCondor:
// condor_advertise INVALIDATE_STARTD_ADS / INVALIDATE_MASTER_ADS).
type Invalidator interface {
	Invalidate(ctx context.Context, vmName string) error
}

// Hub is a running hub.
//
// State has one owner each: a cloud's view belongs to its agent's session
// goroutine (link), the durable intent and the demand belong to the
// control loop (loop), and readers (the API, /metrics, the status page)
// get the snapshot the loop publishes after every cycle. No lock is held
// across I/O.
type Hub struct {
	cfg      Config
	pol      atomic.Pointer[policy]
	con      *console
	log      *logrus.Entry
	store    *store.Store
	source   Source
	verifier *pki.Verifier
	tls      *tls.Config
	now      func() time.Time
	reg      *prometheus.Registry
	m        *metrics
	storage  *storagemetrics.Exporter
	squids   *squid.Registry

	linksMu    sync.RWMutex
	links      map[string]*link
	sessionSeq atomic.Int64
	inbox      inbox
	inflight   inflight
	// progress carries image copy reports to the loop; imageStatus is the
	// image distribution's last state, for the API.
	progress    progressBox
	imageStatus atomic.Pointer[ImageStatus]

	loop   *loop
	wakeC  chan struct{}
	adminC chan adminRequest

	// reloader reads the config file again (`hub reload`); nil in tests.
	reloader  func() (Config, error)
	adminAddr atomic.Pointer[adminAddr]

	status    atomic.Pointer[Status]
	publishMu sync.Mutex
	addrs     atomic.Pointer[[2]net.Addr]
	// refusedLog rate-limits the log lines of refused agent certificates.
	refusedLog failureLog
	// handshakeLog rate-limits the log lines of failed agent handshakes.
	handshakeLog failureLog
}

// New prepares a hub: it loads the TLS material, opens the store and loads
// the durable intent.
func New(cfg Config, src Source, log *logrus.Entry) (*Hub, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	caCert, err := pki.LoadCert(filepath.Join(cfg.TLSDir, pki.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("hub TLS (run `hub tls init` first): %w", err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(cfg.TLSDir, pki.HubCert), filepath.Join(cfg.TLSDir, pki.HubKey))
	if err != nil {
		return nil, fmt.Errorf("hub TLS certificate: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	revoked := map[string]bool{}
	for _, s := range cfg.RevokedSerials {
		revoked[strings.ToLower(strings.TrimPrefix(strings.ReplaceAll(s, ":", ""), "0x"))] = true
	}
	if err := os.MkdirAll(filepath.Dir(cfg.StateFile), 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	st, err := store.Open(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	state, err := st.Load()
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	h := &Hub{
		cfg:      cfg,
		log:      log,
		store:    st,
		source:   src,
		verifier: &pki.Verifier{Roots: roots, Revoked: revoked},
		now:      time.Now,
		reg:      prometheus.NewRegistry(),
		links:    map[string]*link{},
		wakeC:    make(chan struct{}, 1),
		refusedLog: failureLog{msg: "agent connection refused (further refusals within 10s are counted in " +
			"canopy_hub_agent_connections_refused_total, not logged)"},
		adminC: make(chan adminRequest),
	}
	h.pol.Store(policyOf(cfg))
	h.loop = newLoop(h, state)
	h.m = newMetrics(h.reg, h)
	h.con = newConsole(h.reg)
	h.loadConsole()
	h.storage = storagemetrics.NewExporter()
	h.reg.MustRegister(h.storage)
	var loc *squid.Locator
	if cfg.GeoIPCityDB != "" {
		if loc, err = squid.OpenLocator(cfg.GeoIPCityDB); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	if h.squids, err = squid.New(cfg.Squid, loc, log.WithField("component", "squids")); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("squid: %w", err)
	}
	h.reg.MustRegister(h.squids)
	h.tls = protocol.ServerTLS(cert, h.verifier, func(remote string, err error) {
		reason := "invalid"
		var re *pki.RejectError
		if errors.As(err, &re) {
			reason = string(re.Reason)
		}
		h.m.rejected.WithLabelValues(reason).Inc()
		h.refusedLog.note(h.log, remote, reason, err)
	})
	// The first status, before any agent reported, is not a sample.
	h.status.Store(h.loop.status(h.now()))
	return h, nil
}

// Registry is the hub's metrics registry (for collectors added by main).
func (h *Hub) Registry() *prometheus.Registry { return h.reg }

// Addrs returns the QUIC and HTTP addresses once Run is listening.
func (h *Hub) Addrs() (quicAddr, httpAddr net.Addr) {
	if a := h.addrs.Load(); a != nil {
		return a[0], a[1]
	}
	return nil, nil
}

// ShutdownTimeout bounds how long Run takes to stop after its context
// ends: sessions and listeners close at once, the control loop finishes
// the store write in progress. The systemd unit's TimeoutStopSec is above
// it.
const ShutdownTimeout = 10 * time.Second

// Run serves agents and HTTP and plans until ctx ends, then stops within
// ShutdownTimeout.
func (h *Hub) Run(ctx context.Context, ready func(quicAddr, httpAddr net.Addr)) error {
	defer h.store.Close()
	// Connections are accepted early (when the agent's first flight has
	// arrived) so that handshakes that stall or fail are seen, counted
	// and bounded (awaitHandshake); a session starts only once the
	// handshake is complete.
	ln, err := quic.ListenAddrEarly(h.cfg.Listen, h.tls, listenerQUICConfig())
	if err != nil {
		return fmt.Errorf("listen for agents on %s: %w", h.cfg.Listen, err)
	}
	defer ln.Close()
	hl, err := net.Listen("tcp", h.cfg.HTTP)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", h.cfg.HTTP, err)
	}
	srv := &http.Server{Handler: h.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(hl) }()
	defer srv.Close()
	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	adminLns, err := h.listenAdmin(actx)
	if err != nil {
		return err
	}
	defer closeAll(adminLns)

	h.addrs.Store(&[2]net.Addr{ln.Addr(), hl.Addr()})
	h.log.WithFields(logrus.Fields{"agents": ln.Addr().String(), "http": "http://" + hl.Addr().String()}).Info("hub listening")
	if ready != nil {
		ready(ln.Addr(), hl.Addr())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { h.loop.run(ctx) })
	wg.Go(func() { _ = h.squids.Run(ctx) })
	wg.Go(func() { h.runConsole(ctx) })
	var sessions sync.WaitGroup
	var acceptErr error
	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("accept agent: %w", err)
				cancel()
			}
			break
		}
		sessions.Go(func() {
			if h.awaitHandshake(ctx, qc) {
				h.serveAgent(ctx, qc)
			}
		})
	}
	// Sessions see ctx end and close their connections; the loop finishes
	// its cycle. Wait for both, within bounds.
	h.log.Info("hub stopping: closing agent sessions")
	done := make(chan struct{})
	go func() { sessions.Wait(); wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(ShutdownTimeout):
		h.log.Warn("hub stop: gave up waiting for sessions and the control loop")
	}
	return acceptErr
}

// wake asks the control loop to look again soon (a cloud connected or
// reported for the first time).
func (h *Hub) wake() {
	select {
	case h.wakeC <- struct{}{}:
	default:
	}
}

// retireDeadline is how long a retiring VM may take to finish its jobs.
func (h *Hub) retireDeadline() time.Duration {
	if d := h.policy().Planner.RetireDeadline; d > 0 {
		return d
	}
	return planner.DefaultRetireDeadline
}
