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

// TestPreemptibleReclaim runs deploy/traces/preemptible-reclaim.trace: a
// preemptible cloud takes back half of Canopy's VMs at once. Jobs that do
// not accept preemptible capacity are never placed there (a violation
// otherwise); jobs that do go there first; the VMs taken back count as
// preempted, their jobs return to the queue (not killed by Canopy) and
// finish; the cloud, preempting too fast, is backed off for a while.
func TestPreemptibleReclaim(t *testing.T) {
	tr := loadTrace(t, "../../deploy/traces/preemptible-reclaim.trace")
	sum, err := Run(tr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Violations != 0 {
		t.Errorf("%d violations: %v", sum.Violations, sum.FirstViolations)
	}
	if sum.Failures.KilledJobs != 0 {
		t.Errorf("%d jobs killed by Canopy", sum.Failures.KilledJobs)
	}
	if !sum.AllFinished() {
		t.Errorf("jobs left: %+v", sum.Jobs)
	}
	byCloud := map[string]CloudStats{}
	for _, c := range sum.Clouds {
		byCloud[c.Site] = c
	}
	spot, west := byCloud["spot"], byCloud["west"]
	if n := spot.BootsByGroup["analysis"]; n != 0 {
		t.Errorf("analysis booted %d VMs on preemptible spot", n)
	}
	if spot.BootsByGroup["sim"] <= west.BootsByGroup["sim"] {
		t.Errorf("sim booted %d VMs on spot and %d on west: preemptible capacity not used first", spot.BootsByGroup["sim"], west.BootsByGroup["sim"])
	}
	// Half of the VMs there at 3h (spot's cores cap them at 60).
	if spot.Preempted < 10 || spot.Preempted > 30 {
		t.Errorf("spot took back %d VMs, want about half of its up to 60", spot.Preempted)
	}
	if sum.Failures.PreemptedJobs == 0 || sum.Jobs.Started != sum.Jobs.Finished+sum.Failures.PreemptedJobs {
		t.Errorf("started %d, finished %d, preempted %d: preempted jobs must run again", sum.Jobs.Started, sum.Jobs.Finished, sum.Failures.PreemptedJobs)
	}
	if spot.BackoffSteps == 0 || west.BackoffSteps != 0 {
		t.Errorf("backoff steps: spot %d, west %d; want spot backed off for preempting too fast", spot.BackoffSteps, west.BackoffSteps)
	}
	t.Logf("spot: %d boots, %d preempted, %d plans backed off; %d jobs preempted and run again", spot.Boots, spot.Preempted, spot.BackoffSteps, sum.Failures.PreemptedJobs)
}
