package agent

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CredentialChecker is the optional driver interface that tells when the
// cloud credential the driver authenticates with expires (the openstack
// driver implements it from Keystone). ok is false when it never expires
// or the expiry is unknown.
type CredentialChecker interface {
	CredentialExpiry(ctx context.Context) (expiry time.Time, ok bool, err error)
}

// credentialCheckEvery is how often the agent asks the driver for its
// credential's expiry (one Keystone call each).
const credentialCheckEvery = time.Hour

// credentialCollector exports the last known credential expiry.
type credentialCollector struct {
	d *prometheus.Desc
	// expiry is the expiry in Unix seconds; NaN: unknown or never.
	expiry atomic.Uint64
}

func newCredentialCollector(site string) *credentialCollector {
	c := &credentialCollector{d: prometheus.NewDesc("canopy_agent_credential_expiry_timestamp_seconds",
		"When the cloud credential the agent authenticates with expires (Unix time); absent when it never expires or is unknown.",
		nil, prometheus.Labels{"site": site})}
	c.expiry.Store(math.Float64bits(math.NaN()))
	return c
}

func (c *credentialCollector) set(t time.Time, ok bool) {
	v := math.NaN()
	if ok {
		v = float64(t.Unix())
	}
	c.expiry.Store(math.Float64bits(v))
}

// Describe implements prometheus.Collector.
func (c *credentialCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.d }

// Collect implements prometheus.Collector.
func (c *credentialCollector) Collect(ch chan<- prometheus.Metric) {
	v := math.Float64frombits(c.expiry.Load())
	if math.IsNaN(v) {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.d, prometheus.GaugeValue, v)
}

// credentialLoop asks the driver for its credential's expiry now and every
// credentialCheckEvery until ctx ends; drivers without the interface are
// left alone. A failed check keeps the last known value.
func (a *Agent) credentialLoop(ctx context.Context) {
	cc, ok := a.driver.(CredentialChecker)
	if !ok {
		return
	}
	t := time.NewTicker(credentialCheckEvery)
	defer t.Stop()
	for {
		exp, known, err := cc.CredentialExpiry(ctx)
		if err != nil {
			a.log.WithError(err).Warn("credential expiry check failed")
		} else {
			a.metrics.credential.set(exp, known)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
