//go:build integration

package condortest_test

import (
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/condortest"
)

func TestZZTry(t *testing.T) {
	p := condortest.Load(t)
	tok := p.Token(t, "condor@"+p.TrustDomain, nil, time.Hour)
	w := p.StartWorker(t, condortest.WorkerOptions{Hostname: "try1", Token: tok, Cpus: 1, MemoryMiB: 1000})
	w.WaitSlots(t, time.Minute)
	condortest.Eventually(t, time.Minute, 500*time.Millisecond, "running", func() (bool, error) {
		ads, err := p.QueryErr("condor_q", "-allusers", "-constraint", "JobStatus == 2", "-attributes", "ProcId")
		return len(ads) >= 1, err
	})
	t.Logf("%s", p.Run(t, "condor_q", "-allusers", "-nobatch"))
	t.Logf("%s", p.Run(t, "condor_q", "-allusers", "-autocluster", "-json", "-attributes", "JobCount"))
	t.Logf("%s", p.Run(t, "condor_q", "-allusers", "-group-by", "-constraint", "JobStatus =?= 1 || JobStatus =?= undefined", "-attributes", "CanopyGroup", "-json"))
}
