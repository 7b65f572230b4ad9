package hub

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/canopy-grid/canopy/hub/planner"
)

type metrics struct {
	rejected     *prometheus.CounterVec
	sessions     *prometheus.CounterVec
	heartbeats   *prometheus.CounterVec
	boots        *prometheus.CounterVec
	retires      *prometheus.CounterVec
	bootFailures *prometheus.CounterVec
	pollFailures prometheus.Counter
	planSeconds  prometheus.Histogram
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
		pollFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "canopy_hub_demand_poll_failures_total",
			Help: "Failed polls of the job source."}),
		planSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "canopy_hub_plan_cycle_seconds",
			Help: "Time to poll demand and plan.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}),
	}
	reg.MustRegister(m.rejected, m.sessions, m.heartbeats, m.boots, m.retires, m.bootFailures, m.pollFailures, m.planSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &stateCollector{h: h})
	return m
}

// stateCollector exports the hub's current view at scrape time.
type stateCollector struct{ h *Hub }

var (
	descSiteUp   = prometheus.NewDesc("canopy_hub_site_connected", "1 if the site's agent is connected.", []string{"site"}, nil)
	descVMs      = prometheus.NewDesc("canopy_hub_vms", "VMs by site and state.", []string{"site", "state"}, nil)
	descIdle     = prometheus.NewDesc("canopy_hub_jobs_idle", "Idle jobs by group.", []string{"group"}, nil)
	descRunning  = prometheus.NewDesc("canopy_hub_jobs_running", "Running jobs by group.", []string{"group"}, nil)
	descFinished = prometheus.NewDesc("canopy_hub_jobs_finished", "Jobs finished since the job source started (simulated sources only).", nil, nil)
	descPending  = prometheus.NewDesc("canopy_hub_boots_pending", "Boots ordered that the cloud does not list yet.", []string{"site"}, nil)
)

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSiteUp, descVMs, descIdle, descRunning, descFinished, descPending} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	h.mu.Lock()
	now := h.now()
	snap := h.snapshotLocked(now, h.demand)
	finished := h.demand.Finished
	type siteRow struct {
		name      string
		connected bool
		pending   int
	}
	var sites []siteRow
	for _, s := range h.sites {
		sites = append(sites, siteRow{s.name, h.connectedLocked(s, now), len(s.pending)})
	}
	h.mu.Unlock()

	for _, s := range sites {
		up := 0.0
		if s.connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descSiteUp, prometheus.GaugeValue, up, s.name)
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(s.pending), s.name)
	}
	type key struct{ site, state string }
	counts := map[key]int{}
	for _, vm := range snap.VMs {
		counts[key{vm.Site, string(vm.State)}]++
	}
	for _, s := range sites {
		for _, st := range []planner.VMState{planner.VMBooting, planner.VMStarting, planner.VMIdle, planner.VMBusy, planner.VMRetiring, planner.VMError} {
			ch <- prometheus.MustNewConstMetric(descVMs, prometheus.GaugeValue, float64(counts[key{s.name, string(st)}]), s.name, string(st))
		}
	}
	idle, running := map[string]int{}, map[string]int{}
	for _, sh := range snap.Shapes {
		idle[sh.Group] += sh.Idle
		running[sh.Group] += sh.Running
	}
	for g, n := range idle {
		ch <- prometheus.MustNewConstMetric(descIdle, prometheus.GaugeValue, float64(n), g)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(running[g]), g)
	}
	ch <- prometheus.MustNewConstMetric(descFinished, prometheus.GaugeValue, float64(finished))
}
