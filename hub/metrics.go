package hub

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/canopy-grid/canopy/hub/planner"
)

type metrics struct {
	rejected      *prometheus.CounterVec
	sessions      *prometheus.CounterVec
	heartbeats    *prometheus.CounterVec
	boots         *prometheus.CounterVec
	retires       *prometheus.CounterVec
	bootFailures  *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	sendOverflows *prometheus.CounterVec
	apiRefused    *prometheus.CounterVec
	deltas        *prometheus.CounterVec
	resyncs       *prometheus.CounterVec
	pollFailures  prometheus.Counter
	planSeconds   prometheus.Histogram
	cmdSeconds    prometheus.Histogram
	storeCommits  prometheus.Counter
	storeFailures prometheus.Counter
	storeSeconds  prometheus.Histogram

	// handshakesFailed counts agent handshakes that did not complete.
	handshakesFailed *prometheus.CounterVec

	imageMetrics
}

func newMetrics(reg *prometheus.Registry, h *Hub) *metrics {
	m := &metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_agent_connections_refused_total",
			Help: "Agent connections refused, by reason."}, []string{"reason"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_agent_sessions_total",
			Help: "Agent sessions established, by site."}, []string{"site"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_agent_heartbeats_total",
			Help: "Heartbeats received, by site."}, []string{"site"}),
		boots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_vm_boots_ordered_total",
			Help: "VM boots ordered, by site."}, []string{"site"}),
		retires: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_vm_retirements_ordered_total",
			Help: "VM retirements ordered, by site."}, []string{"site"}),
		bootFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_boot_failures_total",
			Help: "Failed boot commands, by site and error class."}, []string{"site", "class"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_agent_refusals_total",
			Help: "Servers an agent refused to act on (a delete of a VM reporting jobs, another hub's server), by site."}, []string{"site"}),
		sendOverflows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_agent_send_overflows_total",
			Help: "Agent sessions closed because their send queue was full, by site."}, []string{"site"}),
		apiRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_api_refused_total",
			Help: "Admin API requests refused, by reason."}, []string{"reason"}),
		deltas: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_inventory_deltas_total",
			Help: "Inventory deltas applied, by site."}, []string{"site"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_inventory_resyncs_total",
			Help: "Full inventories asked for after a delta could not be applied, by site."}, []string{"site"}),
		pollFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_hub_demand_poll_failures_total",
			Help: "Failed polls of the job source."}),
		planSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "canopy_hub_plan_cycle_seconds",
			Help: "Time of one control cycle: poll demand, plan, save, send.", Buckets: prometheus.ExponentialBuckets(0.0005, 1.5, 24)}),
		cmdSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "canopy_hub_command_seconds",
			Help: "Time from queueing a command for an agent to its result arriving.", Buckets: prometheus.ExponentialBuckets(0.0002, 1.5, 28)}),
		storeCommits: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_hub_store_commits_total",
			Help: "Transactions written to the hub's state file."}),
		storeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_hub_store_failures_total",
			Help: "Failed writes of the hub's state file (the cycle's commands were not sent)."}),
		storeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "canopy_hub_store_commit_seconds",
			Help: "Time to write one transaction to the hub's state file.", Buckets: prometheus.ExponentialBuckets(0.0002, 4, 10)}),
	}
	reg.MustRegister(m.rejected, m.sessions, m.heartbeats, m.boots, m.retires, m.bootFailures, m.refusals, m.sendOverflows,
		m.apiRefused, m.deltas, m.resyncs, m.pollFailures, m.planSeconds, m.cmdSeconds, m.storeCommits, m.storeFailures, m.storeSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &stateCollector{h: h})
	m.handshakesFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canopy_hub_agent_handshakes_failed_total",
		Help: "Agent QUIC handshakes that did not complete, by reason: timeout (stalled or half-open), tls (refused or no certificate, no common ALPN), peer_closed, other."},
		[]string{"reason"})
	for _, r := range handshakeReasons {
		m.handshakesFailed.WithLabelValues(r) // every reason is exported from the start, at 0
	}
	reg.MustRegister(m.handshakesFailed)
	m.imageMetrics = newImageMetrics(reg)
	return m
}

// stateCollector exports the hub's last published status at scrape time.
type stateCollector struct{ h *Hub }

var (
	descSiteUp   = prometheus.NewDesc("canopy_hub_site_connected", "1 if the site's agent is connected.", []string{"site"}, nil)
	descVMs      = prometheus.NewDesc("canopy_hub_vms", "VMs by site and state.", []string{"site", "state"}, nil)
	descIdle     = prometheus.NewDesc("canopy_hub_jobs_idle", "Idle jobs by group.", []string{"group"}, nil)
	descRunning  = prometheus.NewDesc("canopy_hub_jobs_running", "Running jobs by group.", []string{"group"}, nil)
	descFinished = prometheus.NewDesc("canopy_hub_jobs_finished", "Jobs finished since the job source started (simulated sources only).", nil, nil)
	descPending  = prometheus.NewDesc("canopy_hub_boots_pending", "Boots ordered that the cloud does not list yet.", []string{"site"}, nil)
	descPoolView = prometheus.NewDesc("canopy_hub_pool_view_ok", "1 if the job source's view of the VMs in the pool is usable evidence this cycle, 0 if it failed or is implausible (nothing is retired on it).", nil, nil)
	descState    = prometheus.NewDesc("canopy_hub_site_state", "The planner's state for the site's cloud: 1 for its current state (ok, disconnected, disabled, paused, frozen, backoff), 0 for the others.", []string{"site", "state"}, nil)
	descEvidence = prometheus.NewDesc("canopy_hub_vms_by_evidence", "Canopy's VMs by what fresh evidence says of them: registered, unregistered, or unknown (kept until evidence returns or a deadline passes).", []string{"evidence"}, nil)
)

// cloudStates are the values of canopy_hub_site_state's state label.
var cloudStates = []planner.CloudState{planner.CloudOK, planner.CloudDisconnected, planner.CloudDisabled,
	planner.CloudPaused, planner.CloudFrozen, planner.CloudBackoff}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSiteUp, descVMs, descIdle, descRunning, descFinished, descPending, descPoolView, descEvidence, descState} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.h.Status()
	type key struct{ site, state string }
	counts := map[key]int{}
	for _, vm := range st.VMs {
		counts[key{vm.Site, string(vm.State)}]++
	}
	for _, s := range st.Sites {
		up := 0.0
		if s.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descSiteUp, prometheus.GaugeValue, up, s.Name)
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.Pending), s.Name)
		if s.State != "" {
			for _, cs := range cloudStates {
				v := 0.0
				if s.State == cs {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, s.Name, string(cs))
			}
		}
		for _, state := range []planner.VMState{planner.VMBooting, planner.VMStarting, planner.VMIdle, planner.VMBusy, planner.VMRetiring, planner.VMError} {
			ch <- prometheus.MustNewConstMetric(descVMs, prometheus.GaugeValue, float64(counts[key{s.Name, string(state)}]), s.Name, string(state))
		}
	}
	idle, running := map[string]int{}, map[string]int{}
	for _, sh := range st.Demand.Shapes {
		idle[sh.Group] += sh.Idle
		running[sh.Group] += sh.Running
	}
	for g, n := range idle {
		ch <- prometheus.MustNewConstMetric(descIdle, prometheus.GaugeValue, float64(n), g)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(running[g]), g)
	}
	ch <- prometheus.MustNewConstMetric(descFinished, prometheus.GaugeValue, float64(st.Demand.Finished))
	ok := 0.0
	if st.Evidence.PoolView == "" || st.Evidence.PoolView == "ok" {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(descPoolView, prometheus.GaugeValue, ok)
	n := st.Evidence.Counts
	ch <- prometheus.MustNewConstMetric(descEvidence, prometheus.GaugeValue, float64(n.Registered), "registered")
	ch <- prometheus.MustNewConstMetric(descEvidence, prometheus.GaugeValue, float64(n.Unregistered), "unregistered")
	ch <- prometheus.MustNewConstMetric(descEvidence, prometheus.GaugeValue, float64(n.Unknown), "unknown")
}
