// Package storagemetrics exports sites' GlusterFS storage reports
// (protocol.StorageReport) as Prometheus metrics, every series labelled
// with the site. The hub keeps the latest report of each site in an
// Exporter and registers it once.
package storagemetrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/canopy-grid/canopy/protocol"
)

// StatusValue is the number a status is exported as: up 0, partial 1,
// degraded 2, down 3, unknown -1. Alert rules compare against these.
func StatusValue(s protocol.StorageStatus) float64 {
	switch s {
	case protocol.StorageUp:
		return 0
	case protocol.StoragePartial:
		return 1
	case protocol.StorageDegraded:
		return 2
	case protocol.StorageDown:
		return 3
	}
	return -1
}

// WorkerStatuses are the geo-replication worker states exported as a
// state set (one series each, 1 for the current one); a state gluster
// prints that is not listed here is exported as "Other".
var WorkerStatuses = []string{"Active", "Passive", "Faulty", "Created", "Initializing", "Stopped", "Paused", "Other"}

const statusHelp = " (0 up, 1 partial, 2 degraded, 3 down, -1 unknown)."

var (
	siteLabels   = []string{"site"}
	volLabels    = []string{"site", "volume"}
	brickLabels  = []string{"site", "volume", "brick"}
	peerLabels   = []string{"site", "peer"}
	geoLabels    = []string{"site", "volume", "secondary"}
	workerLabels = []string{"site", "volume", "secondary", "brick", "status"}

	descSiteStatus  = prometheus.NewDesc("canopy_gluster_site_status", "Overall GlusterFS status of the site"+statusHelp, siteLabels, nil)
	descGlusterdUp  = prometheus.NewDesc("canopy_gluster_glusterd_up", "1 if the site's glusterd answered the agent's last collection.", siteLabels, nil)
	descReportTime  = prometheus.NewDesc("canopy_gluster_report_timestamp_seconds", "When the site's last storage report was taken (Unix time).", siteLabels, nil)
	descCycle       = prometheus.NewDesc("canopy_gluster_collect_duration_seconds", "How long the agent's last collection cycle took.", siteLabels, nil)
	descErrors      = prometheus.NewDesc("canopy_gluster_collect_errors", "Gluster commands that failed in the last collection cycle.", siteLabels, nil)
	descVolStatus   = prometheus.NewDesc("canopy_gluster_volume_status", "Health of a volume"+statusHelp, volLabels, nil)
	descOnline      = prometheus.NewDesc("canopy_gluster_bricks_online", "Bricks of the volume whose process is online.", volLabels, nil)
	descTotal       = prometheus.NewDesc("canopy_gluster_bricks", "Bricks of the volume.", volLabels, nil)
	descBrickOnline = prometheus.NewDesc("canopy_gluster_brick_online", "1 if the brick's process is online.", brickLabels, nil)
	descShdOnline   = prometheus.NewDesc("canopy_gluster_self_heal_daemons_online", "Self-heal daemons of the volume that are online.", volLabels, nil)
	descShdTotal    = prometheus.NewDesc("canopy_gluster_self_heal_daemons", "Self-heal daemons of the volume.", volLabels, nil)
	descHeal        = prometheus.NewDesc("canopy_gluster_heal_pending_entries", "Entries pending heal (per replica set the highest brick count, summed).", volLabels, nil)
	descHealing     = prometheus.NewDesc("canopy_gluster_heal_possibly_healing_entries", "Entries the self-heal daemon is working on.", volLabels, nil)
	descSplit       = prometheus.NewDesc("canopy_gluster_split_brain_entries", "Entries in split-brain.", volLabels, nil)
	descQuorum      = prometheus.NewDesc("canopy_gluster_quorum_lost", "1 if a replica set of the volume lost client quorum (writes fail).", volLabels, nil)
	descPeer        = prometheus.NewDesc("canopy_gluster_peer_connected", "1 if the peer is connected to the site's glusterd.", peerLabels, nil)
	descGeoStatus   = prometheus.NewDesc("canopy_gluster_georep_status", "Health of a geo-replication session"+statusHelp, geoLabels, nil)
	descWorker      = prometheus.NewDesc("canopy_gluster_georep_worker_status", "Geo-replication worker state set: 1 for the worker's current status.", workerLabels, nil)
	descLag         = prometheus.NewDesc("canopy_gluster_georep_lag_seconds", "Seconds since the session's Active workers last synced a change (largest); absent when none has.", geoLabels, nil)
	descCheckpoint  = prometheus.NewDesc("canopy_gluster_georep_checkpoint_completed", "1 if the session's checkpoint is completed, 0 if not; absent when no checkpoint is set.", geoLabels, nil)
	descCheckpointT = prometheus.NewDesc("canopy_gluster_georep_checkpoint_timestamp_seconds", "When the session's checkpoint was set (Unix time); absent when none is set.", geoLabels, nil)

	allDescs = []*prometheus.Desc{
		descSiteStatus, descGlusterdUp, descReportTime, descCycle, descErrors,
		descVolStatus, descOnline, descTotal, descBrickOnline, descShdOnline, descShdTotal,
		descHeal, descHealing, descSplit, descQuorum, descPeer,
		descGeoStatus, descWorker, descLag, descCheckpoint, descCheckpointT,
	}
)

// Exporter holds the latest storage report of each site and exports it on
// every scrape. It is safe for concurrent use.
type Exporter struct {
	mu      sync.RWMutex
	reports map[string]protocol.StorageReport
}

// NewExporter returns an Exporter with no sites. Register it with
// prometheus.MustRegister (or a registry of the hub's own).
func NewExporter() *Exporter {
	return &Exporter{reports: map[string]protocol.StorageReport{}}
}

// Update replaces the site's report.
func (e *Exporter) Update(site string, r protocol.StorageReport) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reports[site] = r
}

// Forget drops a site (its series disappear from the next scrape).
func (e *Exporter) Forget(site string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.reports, site)
}

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	e.mu.RLock()
	sites := make([]string, 0, len(e.reports))
	for s := range e.reports {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	reports := make([]protocol.StorageReport, len(sites))
	for i, s := range sites {
		reports[i] = e.reports[s]
	}
	e.mu.RUnlock()
	for i, site := range sites {
		collectReport(ch, site, reports[i])
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func collectReport(ch chan<- prometheus.Metric, site string, r protocol.StorageReport) {
	gauge(ch, descSiteStatus, StatusValue(r.Status), site)
	gauge(ch, descGlusterdUp, b2f(r.GlusterdUp), site)
	if !r.TakenAt.IsZero() {
		gauge(ch, descReportTime, float64(r.TakenAt.UnixMilli())/1000, site)
	}
	gauge(ch, descCycle, float64(r.CycleMillis)/1000, site)
	gauge(ch, descErrors, float64(len(r.Errors)), site)
	for _, v := range r.Volumes {
		gauge(ch, descVolStatus, StatusValue(v.Status), site, v.Name)
		if v.BricksOnline >= 0 {
			gauge(ch, descOnline, float64(v.BricksOnline), site, v.Name)
			for _, b := range v.Bricks {
				gauge(ch, descBrickOnline, b2f(b.Online), site, v.Name, b.Name)
			}
		}
		gauge(ch, descTotal, float64(v.BricksTotal), site, v.Name)
		if v.SelfHealTotal > 0 {
			gauge(ch, descShdOnline, float64(v.SelfHealOnline), site, v.Name)
			gauge(ch, descShdTotal, float64(v.SelfHealTotal), site, v.Name)
		}
		if v.HealPending >= 0 {
			gauge(ch, descHeal, float64(v.HealPending), site, v.Name)
		}
		if v.PossiblyHealing >= 0 {
			gauge(ch, descHealing, float64(v.PossiblyHealing), site, v.Name)
		}
		if v.SplitBrain >= 0 {
			gauge(ch, descSplit, float64(v.SplitBrain), site, v.Name)
		}
		if v.ReplicaCount > 1 {
			gauge(ch, descQuorum, b2f(v.QuorumLost), site, v.Name)
		}
	}
	for _, p := range r.Peers {
		name := p.Hostname
		if name == "" {
			name = p.UUID
		}
		gauge(ch, descPeer, b2f(p.Connected), site, name)
	}
	for _, g := range r.GeoReps {
		gauge(ch, descGeoStatus, StatusValue(g.Status), site, g.PrimaryVolume, g.Secondary)
		if g.LagSeconds >= 0 {
			gauge(ch, descLag, float64(g.LagSeconds), site, g.PrimaryVolume, g.Secondary)
		}
		if g.CheckpointSet {
			gauge(ch, descCheckpoint, b2f(g.CheckpointCompleted), site, g.PrimaryVolume, g.Secondary)
			if !g.CheckpointTime.IsZero() {
				gauge(ch, descCheckpointT, float64(g.CheckpointTime.Unix()), site, g.PrimaryVolume, g.Secondary)
			}
		}
		for _, w := range g.Workers {
			brick := w.PrimaryNode + ":" + w.PrimaryBrick
			current := "Other"
			for _, s := range WorkerStatuses {
				if s == w.Status {
					current = s
				}
			}
			for _, s := range WorkerStatuses {
				gauge(ch, descWorker, b2f(s == current), site, g.PrimaryVolume, g.Secondary, brick, s)
			}
		}
	}
}
