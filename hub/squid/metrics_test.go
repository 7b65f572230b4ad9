package squid_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/canopy-grid/canopy/internal/squidtest"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// TestSiteVerifiedMetric: canopy_squid_site_verified counts each site's
// verified squids, exports a site whose squids all failed at 0 (what the
// CanopyNoVerifiedSquid alert fires on), and leaves out squids without a
// site. The registry's metrics pass client_golang's linter.
func TestSiteVerifiedMetric(t *testing.T) {
	o := origin(t)
	r := newRegistry(t, verifyConfig(o.URL+"/cvmfs/atlas.cern.ch/.cvmfswhitelist"), nil, newClock())
	good, bad, global := squidtest.NewProxy(), squidtest.NewProxy(), squidtest.NewProxy()
	t.Cleanup(good.Close)
	t.Cleanup(bad.Close)
	t.Cleanup(global.Close)
	west, east := proxyReg(good, "west-1"), proxyReg(bad, "east-1")
	west.Site, east.Site = "west", "east"
	if err := r.ReplaceSource("test", []squidreg.Registration{west, east, proxyReg(global, "global")}); err != nil {
		t.Fatal(err)
	}
	bad.Close()
	r.VerifyAll(context.Background())

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r)
	const want = `
# HELP canopy_squid_site_verified Verified squids offered to clients, by the site they belong to (squids registered without a site are not counted).
# TYPE canopy_squid_site_verified gauge
canopy_squid_site_verified{site="east"} 0
canopy_squid_site_verified{site="west"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "canopy_squid_site_verified"); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
