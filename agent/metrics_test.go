package agent

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/driver"
)

// credDriver is a driver whose credential expiry is scripted; its other
// methods are not called by credentialLoop.
type credDriver struct {
	driver.Driver
	expiry time.Time
	ok     bool
	err    error
	called chan struct{}
}

func (d *credDriver) CredentialExpiry(context.Context) (time.Time, bool, error) {
	defer func() { d.called <- struct{}{} }()
	return d.expiry, d.ok, d.err
}

func TestCredentialExpiryMetric(t *testing.T) {
	exp := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		d    *credDriver
		want string
	}{
		{"known expiry", &credDriver{expiry: exp, ok: true}, `
# HELP canopy_agent_credential_expiry_timestamp_seconds When the cloud credential the agent authenticates with expires (Unix time); absent when it never expires or is unknown.
# TYPE canopy_agent_credential_expiry_timestamp_seconds gauge
canopy_agent_credential_expiry_timestamp_seconds{site="west"} 1.798859045e+09
`},
		{"never expires", &credDriver{ok: false}, ""},
		{"check fails", &credDriver{err: errors.New("keystone down")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := logrus.New()
			log.SetOutput(io.Discard)
			tc.d.called = make(chan struct{}, 1)
			a := &Agent{driver: tc.d, log: log.WithField("t", t.Name())}
			a.metrics = newMetrics("west", func() bool { return false })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { a.credentialLoop(ctx); close(done) }()
			select {
			case <-tc.d.called:
			case <-time.After(10 * time.Second):
				t.Fatal("credentialLoop did not ask the driver")
			}
			cancel()
			<-done
			if err := testutil.GatherAndCompare(a.metrics.reg, strings.NewReader(tc.want),
				"canopy_agent_credential_expiry_timestamp_seconds"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMetricsLint runs client_golang's metric linter over every metric
// of the agent's registry, each with a series.
func TestMetricsLint(t *testing.T) {
	m := newMetrics("west", func() bool { return true })
	m.credential.set(time.Unix(1798859045, 0), true)
	m.checkinsRefused.WithLabelValues("token").Inc()
	m.enrollsRefused.WithLabelValues("token").Inc()
	m.condorTokens.WithLabelValues("enroll").Inc()
	m.vmTLSErrors.WithLabelValues("tls").Inc()
	m.deletesRefused.WithLabelValues("jobs", "command").Inc()
	m.retiresRefused.WithLabelValues("unknown").Inc()
	m.deletes.WithLabelValues("command").Inc()
	m.inventories.WithLabelValues("full").Inc()
	m.stateSeconds.Observe(0.01)
	m.imageCopies.WithLabelValues("ok").Inc()
	n, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 19 {
		t.Errorf("%d metric families gathered, want 19 (one per metric): a metric without series is not linted", len(n))
	}
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestHubConnectedMetric: canopy_agent_hub_connected follows the agent's
// session status.
func TestHubConnectedMetric(t *testing.T) {
	a := &Agent{}
	a.metrics = newMetrics("west", func() bool { return a.Status().Connected })
	const head = `
# HELP canopy_agent_hub_connected 1 while the agent holds a session with the hub, 0 while it reconnects.
# TYPE canopy_agent_hub_connected gauge
`
	for _, tc := range []struct {
		connected bool
		want      string
	}{
		{false, `canopy_agent_hub_connected{site="west"} 0`},
		{true, `canopy_agent_hub_connected{site="west"} 1`},
		{false, `canopy_agent_hub_connected{site="west"} 0`},
	} {
		a.setStatus(func(s *Status) { s.Connected = tc.connected })
		if err := testutil.GatherAndCompare(a.metrics.reg, strings.NewReader(head+tc.want+"\n"), "canopy_agent_hub_connected"); err != nil {
			t.Errorf("connected=%v: %v", tc.connected, err)
		}
	}
}
