//go:build integration

package agent

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/localcloud"
	"github.com/canopy-grid/canopy/protocol"
)

// testJobsPath is where local test VMs read their fake job count
// (vmagent --test-jobs-file), under their root.
const testJobsPath = "/run/canopy/test-jobs"

// TestDeleteRefusedWhileVMReportsJobs runs the real vmagent binary in a
// local cloud under an in-process agent: a VM whose vmagent reports two
// running jobs is not deleted by a plain delete command (refused, process
// and server kept), and is deleted by one with the deadline override; an
// idle VM is deleted by a plain one.
func TestDeleteRefusedWhileVMReportsJobs(t *testing.T) {
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "github.com/canopy-grid/canopy/vmagent/cmd/vmagent").CombinedOutput(); err != nil {
		t.Fatalf("build vmagent: %v\n%s", err, out)
	}
	dir := t.TempDir()
	cfg := writePKI(t, dir, "west", "west")
	cfg.CheckinEvery = 300 * time.Millisecond
	cloudDir := filepath.Join(dir, "cloud")
	lc, err := localcloud.New(localcloud.Config{VMAgent: filepath.Join(bin, "vmagent"), Dir: cloudDir,
		Flavors: []protocol.Flavor{{Name: "c2", VCPUs: 2, RAMMiB: 4096}},
		VMArgs:  []string{"--no-condor", "--gossip-bind", "127.0.0.1:0", "--test-jobs-file", testJobsPath}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = lc.Close()
		if _, err := localcloud.StopAll(cloudDir); err != nil {
			t.Error(err)
		}
	})
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	a, err := New(cfg, lc, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	a.setHubID("itest-hub") // no hub here: as if welcomed
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		_ = a.Close()
	}()
	waitFor(t, 10*time.Second, "the VM endpoint", func() bool { return a.VMURL() != "" && a.gossipPool() != nil })

	res, _ := a.execute(ctx, protocol.Command{ID: "b1", Op: protocol.CmdBoot, Epoch: a.Epoch(),
		Boot: &protocol.BootCommand{PlanID: "p1", Group: "atlas", VMType: "el9", Flavor: "c2", Names: []string{"busy", "idle"}}})
	if !res.OK || len(res.VMIDs) != 2 {
		t.Fatalf("boot: %+v", res)
	}
	busy, idle := res.VMIDs[0], res.VMIDs[1]
	root := func(name, id string) string { return filepath.Join(cloudDir, "vms", name+"-"+id[:8]) }
	for name, n := range map[string]string{"busy": "2 2", "idle": "0 0"} {
		id := map[string]string{"busy": busy, "idle": idle}[name]
		p := filepath.Join(root(name, id), testJobsPath)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(n+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	jobsOf := func(id string) (int, int, bool) {
		st, ok := a.vms.get(id)
		if !ok || st.jobs == nil {
			return 0, 0, false
		}
		return st.jobs.Running, st.jobs.Claimed, true
	}
	waitFor(t, 30*time.Second, "both VMs to report their jobs", func() bool {
		r, c, ok := jobsOf(busy)
		_, _, ok2 := jobsOf(idle)
		return ok && ok2 && r == 2 && c == 2
	})
	pid := vmPID(t, filepath.Join(root("busy", busy), localcloud.RecordFile))

	// A plain delete of the busy VM: refused; the server and its process stay.
	r, _ := a.execute(ctx, protocol.Command{ID: "d1", Op: protocol.CmdDelete, Epoch: a.Epoch(),
		Delete: &protocol.DeleteCommand{VMIDs: []string{busy}, Reason: "planner"}})
	if r.OK || r.Class != protocol.ErrClassRefused || len(r.Refused) != 1 || !strings.Contains(r.Refused[0].Reason, "2 running jobs") {
		t.Fatalf("plain delete of the busy VM: %+v", r)
	}
	if !listedServers(t, lc, busy) || syscall.Kill(pid, 0) != nil {
		t.Fatal("the busy VM is gone after a refused delete")
	}
	// The idle VM goes with a plain delete.
	if r, _ := a.execute(ctx, protocol.Command{ID: "d2", Op: protocol.CmdDelete, Epoch: a.Epoch(),
		Delete: &protocol.DeleteCommand{VMIDs: []string{idle}, Reason: "idle"}}); !r.OK || listedServers(t, lc, idle) {
		t.Fatalf("plain delete of the idle VM: %+v", r)
	}
	// With the deadline override the busy VM goes too.
	if r, _ := a.execute(ctx, protocol.Command{ID: "d3", Op: protocol.CmdDelete, Epoch: a.Epoch(),
		Delete: &protocol.DeleteCommand{VMIDs: []string{busy}, Reason: "retire deadline passed", Override: protocol.DeleteDeadline}}); !r.OK {
		t.Fatalf("override delete: %+v", r)
	}
	if listedServers(t, lc, busy) {
		t.Fatal("busy VM still listedServers after the override delete")
	}
	waitFor(t, 10*time.Second, "the busy VM's process to end", func() bool { return syscall.Kill(pid, 0) != nil })
}

func listedServers(t *testing.T, d driver.Driver, id string) bool {
	t.Helper()
	list, err := d.Servers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.ID == id {
			return true
		}
	}
	return false
}

// vmPID reads a local VM's process id from its record.
func vmPID(t *testing.T, record string) int {
	t.Helper()
	var rec struct {
		PID int `json:"pid"`
	}
	waitFor(t, 10*time.Second, "the VM record's pid", func() bool {
		b, err := os.ReadFile(record)
		return err == nil && json.Unmarshal(b, &rec) == nil && rec.PID > 0
	})
	return rec.PID
}
