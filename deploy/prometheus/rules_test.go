// Package prometheus_test checks Canopy's Prometheus alert rules: every
// metric they name is one the code exports, every alert has a promtool
// unit test, and (tag integration) promtool accepts and passes them.
package prometheus_test

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/canopy-grid/canopy/internal/metricnames"
)

// pending are metrics the rules name before the code exports them, with
// who adds them. The test fails once a pending metric exists, so that it
// is taken off this list.
var pending = map[string]string{}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type testFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name  string `yaml:"name"`
		Evals []struct {
			Alert string           `yaml:"alertname"`
			Exp   []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// exported are the series names hub, agent and vmagent export.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m, err := metricnames.FromSource(repoRoot(t), "hub", "agent", "vmagent")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) < 20 {
		t.Fatalf("only %d metric names found in the source: the scan is broken", len(m))
	}
	return metricnames.Series(m)
}

func TestRulesNameExportedMetrics(t *testing.T) {
	known := exported(t)
	for name, who := range pending {
		if known[name] {
			t.Errorf("%s is exported now (%s): take it off the pending list", name, who)
		}
	}
	for _, file := range []string{"alerts.yml", "gluster-alerts.yml"} {
		var rf ruleFile
		readYAML(t, file, &rf)
		n := 0
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				n++
				names := metricnames.InExpr(r.Expr)
				if len(names) == 0 {
					t.Errorf("%s %s: expression names no canopy_ metric: %q", file, r.Alert, r.Expr)
				}
				for _, name := range names {
					if !known[name] && pending[name] == "" {
						t.Errorf("%s %s: metric %s is not exported by hub, agent or vmagent", file, r.Alert, name)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no rules", file)
		}
	}
}

// TestEveryAlertTested: every alert of alerts.yml has a promtool test
// case in which it fires.
func TestEveryAlertTested(t *testing.T) {
	var rf ruleFile
	readYAML(t, "alerts.yml", &rf)
	var tf testFile
	readYAML(t, "alerts_test.yml", &tf)
	if len(tf.RuleFiles) != 1 || tf.RuleFiles[0] != "alerts.yml" {
		t.Fatalf("alerts_test.yml rule_files = %v, want [alerts.yml]", tf.RuleFiles)
	}
	fires := map[string]bool{}
	for _, tc := range tf.Tests {
		for _, ev := range tc.Evals {
			if len(ev.Exp) > 0 {
				fires[ev.Alert] = true
			}
		}
	}
	var missing []string
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			if !fires[r.Alert] {
				missing = append(missing, r.Alert)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("alerts without a firing promtool test in alerts_test.yml: %v", missing)
	}
	for a := range fires {
		if !alerts[a] {
			t.Errorf("alerts_test.yml tests %s, which alerts.yml does not define", a)
		}
	}
	// The parts the operations docs promise alerts for.
	for _, a := range []string{"CanopyHubDown", "CanopyAgentDisconnected", "CanopyCloudFrozen", "CanopyCloudBootsFailing", "CanopyDemandUnserved",
		"CanopyNoVerifiedSquid", "CanopyStorageDegraded", "CanopyGeoReplicationFaulty", "CanopyCredentialExpiring", "CanopyImageCopyFailing"} {
		if !alerts[a] {
			t.Errorf("alerts.yml lacks %s", a)
		}
	}
}
