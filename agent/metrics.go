package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/canopy-grid/canopy/protocol"
)

// metrics are the agent's own Prometheus counters. They live in the
// agent's registry (not the global one), served on metrics_listen.
//
// Why an endpoint of its own rather than counters in the inventory: the
// refusals are the agent's safety net firing, and an operator must see
// them (and alert on them) even when the hub link is down, which is when
// they matter most; the hub already records every refusal it is told of
// (Result.Refused) in its lifecycle log and its own metrics.
type metrics struct {
	reg             *prometheus.Registry
	checkins        prometheus.Counter
	checkinsRefused *prometheus.CounterVec
	enrolls         prometheus.Counter
	enrollsRefused  *prometheus.CounterVec
	condorTokens    *prometheus.CounterVec
	vmTLSErrors     *prometheus.CounterVec
	deletesRefused  *prometheus.CounterVec
	retiresRefused  *prometheus.CounterVec
	commandsStale   prometheus.Counter
	deletes         *prometheus.CounterVec
	stateCommits    prometheus.Counter
	stateFailures   prometheus.Counter
	stateSeconds    prometheus.Histogram
	inventories     *prometheus.CounterVec
	credential      *credentialCollector
	// Image copies carried out by this agent (as the destination).
	imageCopies         *prometheus.CounterVec
	imageBytes          prometheus.Counter
	imageCopiesInFlight prometheus.Gauge
}

// newMetrics makes the agent's metrics; connected tells whether the agent
// holds a session with the hub now (canopy_agent_hub_connected).
func newMetrics(site string, connected func() bool) *metrics {
	c := prometheus.Labels{"site": site}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		checkins: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_agent_checkins_total", ConstLabels: c,
			Help: "VM check-ins accepted."}),
		checkinsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_checkins_refused_total", ConstLabels: c,
			Help: "VM check-ins refused, by reason (token, identity, body)."}, []string{"reason"}),
		enrolls: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_agent_enrollments_total", ConstLabels: c,
			Help: "VM enrollments accepted (each spends a single-use enrollment token)."}),
		enrollsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_enrollments_refused_total", ConstLabels: c,
			Help: "VM enrollments refused, by reason (a spent token is a second enrollment for the same server)."}, []string{"reason"}),
		condorTokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_condor_tokens_minted_total", ConstLabels: c,
			Help: "HTCondor IDTOKENs minted for VMs, at enrollment or renewal."}, []string{"why"}),
		vmTLSErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_vm_endpoint_errors_total", ConstLabels: c,
			Help: "Connections to the VM endpoint that failed before a request (TLS handshakes refused), by reason."}, []string{"reason"}),
		deletesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_deletes_refused_total", ConstLabels: c,
			Help: "Server deletions the agent refused before calling the cloud, by reason and by who asked (command or reaper)."},
			[]string{"reason", "source"}),
		retiresRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_retires_refused_total", ConstLabels: c,
			Help: "Retirement orders the agent refused, by reason."}, []string{"reason"}),
		commandsStale: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_agent_commands_stale_total", ConstLabels: c,
			Help: "Commands refused because they were planned on another run of the agent (epoch)."}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_deletes_total", ConstLabels: c,
			Help: "Servers deleted, by who asked (command or reaper)."}, []string{"source"}),
		stateCommits: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_agent_state_commits_total", ConstLabels: c,
			Help: "Transactions committed to the agent's state file."}),
		stateFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_agent_state_commit_failures_total", ConstLabels: c,
			Help: "Failed commits to the agent's state file (the changes are retried)."}),
		stateSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "canopy_agent_state_commit_seconds", ConstLabels: c,
			Help: "Time to commit one batch to the state file.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		inventories: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_agent_inventories_sent_total", ConstLabels: c,
			Help: "Inventories sent to the hub, full or delta."}, []string{"kind"}),
		imageCopies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_image_agent_copies_total", ConstLabels: c,
			Help: "Image copies into this site finished, by result (ok, failed)."}, []string{"result"}),
		imageBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_image_agent_bytes_total", ConstLabels: c,
			Help: "Image bytes streamed into this site's image service (every attempt)."}),
		imageCopiesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "canopy_image_agent_copies_in_flight", ConstLabels: c,
			Help: "Image copies into this site under way."}),
		credential: newCredentialCollector(site),
	}
	m.reg.MustRegister(m.imageCopies, m.imageBytes, m.imageCopiesInFlight, m.inventories, m.checkins, m.checkinsRefused, m.enrolls, m.enrollsRefused, m.condorTokens, m.vmTLSErrors, m.deletesRefused, m.retiresRefused, m.commandsStale, m.deletes,
		m.stateCommits, m.stateFailures, m.stateSeconds, m.credential,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "canopy_agent_hub_connected", ConstLabels: c,
			Help: "1 while the agent holds a session with the hub, 0 while it reconnects."}, func() float64 {
			if connected() {
				return 1
			}
			return 0
		}))
	return m
}

// Registry returns the agent's metrics registry.
func (a *Agent) Registry() *prometheus.Registry { return a.metrics.reg }

// BookVM is one VM as the agent's book and its last inventory show it:
// what GET /v1/vms on the metrics listener answers.
type BookVM struct {
	protocol.VM
	// RetireDeadline is the retirement order's deadline, if any.
	RetireDeadline time.Time `json:"retire_deadline,omitzero"`
}

// Book is the answer of GET /v1/vms: the agent's run (epoch) and its VMs
// as last reported to the hub.
type Book struct {
	Site  string   `json:"site"`
	Epoch string   `json:"epoch"`
	HubID string   `json:"hub_id"`
	At    string   `json:"at"`
	VMs   []BookVM `json:"vms"`
}

// book answers GET /v1/vms: the VMs of the last inventory sent to the hub
// (nil before the first), with their retirement deadlines.
func (a *Agent) book() Book {
	a.mu.Lock()
	inv, hubID := a.lastInventory, a.hubID
	a.mu.Unlock()
	out := Book{Site: a.cfg.Site, Epoch: a.epoch, HubID: hubID, VMs: []BookVM{}}
	if inv == nil {
		return out
	}
	out.At = inv.TakenAt.Format(time.RFC3339Nano)
	for _, vm := range inv.VMs {
		bv := BookVM{VM: vm}
		if st, ok := a.vms.get(vm.ID); ok {
			// The inventory leaves the last check-in out (it would put
			// every VM in every delta); the operator's view has it.
			bv.RetireDeadline, bv.LastSeen = st.retireBy, st.lastSeen
		}
		out.VMs = append(out.VMs, bv)
	}
	return out
}

// serveMetrics serves /metrics and /v1/vms on addr until ctx ends. The
// listener is for the site's operators: keep it on loopback or a
// management network.
func (a *Agent) serveMetrics(ctx context.Context, addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.book())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.WithError(err).Warn("metrics listener")
		}
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return ln.Addr().String(), stop, nil
}
