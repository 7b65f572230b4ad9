package condortest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

const envSample = `CONDOR_CONFIG=/var/lib/canopy-testbed/htcondor/condor_config
HTC_VERSION=24.0.23
HTC_RELEASE_DIR=/opt/canopy-testbed/htcondor/htcondor-local
HTC_BIN=/opt/canopy-testbed/htcondor/htcondor-local/bin
HTC_SBIN=/opt/canopy-testbed/htcondor/htcondor-local/sbin
HTC_LIB=/opt/canopy-testbed/htcondor/htcondor-local/lib
HTC_LIBEXEC=/opt/canopy-testbed/htcondor/htcondor-local/libexec
HTC_STATE=/var/lib/canopy-testbed/htcondor
HTC_COLLECTOR=127.0.0.1:29618
HTC_SCHEDD=vm
HTC_TRUST_DOMAIN=canopy.testbed
HTC_UID_DOMAIN=canopy.testbed
HTC_SIGNING_KEY=/var/lib/canopy-testbed/htcondor/passwords.d/POOL
HTC_POOL_USER=canopy-cm
HTC_SUBMIT_USER=canopy-cm
HTC_HUB_IDENTITY=canopy-cm@canopy.testbed
HTC_MASTER_PID=22070
`

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "env")
	if err := os.WriteFile(good, []byte("# comment\n\n"+envSample), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := LoadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if p.Collector != "127.0.0.1:29618" || p.TrustDomain != "canopy.testbed" || p.MasterPID != 22070 ||
		p.SbinDir != "/opt/canopy-testbed/htcondor/htcondor-local/sbin" || p.SubmitUser != "canopy-cm" {
		t.Errorf("LoadFile = %+v", p)
	}

	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte(strings.Replace(envSample, "HTC_COLLECTOR=127.0.0.1:29618\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(short); err == nil || !strings.Contains(err.Error(), "HTC_COLLECTOR") {
		t.Errorf("missing key: err = %v", err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(bad); err == nil || !strings.Contains(err.Error(), "KEY=value") {
		t.Errorf("bad line: err = %v", err)
	}
}

// fatalTB records a Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestLoadWithoutPoolSaysHowToBringItUp(t *testing.T) {
	t.Setenv(EnvFileVariable, filepath.Join(t.TempDir(), "no-such-env"))
	f := &fatalTB{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { Load(f) })
	wg.Wait()
	if !strings.Contains(f.msg, "deploy/testbed/htcondor/up.sh") || !strings.Contains(f.msg, "no-such-env") {
		t.Errorf("Load without an env file failed with %q; want the file and how to run up.sh", f.msg)
	}

	// An env file whose master is not running.
	env := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(env, []byte(strings.Replace(envSample, "HTC_MASTER_PID=22070", "HTC_MASTER_PID=999999999", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvFileVariable, env)
	f = &fatalTB{TB: t}
	wg.Go(func() { Load(f) })
	wg.Wait()
	if !strings.Contains(f.msg, "not running") || !strings.Contains(f.msg, "up.sh") {
		t.Errorf("Load with a dead master failed with %q", f.msg)
	}
}

func TestParseSubmitted(t *testing.T) {
	// Recorded: condor_submit of HTCondor 24.0.23.
	c, err := ParseSubmitted([]byte("Submitting job(s)...\n3 job(s) submitted to cluster 12.\n"))
	if err != nil || c != 12 {
		t.Errorf("ParseSubmitted = %d, %v", c, err)
	}
	if _, err := ParseSubmitted([]byte("ERROR: on Line 3 of submit file\n")); err == nil {
		t.Error("ParseSubmitted accepted output without a cluster")
	}
}

func TestParseAds(t *testing.T) {
	ads, err := ParseAds(nil)
	if err != nil || ads != nil {
		t.Errorf("empty output: %v, %v", ads, err)
	}
	ads, err = ParseAds([]byte(`[
{"ClusterId": 5, "JobStatus": 4, "Owner": "alice", "RemoteWallClockTime": 2.0}
]
`))
	if err != nil || len(ads) != 1 {
		t.Fatalf("ParseAds: %v, %v", ads, err)
	}
	if c, ok := ads[0].Int("ClusterId"); !ok || c != 5 {
		t.Errorf("ClusterId = %d, %v", c, ok)
	}
	if w, ok := ads[0].Int("RemoteWallClockTime"); !ok || w != 2 {
		t.Errorf("RemoteWallClockTime = %d, %v", w, ok)
	}
	if ads[0].String("Owner") != "alice" || ads[0].String("Missing") != "" {
		t.Errorf("String: %v", ads[0])
	}
	if _, err := ParseAds([]byte(`[{"a":`)); err == nil {
		t.Error("ParseAds accepted truncated output")
	}
}
