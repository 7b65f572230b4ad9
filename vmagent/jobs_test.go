package vmagent

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCountJobs: the count a check-in carries, from HTCondor's recorded
// answers: idle 0/0, busy 2/2; a startd that is not running, a master
// that does not answer, or a tool that fails is an unknown count, never
// zero.
func TestCountJobs(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name              string
		answers           map[string][]answer
		noCondor          bool
		running, claimed  int
		wantErr           bool
		wantStartdStopped bool
	}{
		{"idle", map[string][]answer{"condor_who": {recorded(t, "live02_worker1_condor_who-quick_idle")},
			"condor_status": {recorded(t, "live03_worker1_condor_status-direct-addr_idle")}}, false, 0, 0, false, false},
		{"two jobs", map[string][]answer{"condor_who": {recorded(t, "live02_worker1_condor_who-quick_idle")},
			"condor_status": {recorded(t, "live05_worker1_condor_status-direct-addr_2jobs")}}, false, 2, 2, false, false},
		{"dotted host name, two jobs", map[string][]answer{"condor_who": {recorded(t, "live16_worker2_condor_who-quick_idle")},
			"condor_status": {recorded(t, "live19_worker2_condor_status-direct-addr_2jobs")}}, false, 2, 2, false, false},
		{"startd stopped", map[string][]answer{"condor_who": {recorded(t, "live09_worker1_condor_who-quick_startd-exited")}}, false, 0, 0, true, true},
		{"master gone", map[string][]answer{"condor_who": {recorded(t, "live14_worker1_condor_who-quick_master-gone")}}, false, 0, 0, true, false},
		{"condor_status fails", map[string][]answer{"condor_who": {recorded(t, "live02_worker1_condor_who-quick_idle")},
			"condor_status": {{stderr: "Failed to connect", code: 1}}}, false, 0, 0, true, false},
		{"no HTCondor", nil, true, 0, 0, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, hook := testLog()
			r := Retirer{Runner: newFakeRunner(t, tc.answers), Log: log, NoCondor: tc.noCondor, Now: func() time.Time { return at }}
			c, err := r.CountJobs(context.Background())
			if tc.wantErr {
				if err == nil {
					t.Fatalf("count %+v, want an error", c)
				}
				if errors.Is(err, ErrStartdNotRunning) != tc.wantStartdStopped {
					t.Fatalf("err %v", err)
				}
			} else if err != nil || c.Running != tc.running || c.Claimed != tc.claimed || !c.At.Equal(at) {
				t.Fatalf("count %+v, %v; want %d/%d", c, err, tc.running, tc.claimed)
			}
			// What a check-in carries: nil when unknown, logged once.
			r.Runner = newFakeRunner(t, tc.answers)
			j := &jobCounter{r: r, log: log, timeout: time.Second}
			got := j.count(context.Background())
			if (got == nil) != tc.wantErr {
				t.Fatalf("check-in count %+v", got)
			}
			j.count(context.Background())
			warnings := 0
			for _, e := range hook.AllEntries() {
				if e.Message == "cannot count the startd's jobs: reporting the count as unknown" {
					warnings++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.wantErr]; warnings != want {
				t.Errorf("%d warnings for two failed counts, want %d", warnings, want)
			}
		})
	}
}
