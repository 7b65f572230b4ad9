//go:build integration

package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub"
)

// restartTrace keeps the VMs busy for longer than the test runs.
const restartTrace = `
jobs:
  - group: atlas
    vm_type: el9
    cpus: 1
    memory_mib: 2000
    arrivals:
      - {at: 0s, count: 4, runtime: 20m}
`

// testJobsFile is where local test VMs read their fake job count (vmagent
// --test-jobs-file, test only), under their root.
const testJobsFile = "run/canopy/test-jobs"

// agentBook is the part of an agent's GET /v1/vms the test compares.
type agentBook struct {
	Epoch string `json:"epoch"`
	VMs   []struct {
		ID          string    `json:"id"`
		Name        string    `json:"name"`
		Foreign     bool      `json:"foreign"`
		Ready       bool      `json:"ready"`
		ReadyAt     time.Time `json:"ready_at"`
		LastSeen    time.Time `json:"last_seen"`
		Retiring    bool      `json:"retiring"`
		RetireState string    `json:"retire_state"`
		Jobs        *struct {
			Running int `json:"running"`
			Claimed int `json:"claimed"`
		} `json:"jobs"`
	} `json:"vms"`
}

// localVM is a VM of a local cloud as its record in its root says.
type localVM struct {
	root string
	ID   string `json:"id"`
	Name string `json:"name"`
	PID  int    `json:"pid"`
}

func localVMs(t *testing.T, cloudDir string) map[string]localVM {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(cloudDir, "vms", "*", "server.json"))
	out := map[string]localVM{}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		var v localVM
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		v.root = filepath.Dir(m)
		out[v.ID] = v
	}
	return out
}

// TestAgentRestartReadoptsVMs is the "never lose a running job" scenario
// with the real binaries: site west's VMs report running jobs; its agent
// is killed with SIGKILL and started again. The cloud keeps every VM (same
// processes, same server ids, none deleted), and the new agent reports
// every VM with the same readiness, ready time, jobs and retirement state,
// with check-ins flowing again, within seconds (measured and logged).
func TestAgentRestartReadoptsVMs(t *testing.T) {
	bin := buildBinaries(t)
	dir := t.TempDir()
	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sys, err := Start(ctx, Options{BinDir: bin, Dir: dir, Trace: restartTrace, Output: &logs,
		AgentReplace: map[string]string{"vm_args: [--no-condor,": "vm_args: [--no-condor, --test-jobs-file, /" + testJobsFile + ","}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sys.Stop()
		if left := processesUnder(dir); len(left) > 0 {
			t.Errorf("processes left behind: %v", left)
		}
		if t.Failed() {
			t.Logf("process logs:\n%s", logs.String())
		}
	}()
	west := sys.AgentURLs["west"]
	book := func() agentBook {
		var b agentBook
		if err := GetJSON(ctx, west+"/v1/vms", &b); err != nil {
			return agentBook{}
		}
		return b
	}
	poll := func(limit time.Duration, what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > limit {
				t.Fatalf("timed out after %s waiting for %s", limit, what)
			}
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		return time.Since(start)
	}

	// West boots VMs; they check in.
	cloud := sys.CloudDir("west")
	var vms map[string]localVM
	poll(120*time.Second, "ready VMs on west", func() bool {
		vms = localVMs(t, cloud)
		b := book()
		ready := 0
		for _, vm := range b.VMs {
			if vm.Ready && !vm.Foreign {
				ready++
			}
		}
		return len(vms) > 0 && ready == len(vms)
	})
	// They become busy: two jobs each, by their own vmagent's count.
	makeBusy := func() {
		for _, vm := range vms {
			p := filepath.Join(vm.root, testJobsFile)
			if _, err := os.Stat(p); err == nil {
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("2 2\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var before agentBook
	poll(60*time.Second, "every west VM to report 2 jobs to its agent and the hub", func() bool {
		vms = localVMs(t, cloud) // the hub may have booted more meanwhile
		makeBusy()
		before = book()
		if len(before.VMs) != len(vms) {
			return false
		}
		for _, vm := range before.VMs {
			if vm.Jobs == nil || vm.Jobs.Running != 2 || vm.Jobs.Claimed != 2 {
				return false
			}
		}
		var hv []hub.VMStatus
		if err := GetJSON(ctx, sys.HTTPURL+"/api/v1/vms", &hv); err != nil {
			return false
		}
		busy := 0
		for _, v := range hv {
			if _, ok := vms[v.ID]; ok && v.RunningJobs == 2 {
				busy++
			}
		}
		return busy == len(vms)
	})
	t.Logf("west runs %d VMs, each reporting 2 jobs", len(vms))

	// kill -9 the west agent.
	var agent *proc
	for _, p := range sys.procs {
		if p.name == "west" {
			agent = p
		}
	}
	if err := syscall.Kill(agent.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-agent.done
	for id, vm := range vms {
		if syscall.Kill(vm.PID, 0) != nil {
			t.Fatalf("VM %s (pid %d) died with its agent", id, vm.PID)
		}
	}

	// Start it again, from the same config and state.
	restarted := time.Now()
	if err := sys.start(Options{Output: &logs}, "west", filepath.Join(bin, "agent"), "run", "--config",
		filepath.Join(dir, "etc", "agent-west.yaml")); err != nil {
		t.Fatal(err)
	}
	var after agentBook
	readopted := poll(30*time.Second, "the restarted agent to report every VM as before, with check-ins flowing", func() bool {
		after = book()
		if after.Epoch == "" || after.Epoch == before.Epoch || len(after.VMs) != len(before.VMs) {
			return false
		}
		for i, vm := range after.VMs {
			old := before.VMs[i]
			if vm.ID != old.ID || vm.Ready != old.Ready || !vm.ReadyAt.Equal(old.ReadyAt) || vm.Retiring != old.Retiring ||
				vm.RetireState != old.RetireState || vm.Jobs == nil || *vm.Jobs != *old.Jobs || !vm.LastSeen.After(restarted) {
				return false
			}
		}
		return true
	})
	t.Logf("agent restart -> all %d VMs re-adopted (same ids, ready times, jobs; check-ins flowing): %s",
		len(vms), readopted.Round(10*time.Millisecond))

	// The hub sees them busy again, on a connected site.
	poll(30*time.Second, "the hub to see west connected with its VMs busy", func() bool {
		var sites []hub.SiteStatus
		var hv []hub.VMStatus
		if GetJSON(ctx, sys.HTTPURL+"/api/v1/sites", &sites) != nil || GetJSON(ctx, sys.HTTPURL+"/api/v1/vms", &hv) != nil {
			return false
		}
		connected := false
		for _, s := range sites {
			if s.Name == "west" && s.Connected {
				connected = true
			}
		}
		busy := 0
		for _, v := range hv {
			if _, ok := vms[v.ID]; ok && v.RunningJobs == 2 {
				busy++
			}
		}
		return connected && busy == len(vms)
	})

	// The cloud's own state: the same VMs, processes and roots.
	now := localVMs(t, cloud)
	if len(now) != len(vms) {
		t.Fatalf("the cloud holds %d VMs after the restart, %d before", len(now), len(vms))
	}
	for id, vm := range vms {
		n, ok := now[id]
		if !ok || n.PID != vm.PID || syscall.Kill(vm.PID, 0) != nil {
			t.Fatalf("VM %s: before %+v, after %+v (found %v)", id, vm, n, ok)
		}
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.HasPrefix(line, "[west]") && strings.Contains(line, `msg=deleted`) {
			t.Errorf("west deleted a server: %s", line)
		}
	}
	fmt.Fprintf(&logs, "[test] restart measured: %s\n", readopted)
}
