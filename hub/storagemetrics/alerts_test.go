package storagemetrics

import (
	"bytes"
	"os"
	"regexp"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// alertsFile is the rule file shipped for the metrics of this package.
const alertsFile = "../../deploy/prometheus/gluster-alerts.yml"

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRules parses the alert rules strictly and checks that every
// rule is complete and uses only metrics this package exports.
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var rf ruleFile
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	exported := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for _, d := range allDescs {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		exported[m[1]] = true
	}
	metric := regexp.MustCompile(`canopy_gluster_[a-z_]+`)
	seen := map[string]bool{}
	want := []string{"GlusterVolumeDegraded", "GlusterVolumeDown", "GlusterSplitBrain", "GlusterGeoRepFaulty", "GlusterGeoRepLagging"}
	if len(rf.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("group %s: rule without alert or expr: %+v", g.Name, r)
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", r.Alert)
			}
			names := metric.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s: expr uses no canopy_gluster metric: %s", r.Alert, r.Expr)
			}
			for _, n := range names {
				if !exported[n] {
					t.Errorf("%s: expr uses %s, which the exporter does not export", r.Alert, n)
				}
			}
		}
	}
	for _, a := range want {
		if !seen[a] {
			t.Errorf("missing alert %s", a)
		}
	}
}
