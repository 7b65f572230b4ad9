package sim

import (
	"testing"
	"time"
)

// groupStat returns the named group's figures from a summary.
func groupStat(t *testing.T, sum *Summary, name string) GroupStats {
	t.Helper()
	for _, g := range sum.Groups {
		if g.Name == name {
			return g
		}
	}
	t.Fatalf("no figures for group %s in %+v", name, sum.Groups)
	return GroupStats{}
}

// TestQuotaBelowUse runs deploy/traces/quota-below-use.trace: an
// experiment's quota lowered from 40 to 12 VMs while about 40 run, with
// and without an over-quota deadline. No boot breaks the tree's quotas (the
// simulator's own check counts any as a violation), no job is killed,
// every job finishes, idle VMs go for the quota; busy VMs are retired for
// it only with a deadline, which brings the tree back within its quota
// sooner.
func TestQuotaBelowUse(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration
		wantBusy bool
	}{
		{"no deadline: busy VMs stay", 0, false},
		{"deadline 30m: busy VMs drain", 30 * time.Minute, true},
	}
	var lastOver [2]time.Duration
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := loadTrace(t, "../../deploy/traces/quota-below-use.trace")
			tr.Config.OverQuotaDeadline = tc.deadline
			sum, err := Run(tr, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Violations != 0 {
				t.Errorf("%d violations: %v", sum.Violations, sum.FirstViolations)
			}
			if sum.Failures.KilledJobs != 0 {
				t.Errorf("%d jobs killed", sum.Failures.KilledJobs)
			}
			if !sum.AllFinished() {
				t.Errorf("jobs left: %+v", sum.Jobs)
			}
			atlas := groupStat(t, sum, "atlas")
			prod, ana := groupStat(t, sum, "prod"), groupStat(t, sum, "analysis")
			if atlas.OverQuotaSteps == 0 {
				t.Errorf("atlas never reported over quota: %+v", atlas)
			}
			// The tree was over from the cut (3h) on.
			if atlas.LastOverQuota < 3*time.Hour {
				t.Errorf("atlas last over quota at %s, before the cut", atlas.LastOverQuota)
			}
			if prod.OverQuotaRetires+ana.OverQuotaRetires == 0 {
				t.Errorf("no VM retired for the quota: prod %+v, analysis %+v", prod, ana)
			}
			busy := prod.OverQuotaBusy + ana.OverQuotaBusy
			if tc.wantBusy != (busy > 0) {
				t.Errorf("%d busy VMs retired for the quota, want some: %v", busy, tc.wantBusy)
			}
			lastOver[i] = atlas.LastOverQuota
			t.Logf("atlas over quota in %d plans, last at %s; retired for quota: prod %d (%d busy), analysis %d (%d busy)",
				atlas.OverQuotaSteps, atlas.LastOverQuota, prod.OverQuotaRetires, prod.OverQuotaBusy, ana.OverQuotaRetires, ana.OverQuotaBusy)
		})
	}
	if lastOver[1] >= lastOver[0] {
		t.Errorf("with a deadline the tree was over quota until %s, without until %s: the deadline did not help", lastOver[1], lastOver[0])
	}
}
