//go:build integration

package idtoken

// Tokens minted by this package against the live HTCondor test pool
// (deploy/testbed/htcondor/up.sh), run as root:
//
//	go test -tags integration -count=1 -v -run Live ./agent/idtoken/

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/condortest"
)

// Authorizations a worker's token is limited to: the minimum the live pool
// needs (TestLiveTokens shows each is needed and that nothing more is).
var workerAuthz = []string{"ADVERTISE_STARTD", "ADVERTISE_MASTER"}

// liveWorkerConfig is the worker's extra configuration: it takes only this
// test's jobs (the pool is shared with other tests).
func liveWorkerConfig(t *testing.T, tag string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("CanopyLiveTest = %q\nSTARTD_ATTRS = $(STARTD_ATTRS) CanopyLiveTest\nSTART = TARGET.CanopyLiveTest =?= %q\n", tag, tag)
	if err := os.WriteFile(filepath.Join(dir, "50-live-test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func randomTag(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// refusedRE is what a worker's daemon logs when the collector refuses
// its token.
var refusedRE = regexp.MustCompile(`Received "DENIED" from server for user \S+ using method IDTOKENS|AUTHENTICATE:1004:Failed to authenticate using IDTOKENS`)

// daemonLogs returns the worker's master and startd logs.
func daemonLogs(w *condortest.Worker) []byte {
	var all []byte
	for _, f := range []string{"MasterLog", "StartLog"} {
		b, _ := os.ReadFile(filepath.Join(w.Dir, "log", f))
		all = append(all, b...)
	}
	return all
}

// TestLiveTokens: a worker holding only a token minted here joins the real
// collector (slot and master ads) and runs a job; tokens signed with
// another key, expired, derived without doubling the pool key, for an
// identity the pool does not admit, or lacking one of the two
// authorizations are refused by the collector, which the worker logs.
func TestLiveTokens(t *testing.T) {
	p := condortest.Load(t)
	identity := p.NeedWorkerIdentity(t)
	file, err := os.ReadFile(p.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := LoadKey(p.SigningKey, PoolKeyID)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := NewKey(append(bytes.Clone(file), 'x'), PoolKeyID)
	if err != nil {
		t.Fatal(err)
	}
	undoubled, err := NewKey(file, "canopy-undoubled")
	if err != nil {
		t.Fatal(err)
	}
	undoubled.id = PoolKeyID // the key once, labelled as the pool key
	now := time.Now()
	tests := []struct {
		name     string
		key      *Key
		identity string
		authz    []string
		issued   time.Time
		lifetime time.Duration
		// want: "job" (slots, master ad, a job runs), "no master ad"
		// (slots, the master's ad refused), or "refused" (no slots, a
		// refusal logged).
		want string
	}{
		{"minted here", key, identity, workerAuthz, now, time.Hour, "job"},
		{"another key", otherKey, identity, workerAuthz, now, time.Hour, "refused"},
		{"expired", key, identity, workerAuthz, now.Add(-2 * time.Hour), time.Hour, "refused"},
		{"pool key not doubled", undoubled, identity, workerAuthz, now, time.Hour, "refused"},
		{"identity the pool does not admit", key, "nobody@" + p.TrustDomain, workerAuthz, now, time.Hour, "refused"},
		{"without ADVERTISE_STARTD", key, identity, []string{"ADVERTISE_MASTER", "READ"}, now, time.Hour, "refused"},
		{"without ADVERTISE_MASTER", key, identity, []string{"ADVERTISE_STARTD", "READ"}, now, time.Hour, "no master ad"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := NewSigner(tc.key, p.TrustDomain)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := s.Mint(Spec{Identity: tc.identity, Authz: tc.authz, Lifetime: tc.lifetime}, tc.issued)
			if err != nil {
				t.Fatal(err)
			}
			tag := randomTag(t)
			host := fmt.Sprintf("idtok%d-%s", i, tag)
			w := p.StartWorker(t, condortest.WorkerOptions{Hostname: host, Token: tok.Raw, ConfigDir: liveWorkerConfig(t, tag)})
			switch tc.want {
			case "refused":
				condortest.Eventually(t, time.Minute, 250*time.Millisecond, "the collector's refusal in the worker's logs", func() (bool, error) {
					return refusedRE.Match(daemonLogs(w)), nil
				})
				if ads, err := w.SlotsErr(); err != nil || len(ads) > 0 {
					t.Fatalf("slots in the collector despite the refusal: %d ads (%v)", len(ads), err)
				}
				t.Logf("refused: %s", refusalLine(daemonLogs(w)))
			case "no master ad":
				w.WaitSlots(t, time.Minute)
				condortest.Eventually(t, time.Minute, 250*time.Millisecond, "the master's refusal in its log", func() (bool, error) {
					b, _ := os.ReadFile(filepath.Join(w.Dir, "log", "MasterLog"))
					return refusedRE.Match(b), nil
				})
				if m := masterAds(t, p, host); len(m) != 0 {
					t.Fatalf("master ad in the collector: %v", m)
				}
			case "job":
				start := time.Now()
				w.WaitSlots(t, time.Minute)
				condortest.Eventually(t, time.Minute, 250*time.Millisecond, "the worker's master ad", func() (bool, error) {
					return len(masterAds(t, p, host)) == 1, nil
				})
				joined := time.Since(start)
				cluster := p.Submit(t, fmt.Sprintf(`executable = /bin/true
should_transfer_files = YES
request_cpus = 1
request_memory = 64
request_disk = 1024
+CanopyLiveTest = %q
requirements = TARGET.Machine == %q
queue
`, tag, host))
				condortest.Eventually(t, 2*time.Minute, 500*time.Millisecond, "the job completed on "+host, func() (bool, error) {
					ads, err := p.QueryErr("condor_history", "-constraint", fmt.Sprintf("ClusterId == %d && JobStatus == 4", cluster),
						"-attributes", "LastRemoteHost,ExitCode")
					if err != nil || len(ads) != 1 {
						return false, err
					}
					if !strings.Contains(ads[0].String("LastRemoteHost"), host) {
						return false, fmt.Errorf("ran on %s", ads[0].String("LastRemoteHost"))
					}
					return true, nil
				})
				t.Logf("worker joined in %s; job done %s after start", joined.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
				if refusedRE.Match(daemonLogs(w)) {
					t.Errorf("a refusal in the worker's logs: %s", refusalLine(daemonLogs(w)))
				}
			}
		})
	}
}

// refusalLine returns the first log line refusedRE matches.
func refusalLine(logs []byte) string {
	for l := range strings.SplitSeq(string(logs), "\n") {
		if refusedRE.MatchString(l) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func masterAds(t *testing.T, p *condortest.Pool, host string) []condortest.Ad {
	t.Helper()
	ads, err := p.QueryErr("condor_status", "-master", "-constraint", fmt.Sprintf("Machine == %q", host), "-attributes", "Name,AuthenticatedIdentity")
	if err != nil {
		t.Fatal(err)
	}
	return ads
}
