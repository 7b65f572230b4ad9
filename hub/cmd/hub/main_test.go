package main

import (
	"bytes"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/hub"
	"github.com/canopy-grid/canopy/protocol/vmproto"
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

// TestTLSIssueVMEndpoint: --vm-host issues the VM endpoint certificate
// next to the agent's (or alone with --vm-only): server authentication for
// those hosts, the site's name, and a key only its owner reads; the VM's
// check (vmproto.CheckEndpointCert) accepts it for those hosts only.
func TestTLSIssueVMEndpoint(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"tls", "init", "--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		want    []string // files written
		wantErr string
	}{
		{"agent and VM endpoint", []string{"--site", "west", "--vm-host", "10.0.0.5", "--vm-host", "agent.west.example"},
			[]string{"west.crt", "west.key", "west-vm.crt", "west-vm.key", "ca.crt"}, ""},
		{"VM endpoint only", []string{"--site", "east", "--vm-host", "127.0.0.1", "--vm-only"}, []string{"east-vm.crt", "east-vm.key"}, ""},
		{"vm-only without hosts", []string{"--site", "east", "--vm-only"}, nil, "--vm-only needs"},
		{"bad host", []string{"--site", "east", "--vm-host", "a b"}, nil, "neither an IP address nor a DNS name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			outDir := filepath.Join(t.TempDir(), "out")
			err := run(append([]string{"tls", "issue-agent", "--dir", dir, "--out", outDir}, tc.args...), &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.want {
				st, err := os.Stat(filepath.Join(outDir, f))
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s mode %v", f, st.Mode())
				}
			}
			entries, _ := os.ReadDir(outDir)
			if len(entries) != len(tc.want)+1 && len(entries) != len(tc.want) {
				t.Errorf("%d files written, want %v", len(entries), tc.want)
			}
		})
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(t.TempDir(), "west")
	if err := run([]string{"tls", "issue-agent", "--dir", dir, "--out", outDir, "--site", "west", "--vm-host", "10.0.0.5", "--vm-host", "agent.west.example"}, &out); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(outDir, "west-vm.crt"), filepath.Join(outDir, "west-vm.key"))
	if err != nil {
		t.Fatal(err)
	}
	for host, ok := range map[string]bool{"10.0.0.5": true, "agent.west.example": true, "10.0.0.6": false} {
		if err := vmproto.CheckEndpointCert(cert, string(ca), "west", host); (err == nil) != ok {
			t.Errorf("host %s: %v", host, err)
		}
	}
	if err := vmproto.CheckEndpointCert(cert, string(ca), "east", "10.0.0.5"); err == nil {
		t.Error("west's VM endpoint certificate accepted for east")
	}
	agentCert, err := tls.LoadX509KeyPair(filepath.Join(outDir, "west.crt"), filepath.Join(outDir, "west.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := vmproto.CheckEndpointCert(agentCert, string(ca), "west", "10.0.0.5"); err == nil {
		t.Error("the agent's client certificate accepted as its VM endpoint certificate")
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
