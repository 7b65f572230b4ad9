//go:build integration

package vmagent

import (
	"fmt"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/condortest"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// TestLiveRetirement: a VM with a bare host name and one with a dotted host
// name each run a 20 s job; retirement is ordered while it runs. The job
// ends normally, vmagent reports the VM drained within seconds of the
// job's end (not before), and the VM's master exits and runs the power-off
// program within seconds too.
func TestLiveRetirement(t *testing.T) {
	for _, host := range []string{"livevm1", "livevm2.canopy.test"} {
		t.Run(host, func(t *testing.T) { liveRetirement(t, host) })
	}
}

func liveRetirement(t *testing.T, host string) {
	start := time.Now()
	p := condortest.Load(t)
	agent := newLiveAgent(t, p, time.Hour, false)
	vm := startLiveVM(t, p, agent, host, "", 200*time.Millisecond)
	w := vm.worker
	slots := w.WaitSlots(t, time.Minute)
	if got := slots[0].String("CanopyVMName"); got != vm.name {
		t.Fatalf("slot advertises CanopyVMName %q, want %q", got, vm.name)
	}

	cluster := vm.submit(t, p, 20)
	condortest.Eventually(t, time.Minute, 250*time.Millisecond, "the job running on "+host, func() (bool, error) {
		ads, err := p.QueryErr("condor_q", "-allusers", "-constraint", fmt.Sprintf("ClusterId == %d && JobStatus == 2", cluster), "-attributes", "ProcId")
		return len(ads) == 1, err
	})
	retireAt := time.Now()
	agent.retire.Store(true)
	t.Logf("job %d.0 running after %s; retirement ordered", cluster, retireAt.Sub(start).Round(time.Millisecond))

	var drainedAt time.Time
	condortest.Eventually(t, 2*time.Minute, 100*time.Millisecond, "vmagent reporting drained", func() (bool, error) {
		var ok bool
		drainedAt, ok = agent.firstSeen(vmproto.CheckinDrained)
		return ok, nil
	})
	select {
	case err := <-vm.done:
		vm.done <- err // for the cleanup's wait
		if err != nil {
			t.Fatalf("vmagent: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("vmagent still running a minute after reporting drained")
	}
	select {
	case <-w.Done():
	case <-time.After(time.Minute):
		t.Fatal("the worker's master still running a minute after vmagent reported drained")
	}

	h := p.History(t, "-constraint", fmt.Sprintf("ClusterId == %d", cluster),
		"-attributes", "JobStatus,ExitCode,CompletionDate,RemoteWallClockTime,LastRemoteHost")
	if len(h) != 1 {
		t.Fatalf("history: %v", h)
	}
	if st, _ := h[0].Int("JobStatus"); st != 4 {
		t.Errorf("JobStatus %d, want 4 (completed)", st)
	}
	if code, ok := h[0].Int("ExitCode"); !ok || code != 0 {
		t.Errorf("ExitCode %d (%v), want 0", code, ok)
	}
	if wall, _ := h[0].Int("RemoteWallClockTime"); wall < 20 {
		t.Errorf("RemoteWallClockTime %d s: the job did not run its 20 s", wall)
	}
	completed, _ := h[0].Int("CompletionDate")
	end := time.Unix(completed, 0) // whole seconds: the job ended in [end, end+1s)
	if !end.After(retireAt.Add(-time.Second)) {
		t.Errorf("job completed at %s, before the retirement was ordered at %s", end, retireAt)
	}
	drainLag := drainedAt.Sub(end)
	if drainLag < -time.Second {
		t.Errorf("vmagent reported drained at %s, before the job ended at %s", drainedAt, end)
	}
	runs := w.PoweroffRuns()
	if len(runs) != 1 {
		t.Fatalf("power-off program ran %d times, want once", len(runs))
	}
	offLag, exitLag := runs[0].Sub(end), w.ExitedAt().Sub(end)
	t.Logf("%s: job ended %s; drained reported +%s; power-off ran +%s; master exited +%s (retirement poll 1 s)",
		host, end.Format("15:04:05"), drainLag.Round(time.Millisecond), offLag.Round(time.Millisecond), exitLag.Round(time.Millisecond))
	const prompt = 10 * time.Second
	if drainLag > prompt || offLag > prompt || exitLag > prompt {
		t.Errorf("not prompt: drained +%s, power-off +%s, master exit +%s after the job's end (limit %s)", drainLag, offLag, exitLag, prompt)
	}
}
