package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/canopy-grid/canopy/deploy/config"
)

// TestExamplesDocumentEveryKey: every key the agent's config file accepts
// is set or shown (commented out) in at least one of the example agent
// configs in deploy/examples/ (agent-openstack.yaml for a real cloud,
// agent-west.yaml and agent-east.yaml for the demo's local clouds).
func TestExamplesDocumentEveryKey(t *testing.T) {
	keys := config.Keys(reflect.TypeFor[fileConfig]())
	if len(keys) < 30 {
		t.Fatalf("only %d keys found in the agent's config: the walk is broken", len(keys))
	}
	files, err := filepath.Glob("../../../deploy/examples/agent-*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example agent configs (%v)", err)
	}
	var all []config.Mentions
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := config.Mentioned(f, b)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, m)
	}
	for _, k := range keys {
		found := false
		for _, m := range all {
			found = found || m.Has(k)
		}
		if !found {
			t.Errorf("no deploy/examples/agent-*.yaml mentions %s: add it with a comment saying what it does", k)
		}
	}
}
