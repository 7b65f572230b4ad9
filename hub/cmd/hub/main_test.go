package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/hub"
)

func TestExampleHubConfig(t *testing.T) {
	var cfg hub.Config
	if err := config.Load("../../../deploy/examples/hub.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Sites["west"].Caps.Cores != 8 || cfg.Planner.KeepAlive == 0 || cfg.Groups["atlas"].Share != 2 {
		t.Fatalf("decoded %+v", cfg)
	}
}

func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"tls", "init", "--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"tls", "init", "--dir", dir}, &out); err == nil {
		t.Fatal("second init overwrote the CA")
	}
	if err := run([]string{"tls", "issue-agent", "--dir", dir, "--site", "west"}, &out); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"tls", "issue-agent", "--dir", dir, "--site", "Bad Name"}, &out); err == nil {
		t.Fatal("bad site name accepted")
	}
	for _, f := range []string{"ca.crt", "ca.key", "hub.crt", "hub.key", "agents/west.crt", "agents/west.key", "agents/ca.crt"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".key") && st.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s is readable by others: %v", f, st.Mode())
		}
	}
	if !strings.Contains(out.String(), "serial") {
		t.Fatalf("output %q", out.String())
	}
}

func TestConfigErrorNamesFileLineKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(p, []byte("id: x\nplaner:\n  keep_alive: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"run", "--config", p}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), p+":2: key \"planer\": unknown key") {
		t.Fatalf("err = %v", err)
	}
}
