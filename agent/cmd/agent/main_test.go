package main

import (
	"path/filepath"
	"testing"

	"github.com/canopy-grid/canopy/deploy/config"
)

// TestExampleConfigs keeps the documented example configs valid.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../../../deploy/examples/agent-*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("example agent configs: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var fc fileConfig
			if err := config.Load(f, &fc); err != nil {
				t.Fatal(err)
			}
			if fc.Site == "" || fc.Driver == "" {
				t.Fatalf("decoded %+v", fc)
			}
			switch fc.Driver {
			case "local":
				if fc.Local == nil || fc.Local.Validate() != nil {
					t.Fatalf("local section: %+v", fc.Local)
				}
			case "openstack":
				if fc.OpenStack == nil || fc.OpenStack.Validate() != nil {
					t.Fatalf("openstack section invalid: %v", fc.OpenStack.Validate())
				}
				if fc.Gluster == nil {
					t.Fatal("gluster section lost")
				}
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	if err := run([]string{"fly"}); err == nil {
		t.Fatal("unknown command accepted")
	}
}
