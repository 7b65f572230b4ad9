//go:build integration

package vmagent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/condortest"
)

// TestLiveJobCount: what every check-in says of the VM's jobs, from its
// own startd: 0/0 while idle, running 1 and claimed 1 while a job runs,
// and unknown (nil), never zero, once the startd has stopped. For a bare
// and a dotted host name.
func TestLiveJobCount(t *testing.T) {
	for _, host := range []string{"livejobs1", "livejobs2.canopy.test"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			p := condortest.Load(t)
			agent := newLiveAgent(t, p, time.Hour, false)
			vm := startLiveVM(t, p, agent, host, "", 500*time.Millisecond)
			vm.worker.WaitSlots(t, time.Minute)
			since := time.Now()
			waitReport(t, agent, since, "an idle count 0/0", func(r liveReport) bool {
				return r.jobs != nil && r.jobs.Running == 0 && r.jobs.Claimed == 0
			})

			cluster := vm.submit(t, p, 120)
			since = time.Now()
			r := waitReport(t, agent, since, "a count of 1 running, 1 claimed", func(r liveReport) bool {
				return r.jobs != nil && r.jobs.Running == 1 && r.jobs.Claimed == 1
			})
			t.Logf("job %d.0 counted %s after its submission", cluster, r.at.Sub(since).Round(time.Millisecond))

			p.Run(t, "condor_rm", fmt.Sprint(cluster))
			waitReport(t, agent, time.Now(), "0/0 after the job was removed", func(r liveReport) bool {
				return r.jobs != nil && r.jobs.Running == 0 && r.jobs.Claimed == 0
			})

			// Stop the startd as an admin on the VM would.
			vm.worker.Run(t, "condor_off", "-fast", "-startd")
			stopped := time.Now()
			first := waitReport(t, agent, stopped, "an unknown count once the startd stopped", func(r liveReport) bool { return r.jobs == nil })
			// From then on: never a count, and never zero.
			condortest.Eventually(t, time.Minute, 100*time.Millisecond, "five more check-ins", func() (bool, error) {
				return len(agent.reportsSince(first.at)) >= 5, nil
			})
			for _, r := range agent.reportsSince(first.at) {
				if r.jobs != nil {
					t.Fatalf("check-in at %s carried %+v after the startd had stopped", r.at.Format("15:04:05.000"), *r.jobs)
				}
			}
			t.Logf("startd stopped: unknown from %s after the order", first.at.Sub(stopped).Round(time.Millisecond))
		})
	}
}

// waitReport waits (a minute at most) for a check-in received after since
// that satisfies ok, and returns it.
func waitReport(t *testing.T, a *liveAgent, since time.Time, what string, ok func(liveReport) bool) liveReport {
	t.Helper()
	var found liveReport
	condortest.Eventually(t, time.Minute, 100*time.Millisecond, what, func() (bool, error) {
		for _, r := range a.reportsSince(since) {
			if ok(r) {
				found = r
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// renewalTestConf makes the worker authenticate to the collector afresh
// every 20 s: a new security session (SEC_DEFAULT_SESSION_DURATION) for
// updates sent over UDP rather than a persistent TCP connection. A real
// startd keeps its connection and session (a day by default) and presents
// its token again only when it reconnects (a collector restart, a network
// break) or the session ends; here a token's expiry shows within seconds.
const renewalTestConf = "UPDATE_COLLECTOR_WITH_TCP = False\nSEC_DEFAULT_SESSION_DURATION = 20\n"

// authFailedRE is what a worker's daemon logs when the collector refuses
// its token.
var authFailedRE = regexp.MustCompile(`Received "DENIED" from server for user \S+ using method IDTOKENS|AUTHENTICATE:1004:Failed to authenticate using IDTOKENS`)

// TestLiveRenewal: with HTCondor tokens of a 2-minute lifetime, a VM whose
// agent renews them through check-ins gets a new token when 40 s are
// left, writes it over the old one, and its startd keeps advertising past
// the first token's expiry (authenticating afresh every 20 s); a VM whose
// agent does not renew (as for a deleted server) is refused by the
// collector once its token has expired, and stops advertising.
func TestLiveRenewal(t *testing.T) {
	const life = 2 * time.Minute
	tests := []struct {
		host  string
		renew bool
	}{
		{"liverenew1", true},
		{"livenorenew1", false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("renew=%v", tc.renew), func(t *testing.T) {
			t.Parallel()
			p := condortest.Load(t)
			agent := newLiveAgent(t, p, life, tc.renew)
			vm := startLiveVM(t, p, agent, tc.host, renewalTestConf, time.Second)
			vm.worker.WaitSlots(t, time.Minute)
			expiries, _ := agent.tokens()
			firstExp := expiries[0]
			tokenFile := filepath.Join(vm.root, CondorTokenPath)
			firstToken, err := os.ReadFile(tokenFile)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("first token expires %s", firstExp.Format("15:04:05"))

			// Watch the startd's ads until the first token has been expired
			// for three session lifetimes.
			end := firstExp.Add(60 * time.Second)
			var heard []time.Time
			for time.Now().Before(end) {
				ads, err := vm.worker.SlotsErr()
				if err == nil && len(ads) > 0 {
					if v, ok := ads[0].Int("LastHeardFrom"); ok {
						at := time.Unix(v, 0)
						if len(heard) == 0 || at.After(heard[len(heard)-1]) {
							heard = append(heard, at)
						}
					}
				}
				<-time.After(time.Second)
			}
			last := heard[len(heard)-1]
			maxGap := time.Duration(0)
			for i := 1; i < len(heard); i++ {
				maxGap = max(maxGap, heard[i].Sub(heard[i-1]))
			}
			logs := workerLogs(vm.worker)
			expiries, renewals := agent.tokens()
			if tc.renew {
				if len(renewals) == 0 || !renewals[0].Before(firstExp) || firstExp.Sub(renewals[0]) > life/3+2*time.Second {
					t.Fatalf("renewals %v for a token expiring %s", renewals, firstExp)
				}
				token, _ := os.ReadFile(tokenFile)
				if string(token) == string(firstToken) || !strings.HasPrefix(string(token), "ey") {
					t.Fatal("the token file was not replaced")
				}
				if last.Before(firstExp.Add(40*time.Second)) || maxGap > 15*time.Second {
					t.Fatalf("the startd stopped advertising: last heard %s (first token expired %s), longest silence %s",
						last.Format("15:04:05"), firstExp.Format("15:04:05"), maxGap)
				}
				if authFailedRE.Match(logs) {
					t.Fatalf("a refused authentication: %s", authFailedRE.Find(logs))
				}
				t.Logf("renewed %s before expiry (%d renewal(s), %d tokens); heard from until %s, %s after the first token expired; longest silence %s",
					firstExp.Sub(renewals[0]).Round(time.Second), len(renewals), len(expiries), last.Format("15:04:05"),
					last.Sub(firstExp).Round(time.Second), maxGap)
				return
			}
			if len(renewals) != 0 {
				t.Fatalf("renewed without renewal: %v", renewals)
			}
			if !last.Before(firstExp.Add(30 * time.Second)) {
				t.Fatalf("the startd advertised until %s with a token expired at %s", last.Format("15:04:05"), firstExp.Format("15:04:05"))
			}
			if !authFailedRE.Match(logs) {
				t.Fatal("no refused authentication in the worker's logs")
			}
			t.Logf("not renewed: last heard %s, %s after the token expired; the collector refused it: %s", last.Format("15:04:05"),
				last.Sub(firstExp).Round(time.Second), authFailedRE.Find(logs))
		})
	}
}

// workerLogs returns the worker's master and startd logs.
func workerLogs(w *condortest.Worker) []byte {
	var all []byte
	for _, f := range []string{"MasterLog", "StartLog"} {
		b, _ := os.ReadFile(filepath.Join(w.Dir, "log", f))
		all = append(all, b...)
	}
	return all
}
