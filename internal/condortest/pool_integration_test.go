//go:build integration

package condortest_test

// Proves the live test pool (deploy/testbed/htcondor/up.sh) and the
// helpers: run as root, with the pool up:
//
//	go test -tags integration -count=1 -v ./internal/condortest/

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/condortest"
)

func TestPoolRunsAJobOnAWorker(t *testing.T) {
	start := time.Now()
	p := condortest.Load(t)
	cluster := p.Submit(t, `executable = /bin/sleep
arguments = 2
should_transfer_files = YES
request_cpus = 1
request_memory = 64
request_disk = 1024
# Only this test's worker: other work on the machine may run workers in
# the same pool.
requirements = TARGET.Machine == "pooltest-vm1"
queue
`)
	jobs := p.Queue(t, "-constraint", fmt.Sprintf("ClusterId == %d", cluster), "-attributes", "ClusterId,ProcId,JobStatus,Owner")
	if len(jobs) != 1 || jobs[0].String("Owner") != p.SubmitUser {
		t.Fatalf("queue after submit: %v", jobs)
	}

	token := p.Token(t, "condor@"+p.TrustDomain, nil, time.Hour)
	w := p.StartWorker(t, condortest.WorkerOptions{Hostname: "pooltest-vm1", Token: token, Cpus: 1, MemoryMiB: 1024})
	slots := w.WaitSlots(t, 60*time.Second)
	if got := slots[0].String("Machine"); got != "pooltest-vm1" {
		t.Errorf("slot Machine = %q, want the worker's host name", got)
	}
	if got := slots[0].String("AuthenticationMethod"); got != "IDTOKENS" {
		t.Errorf("slot ad authenticated with %q, want IDTOKENS", got)
	}
	t.Logf("worker slots in the pool after %s", time.Since(start).Round(time.Millisecond))

	var done condortest.Ad
	condortest.Eventually(t, 90*time.Second, 500*time.Millisecond, "the job in condor_history", func() (bool, error) {
		h, err := p.QueryErr("condor_history", "-constraint", fmt.Sprintf("ClusterId == %d", cluster),
			"-attributes", "ClusterId,ProcId,JobStatus,ExitCode,LastRemoteHost")
		if len(h) == 1 {
			done = h[0]
		}
		return len(h) == 1, err
	})
	if st, _ := done.Int("JobStatus"); st != 4 {
		t.Errorf("JobStatus = %d, want 4 (completed): %v", st, done)
	}
	if code, ok := done.Int("ExitCode"); !ok || code != 0 {
		t.Errorf("ExitCode = %d (%v), want 0", code, ok)
	}
	if host := done.String("LastRemoteHost"); !strings.HasSuffix(host, "@pooltest-vm1") {
		t.Errorf("LastRemoteHost = %q, want a slot of pooltest-vm1", host)
	}
	t.Logf("job %d.0 completed after %s", cluster, time.Since(start).Round(time.Millisecond))

	w.Stop(t)
	if !w.Exited() {
		t.Fatal("worker master still running after Stop")
	}
	condortest.Eventually(t, 30*time.Second, 250*time.Millisecond, "the worker's ads gone from the collector", func() (bool, error) {
		ads, err := p.QueryErr("condor_status", "-any", "-constraint", `Machine == "pooltest-vm1"`, "-attributes", "MyType,Name")
		return err == nil && len(ads) == 0, fmt.Errorf("still there: %v (%v)", ads, err)
	})
	t.Logf("worker gone after %s in all", time.Since(start).Round(time.Millisecond))
}
