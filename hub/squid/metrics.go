package squid

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// counters are the registry's event counts, kept with atomics so the query
// path never locks.
type counters struct {
	queries      atomic.Uint64
	accepted     atomic.Uint64
	rejected     atomic.Uint64
	verifyOK     atomic.Uint64
	verifyOrigin atomic.Uint64
	verifyFailed atomic.Uint64
}

var (
	descSquids = prometheus.NewDesc("canopy_squids", "Registered squids by state and whether they are offered to clients.",
		[]string{"state", "offered"}, nil)
	descSiteVerified = prometheus.NewDesc("canopy_squid_site_verified",
		"Verified squids offered to clients, by the site they belong to (squids registered without a site are not counted).",
		[]string{"site"}, nil)
	descQueries = prometheus.NewDesc("canopy_squid_queries_total", "Nearest-squid queries answered (JSON and WPAD).",
		nil, nil)
	descRegistrations = prometheus.NewDesc("canopy_squid_registrations_total", "Squid registrations by result.",
		[]string{"result"}, nil)
	descVerifications = prometheus.NewDesc("canopy_squid_verifications_total",
		"Squid verifications by outcome (ok, origin: the squid answered but the origin failed, failed).",
		[]string{"outcome"}, nil)
)

// Describe implements prometheus.Collector.
func (r *Registry) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSquids, descSiteVerified, descQueries, descRegistrations, descVerifications} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: register the Registry itself
// (reg.MustRegister(squids)) to export its metrics.
func (r *Registry) Collect(ch chan<- prometheus.Metric) {
	type key struct {
		state   squidreg.State
		offered bool
	}
	n := map[key]int{}
	bySite := map[string]int{}
	for _, s := range r.Squids() {
		n[key{s.State, s.Offered}]++
		if s.Site == "" {
			continue
		}
		bySite[s.Site] += 0 // a site whose squids all fail is exported at 0
		if s.State == squidreg.StateVerified && s.Offered {
			bySite[s.Site]++
		}
	}
	for site, c := range bySite {
		ch <- prometheus.MustNewConstMetric(descSiteVerified, prometheus.GaugeValue, float64(c), site)
	}
	for _, st := range []squidreg.State{squidreg.StatePending, squidreg.StateVerified, squidreg.StateOriginDown, squidreg.StateFailed, squidreg.StateUnverified} {
		for _, off := range []bool{true, false} {
			if off && !offered(st) {
				continue
			}
			o := "false"
			if off {
				o = "true"
			}
			ch <- prometheus.MustNewConstMetric(descSquids, prometheus.GaugeValue, float64(n[key{st, off}]), string(st), o)
		}
	}
	ch <- prometheus.MustNewConstMetric(descQueries, prometheus.CounterValue, float64(r.m.queries.Load()))
	ch <- prometheus.MustNewConstMetric(descRegistrations, prometheus.CounterValue, float64(r.m.accepted.Load()), "accepted")
	ch <- prometheus.MustNewConstMetric(descRegistrations, prometheus.CounterValue, float64(r.m.rejected.Load()), "rejected")
	ch <- prometheus.MustNewConstMetric(descVerifications, prometheus.CounterValue, float64(r.m.verifyOK.Load()), "ok")
	ch <- prometheus.MustNewConstMetric(descVerifications, prometheus.CounterValue, float64(r.m.verifyOrigin.Load()), "origin")
	ch <- prometheus.MustNewConstMetric(descVerifications, prometheus.CounterValue, float64(r.m.verifyFailed.Load()), "failed")
}
