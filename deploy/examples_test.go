package deploy_test

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/hub"
)

// TestHubExampleDocumentsEveryKey: every key the hub's config accepts is
// set or shown (commented out) in deploy/examples/hub.yaml, the file the
// README sends admins to.
func TestHubExampleDocumentsEveryKey(t *testing.T) {
	keys := config.Keys(reflect.TypeFor[hub.Config]())
	if len(keys) < 30 {
		t.Fatalf("only %d keys found in hub.Config: the walk is broken", len(keys))
	}
	b, err := os.ReadFile(filepath.Join("examples", "hub.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := config.Mentioned("hub.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !m.Has(k) {
			t.Errorf("deploy/examples/hub.yaml does not mention %s: add it with a comment saying what it does", k)
		}
	}
}
