//go:build integration

package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub"
)

const e2eTrace = `
jobs:
  - group: atlas
    vm_type: el9
    cpus: 1
    memory_mib: 2000
    arrivals:
      - {at: 0s, count: 12, runtime: 4s}
  - group: belle
    vm_type: el9
    cpus: 2
    memory_mib: 3000
    arrivals:
      - {at: 1s, count: 2, runtime: 3s}
`

const e2eJobs = 14

// syncBuffer is a bytes.Buffer safe for the log-copying goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/",
		"github.com/canopy-grid/canopy/hub/cmd/hub",
		"github.com/canopy-grid/canopy/agent/cmd/agent",
		"github.com/canopy-grid/canopy/vmagent/cmd/vmagent")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// processesUnder lists PIDs whose command line mentions dir.
func processesUnder(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(dir)) {
			out = append(out, pid)
		}
	}
	return out
}

func TestEndToEnd(t *testing.T) {
	bin := buildBinaries(t)
	dir := t.TempDir()
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	sys, err := Start(ctx, Options{BinDir: bin, Dir: dir, Trace: e2eTrace, Output: &logs,
		Replace: map[string]string{"keep_alive: 8s": "keep_alive: 2s"}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			sys.Stop()
		}
		if t.Failed() {
			t.Logf("process logs:\n%s", logs.String())
		}
	}()

	sitesSeen := map[string]bool{}
	configSeen := false
	var allUp time.Duration
	deadline := time.Now().Add(150 * time.Second)
	var d hub.DemandStatus
	var vms []hub.VMStatus
	for {
		if time.Now().After(deadline) {
			t.Fatalf("trace did not complete: demand %+v, sites with VMs %v, VMs %+v", d, sitesSeen, vms)
		}
		if name, gone := sys.Exited(); gone {
			t.Fatalf("%s exited early", name)
		}
		if err := GetJSON(ctx, sys.HTTPURL+"/api/v1/demand", &d); err != nil {
			t.Fatal(err)
		}
		if err := GetJSON(ctx, sys.HTTPURL+"/api/v1/vms", &vms); err != nil {
			t.Fatal(err)
		}
		busy := false
		for _, vm := range vms {
			sitesSeen[vm.Site] = true
			if vm.State == "busy" {
				busy = true
			}
		}
		if busy && allUp == 0 {
			allUp = time.Since(start)
		}
		if !configSeen {
			// vmagent wrote its startd config inside its VM's root.
			matches, _ := filepath.Glob(filepath.Join(dir, "agent-*", "cloud", "vms", "*", "etc", "condor", "config.d", "50-canopy.conf"))
			for _, m := range matches {
				b, err := os.ReadFile(m)
				if err == nil && bytes.Contains(b, []byte("CanopyGroup = ")) && bytes.Contains(b, []byte("CONDOR_HOST = 127.0.0.1:9618")) {
					configSeen = true
				}
			}
		}
		if d.Finished == e2eJobs && len(vms) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.Logf("first job running after %s; trace done and all VMs retired after %s", allUp.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, s := range Sites {
		if !sitesSeen[s] {
			t.Errorf("no VM was booted on site %s (saw %v)", s, sitesSeen)
		}
	}
	if !configSeen {
		t.Error("no VM wrote a startd config")
	}
	var sites []hub.SiteStatus
	if err := GetJSON(ctx, sys.HTTPURL+"/api/v1/sites", &sites); err != nil {
		t.Fatal(err)
	}
	if len(sites) != 2 || !sites[0].Connected || !sites[1].Connected {
		t.Errorf("sites = %+v", sites)
	}
	// The lifecycle log and the logs show the whole life: boot, ready, retire, delete.
	for _, want := range []string{"booted", "VM ready", "retirement ordered", "deleted"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs never mention %q", want)
		}
	}

	pids := sys.PIDs()
	sys.Stop()
	stopped = true
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d still running after Stop", pid)
		}
	}
	if left := processesUnder(dir); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}

// TestRogueAgentRefused: an agent whose certificate comes from another CA
// is refused, and the hub's log says why.
func TestRogueAgentRefused(t *testing.T) {
	bin := buildBinaries(t)
	dir := t.TempDir()
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sys, err := Start(ctx, Options{BinDir: bin, Dir: dir, Trace: e2eTrace, Output: &logs})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Stop()
	// A second CA issues a certificate for "west".
	rogue := filepath.Join(dir, "rogue")
	if err := run(filepath.Join(bin, "hub"), "tls", "init", "--dir", rogue); err != nil {
		t.Fatal(err)
	}
	if err := run(filepath.Join(bin, "hub"), "tls", "issue-agent", "--dir", rogue, "--site", "west"); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "etc", "agent-west.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.NewReplacer(
		filepath.Join(dir, "pki", "agents", "west.crt"), filepath.Join(rogue, "agents", "west.crt"),
		filepath.Join(dir, "pki", "agents", "west.key"), filepath.Join(rogue, "agents", "west.key"),
		filepath.Join(dir, "agent-west"), filepath.Join(dir, "agent-rogue"),
	).Replace(string(cfg))
	// Its own ports: west's agent holds west's.
	bad = regexp.MustCompile(`(?m)^((vm|gossip|metrics)_listen: 127\.0\.0\.1):\d+`).ReplaceAllString(bad, "${1}:0")
	path := filepath.Join(dir, "etc", "agent-rogue.yaml")
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := sys.start(Options{Output: &logs}, "rogue", filepath.Join(bin, "agent"), "run", "--config", path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "certificate not signed by this hub's CA") {
		if time.Now().After(deadline) {
			t.Fatalf("hub never logged the refusal:\n%s", logs.String())
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
