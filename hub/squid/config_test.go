package squid_test

import (
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// The registry's configuration and an agent's list of squids decode with
// the project's strict YAML decoder, as the hub and agent configs hold them.
func TestYAMLConfig(t *testing.T) {
	var doc struct {
		Squid  squid.Config            `yaml:"squid"`
		Squids []squidreg.Registration `yaml:"squids"`
	}
	in := `
squid:
  distance_weight: 0.5
  load_exponent: 1
  expiry: 180s
  verify_every: 60s
  verify_timeout: 5s
  verify_concurrency: 32
  advertise_token: s3cret
  probes:
    cvmfs: {url: "http://cvmfs-stratum-one.cern.ch/cvmfs/atlas.cern.ch/.cvmfswhitelist", expect: "Natlas.cern.ch"}
    frontier: {url: "http://atlasfrontier-ai.cern.ch:8000/atlr/Frontier/type=frontier_request:1:DEFAULT&encoding=BLOB&p1=eNoLdvVxdQYABRcBrg__"}
squids:
  - {name: west-squid, host: 10.0.0.5, port: 3128, kinds: [cvmfs, frontier], access: local-only, site: west, latitude: 48.4, longitude: -123.4}
  - {host: squid.example.org, port: 3128, kinds: [cvmfs], access: same-domain, domain: example.org, geoip: 192.0.2.8, cache_manager: true}
`
	if err := config.Decode("test.yaml", []byte(in), &doc); err != nil {
		t.Fatal(err)
	}
	cfg := doc.Squid.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Expiry != 180*time.Second || cfg.Probes[squidreg.KindCVMFS].Expect != "Natlas.cern.ch" || len(cfg.Probes) != 2 {
		t.Errorf("config %+v", cfg)
	}
	if len(doc.Squids) != 2 || *doc.Squids[0].Latitude != 48.4 || !doc.Squids[1].CacheManager {
		t.Fatalf("squids %+v", doc.Squids)
	}
	for _, s := range doc.Squids {
		if _, err := s.Normalize(); err != nil {
			t.Error(err)
		}
	}
	bad := strings.Replace(in, "verify_every", "verify_evry", 1)
	if err := config.Decode("test.yaml", []byte(bad), &doc); err == nil || !strings.Contains(err.Error(), "verify_evry") {
		t.Errorf("typo accepted: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []squid.Config{
		{DistanceWeight: 1.5},
		{LoadExponent: -1},
		{VerifyConcurrency: 5000},
		{MaxAnswer: 500},
		{DefaultAnswer: 30, MaxAnswer: 20},
		{Probes: map[squidreg.Kind]squid.Probe{"cvmfs": {URL: "https://x"}}},
		{Probes: map[squidreg.Kind]squid.Probe{"ftp": {URL: "http://x"}}},
	} {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
