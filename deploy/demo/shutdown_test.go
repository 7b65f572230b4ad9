//go:build integration

package demo

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub"
)

// shutdownTrace keeps jobs running for the whole test, so VMs are busy
// and connected when the signals arrive.
const shutdownTrace = `
jobs:
  - group: atlas
    vm_type: el9
    cpus: 1
    memory_mib: 2000
    arrivals:
      - {at: 0s, count: 12, runtime: 30m}
  - group: belle
    vm_type: el9
    cpus: 2
    memory_mib: 3000
    arrivals:
      - {at: 0s, count: 4, runtime: 30m}
`

// TestShutdownOnSIGTERM starts a real hub and both agents with local-cloud
// VMs running jobs, then sends SIGTERM to the hub, and afterwards to one
// agent. Each must exit with status 0 within its bound; the agent's VMs
// outlive it, as in a real cloud.
func TestShutdownOnSIGTERM(t *testing.T) {
	bin := buildBinaries(t)
	dir := t.TempDir()
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sys, err := Start(ctx, Options{BinDir: bin, Dir: dir, Trace: shutdownTrace, Output: &logs})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sys.Stop()
		if t.Failed() {
			t.Logf("process logs:\n%s", logs.String())
		}
	}()

	// Both sites connected, each with a VM that checked in and runs a job.
	deadline := time.Now().Add(150 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("the sites never both had busy VMs")
		}
		if name, gone := sys.Exited(); gone {
			t.Fatalf("%s exited early", name)
		}
		var sites []hub.SiteStatus
		var vms []hub.VMStatus
		if err := GetJSON(ctx, sys.HTTPURL+"/api/v1/sites", &sites); err != nil {
			t.Fatal(err)
		}
		if err := GetJSON(ctx, sys.HTTPURL+"/api/v1/vms", &vms); err != nil {
			t.Fatal(err)
		}
		busy := map[string]bool{}
		for _, vm := range vms {
			if vm.State == "busy" {
				busy[vm.Site] = true
			}
		}
		connected := len(sites) == len(Sites)
		for _, s := range sites {
			connected = connected && s.Connected
		}
		if connected && len(busy) == len(Sites) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}

	hubProc, west := sys.proc("hub"), sys.proc("west")
	if hubProc == nil || west == nil {
		t.Fatal("hub or agent west not started")
	}
	hubTook := stopOne(t, hubProc, hubStopLimit)
	if !strings.Contains(logs.String(), "hub stopping: closing agent sessions") {
		t.Error("the hub never logged that it was closing its agents' sessions")
	}
	if name, gone := sys.Exited(); gone && name != "hub" {
		t.Errorf("agent %s exited when the hub stopped", name)
	}

	westVMs := filepath.Join(dir, "agent-west")
	if len(vmagentsUnder(westVMs)) == 0 {
		t.Fatalf("no VM of west runs before its agent is stopped")
	}
	agentTook := stopOne(t, west, agentStopLimit)
	// Its VMs outlive it, as in a real cloud (a restarted agent adopts
	// them); the deferred Stop ends them.
	if len(vmagentsUnder(westVMs)) == 0 {
		t.Error("west's VMs died with their agent")
	}
	t.Logf("SIGTERM to exit: hub %s (limit %s), agent west %s (limit %s)",
		hubTook.Round(time.Millisecond), hubStopLimit, agentTook.Round(time.Millisecond), agentStopLimit)
}

// proc returns the process started under name.
func (s *System) proc(name string) *proc {
	for _, p := range s.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// stopOne sends SIGTERM to p and returns how long it took to exit; it
// fails the test unless p exits with status 0 within limit (then it is
// killed).
func stopOne(t *testing.T, p *proc, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Errorf("%s still running %s after SIGTERM", p.name, limit)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return time.Since(start)
	}
	took := time.Since(start)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exited with status %d after SIGTERM (%s), want 0", p.name, code, p.cmd.ProcessState)
	}
	return took
}

// vmagentsUnder lists the vmagent processes whose command line mentions
// dir.
func vmagentsUnder(dir string) []int {
	var out []int
	for _, pid := range processesUnder(dir) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil && strings.Contains(string(b), "vmagent") {
			out = append(out, pid)
		}
	}
	return out
}
