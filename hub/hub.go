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

// Invalidator is implemented by sources that must be told when a VM's
// server is gone, so the batch system forgets it at once (HTCondor:
// condor_advertise INVALIDATE_STARTD_ADS / INVALIDATE_MASTER_ADS).
type Invalidator interface {
	Invalidate(ctx context.Context, vmName string) error
}

// Hub is a running hub.
type Hub struct {
	cfg      Config
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

	mu         sync.Mutex
	held       map[string]bool // VM ids under manual control
	history    planner.History
	sites      map[string]*site
	demand     demand.Demand
	demandAt   time.Time
	demandErr  string
	lastPlan   planner.Plan
	planAt     time.Time
	planID     string
	quicAddr   net.Addr
	httpAddr   net.Addr
	sessionSeq int
}

// New prepares a hub: it loads the TLS material and opens the store.
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
	held, err := st.Held()
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	h := &Hub{
		held:     held,
		cfg:      cfg,
		log:      log,
		store:    st,
		source:   src,
		verifier: &pki.Verifier{Roots: roots, Revoked: revoked},
		now:      time.Now,
		reg:      prometheus.NewRegistry(),
		sites:    map[string]*site{},
	}
	h.m = newMetrics(h.reg, h)
	h.storage = storagemetrics.NewExporter()
	h.reg.MustRegister(h.storage)
	var loc *squid.Locator
	if cfg.GeoIPCityDB != "" {
		if loc, err = squid.OpenLocator(cfg.GeoIPCityDB); err != nil {
			return nil, err
		}
	}
	if h.squids, err = squid.New(cfg.Squid, loc, log.WithField("component", "squids")); err != nil {
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
		h.log.WithFields(logrus.Fields{"remote": remote, "reason": reason}).WithError(err).Warn("agent connection refused")
	})
	return h, nil
}

// SetHeld puts a VM under manual control (the planner never touches it)
// or releases it. It is kept in the store across restarts.
func (h *Hub) SetHeld(vmID string, held bool) error {
	if err := h.store.SetHeld(vmID, held); err != nil {
		return err
	}
	h.mu.Lock()
	if held {
		h.held[vmID] = true
	} else {
		delete(h.held, vmID)
	}
	h.mu.Unlock()
	kind := "released"
	if held {
		kind = "held"
	}
	h.appendEvent("", vmID, "", kind, "manual control by an admin")
	return nil
}

// HeldByName reports whether the VM with this server name is under manual
// control (for job sources that must leave it alone).
func (h *Hub) HeldByName(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sites {
		for _, vm := range s.inv.VMs {
			if vm.Name == name {
				return h.held[vm.ID]
			}
		}
	}
	return false
}

// Registry is the hub's metrics registry (for collectors added by main).
func (h *Hub) Registry() *prometheus.Registry { return h.reg }

// Addrs returns the QUIC and HTTP addresses once Run is listening.
func (h *Hub) Addrs() (quicAddr, httpAddr net.Addr) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.quicAddr, h.httpAddr
}

// Run serves agents and HTTP and plans until ctx ends.
func (h *Hub) Run(ctx context.Context, ready func(quicAddr, httpAddr net.Addr)) error {
	defer h.store.Close()
	ln, err := quic.ListenAddr(h.cfg.Listen, h.tls, protocol.QUICConfig())
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

	h.mu.Lock()
	h.quicAddr, h.httpAddr = ln.Addr(), hl.Addr()
	h.mu.Unlock()
	h.log.WithFields(logrus.Fields{"agents": ln.Addr().String(), "http": "http://" + hl.Addr().String()}).Info("hub listening")
	if ready != nil {
		ready(ln.Addr(), hl.Addr())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { h.planLoop(ctx) })
	wg.Go(func() { _ = h.squids.Run(ctx) })
	for {
		qc, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept agent: %w", err)
		}
		wg.Go(func() { h.serveAgent(ctx, qc) })
	}
}

// retireDeadline is how long a retiring VM may take to finish its jobs.
func (h *Hub) retireDeadline() time.Duration {
	if h.cfg.Planner.RetireDeadline > 0 {
		return h.cfg.Planner.RetireDeadline
	}
	return planner.DefaultRetireDeadline
}

func (h *Hub) planLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.PlanEvery)
	defer t.Stop()
	for {
		h.cycle(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
