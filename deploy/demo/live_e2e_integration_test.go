//go:build integration

package demo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/internal/condortest"
)

// The live end-to-end test's jobs: atlas runs one long job on west whose
// own maximum lifetime (+VMMaxLifetime) retires its VM while it runs;
// belle runs short jobs on east that ask for a flavor (+VMInstanceType)
// and a keep-alive (+VMKeepAlive). A belle probe that only an atlas VM
// would suit shows START refusing another group's job.
const (
	liveLongSeconds   = 45
	liveLongLifetime  = "50s"
	liveShortSeconds  = 4
	liveShortJobs     = 3
	liveBelleFlavor   = "m1.large"
	liveEastDomain    = "east.canopy.test"
	liveBelleKeepMins = "4s"
)

// liveOurs selects the ads of this test's VMs (the pool is shared):
// slots by their CanopyVMName, masters by their host name.
const liveOurs = `regexp("^canopy-(west|east)-p[0-9]+-", CanopyVMName ?: "") || regexp("^canopy-(west|east)-p[0-9]+-", Machine ?: "")`

func liveSubmit(group, clouds string, seconds, cpus int, extra string, count int) string {
	return fmt.Sprintf(`executable = /bin/sleep
arguments = %d
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
request_cpus = %d
request_memory = 256
request_disk = 1024
+CanopyGroup = %q
+TargetClouds = %q
+VMType = "el9"
%s
queue %d
`, seconds, cpus, group, clouds, extra, count)
}

// TestLiveEndToEnd runs the real binaries over the live HTCondor pool
// (deploy/testbed/htcondor): jobs submitted with condor_submit are read
// by the hub's htcondor source, which boots VMs on two sites whose local
// clouds run real workers (a bare host name on west, a dotted one on
// east); their startds join with Canopy's attributes, run the jobs of
// their group and refuse the other's; the queue drains; the VMs retire
// peacefully (the long job still running when its VM's retirement starts
// finishes normally), their servers are deleted and their ads
// invalidated; nothing is left in the collector or on the machine. It
// asserts on HTCondor's state (condor_q, condor_status, condor_history)
// and the clouds' (the VMs' roots, the agents' VM listings), and logs
// submit → first job running, last job done → last server deleted, and
// its wall time.
func TestLiveEndToEnd(t *testing.T) {
	start := time.Now()
	p := condortest.Load(t)
	if os.Geteuid() != 0 {
		t.Fatal("real workers run as root (namespaces, condor_master); run the test as root")
	}
	worker := p.NeedWorkerIdentity(t)
	// The hub and the agents run the pool's tools with its config (the
	// hub as root, whom the pool lets invalidate ads).
	t.Setenv("CONDOR_CONFIG", p.Config)
	// Nothing of Canopy's in the pool before: the assertions at the end
	// would not be about this test otherwise.
	// (A run killed before its hub invalidated them leaves ads with the
	// same VM names: forget them first, and whatever a failed run leaves.)
	if ads := p.Status(t, "-any", "-constraint", liveOurs); len(ads) > 0 {
		t.Logf("the pool lists %d ads of an earlier run's VMs: invalidating them", len(ads))
		invalidateOurs(t, p)
	}
	t.Cleanup(func() {
		if t.Failed() {
			invalidateOurs(t, p)
		}
	})

	bin := buildBinaries(t)
	dir := t.TempDir()
	// The VMs' condor user walks down to their roots: the test's
	// directories, and the agents' state directories that hold the local
	// clouds (created here, before the agents make them 0700).
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, site := range Sites {
		if err := os.Mkdir(filepath.Join(dir, "agent-"+site), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(dir, "condor-signing-key")
	b, err := os.ReadFile(p.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	condorSection := fmt.Sprintf(`condor:
  trust_domain: %s
  signing_key_file: %s
  key_id: POOL
  identity: %s
token_ttl: 24h`, p.TrustDomain, key, worker)
	realWorkers := func(domain string) string {
		s := fmt.Sprintf(`vm_args: [--gossip-bind, 127.0.0.1:0]
  real_workers:
    release_dir: %s
    hide: [%s]
    update_interval: 2`, p.ReleaseDir, p.StateDir)
		if domain != "" {
			s += "\n    domain: " + domain
		}
		return s
	}
	demandBlock := `  source: trace
  trace:
    file: ../traces/demo.yaml   # relative to this config file
    time_scale: 1               # trace seconds per real second`
	htcondorBlock := fmt.Sprintf(`  source: htcondor
  htcondor:
    pool: %s
    bin_dir: %s
    command_timeout: 30s
    default_vm_type: el9
    vm_types:
      - name: el9`, p.Collector, p.BinDir)

	var logs syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sys, err := Start(ctx, Options{BinDir: bin, Dir: dir, Output: &logs,
		Replace: map[string]string{demandBlock: htcondorBlock, "keep_alive: 8s": "keep_alive: 6s"},
		AgentReplace: map[string]string{
			"condor_host: 127.0.0.1:9618": "condor_host: " + p.Collector,
			"token_ttl: 24h":              condorSection,
		},
		SiteReplace: map[string]map[string]string{
			"west": {"vm_args: [--no-condor, --gossip-bind, 127.0.0.1:0]": realWorkers("")},
			"east": {"vm_args: [--no-condor, --gossip-bind, 127.0.0.1:0]": realWorkers(liveEastDomain)},
		}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			sys.Stop()
		}
		if t.Failed() {
			t.Logf("process logs:\n%s", tail(logs.String(), 200))
			for _, site := range Sites {
				for _, c := range globFiles(filepath.Join(sys.CloudDir(site), "vms", "*", "console.log")) {
					t.Logf("%s:\n%s", c, tail(readString(c), 40))
				}
			}
		}
	}()

	// Submit: the long atlas job, the short belle jobs.
	submitAt := time.Now()
	long := p.Submit(t, liveSubmit("atlas", "west", liveLongSeconds, 1, "+VMMaxLifetime = \""+liveLongLifetime+"\"", 1))
	short := p.Submit(t, liveSubmit("belle", "east", liveShortSeconds, 1,
		fmt.Sprintf("+VMInstanceType = %q\n+VMKeepAlive = %q", liveBelleFlavor, liveBelleKeepMins), liveShortJobs))
	t.Logf("submitted atlas cluster %d (1 x %ds, max lifetime %s) and belle cluster %d (%d x %ds, flavor %s)",
		long, liveLongSeconds, liveLongLifetime, short, liveShortJobs, liveShortSeconds, liveBelleFlavor)

	poll := func(what string, limit time.Duration, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, limit)
			}
			if name, ok := sys.Exited(); ok {
				t.Fatalf("%s: process %s exited", what, name)
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: %v", what, ctx.Err())
			case <-time.After(250 * time.Millisecond):
			}
		}
	}

	// The first job runs.
	var firstRunning time.Duration
	poll("a job running", 90*time.Second, func() bool {
		for _, j := range p.Queue(t, "-constraint", fmt.Sprintf("ClusterId == %d || ClusterId == %d", long, short), "-attributes", "JobStatus") {
			if n, _ := j.Int("JobStatus"); n == 2 {
				firstRunning = time.Since(submitAt)
				return true
			}
		}
		return false
	})
	t.Logf("submit -> first job running: %.1f s", firstRunning.Seconds())

	// The startds joined with Canopy's attributes: west's with its bare
	// host name, east's dotted, each for its group, the jobs' requests
	// advertised.
	var atlasSlot, belleSlot condortest.Ad
	poll("both startds in the pool", 60*time.Second, func() bool {
		atlasSlot, belleSlot = nil, nil
		for _, ad := range p.Status(t, "-constraint", "CanopyVMName =!= undefined && PartitionableSlot =?= true") {
			switch ad.String("CanopyGroup") {
			case "atlas":
				atlasSlot = ad
			case "belle":
				belleSlot = ad
			}
		}
		return atlasSlot != nil && belleSlot != nil
	})
	// Canopy's part of submit → running: plan, boot, enrollment, config,
	// condor_master (the startds' own DaemonStartTime, 1 s resolution).
	for _, ad := range []condortest.Ad{atlasSlot, belleSlot} {
		if st, ok := ad.Int("DaemonStartTime"); ok {
			t.Logf("submit -> startd of %s started: %.1f s", ad.String("CanopyVMName"), time.Unix(st, 0).Sub(submitAt.Truncate(time.Second)).Seconds())
		}
	}
	for _, c := range []struct {
		ad                     condortest.Ad
		site, machineSuffix    string
		wantLifetime, wantKeep int64
		wantCpus               int64
	}{
		{atlasSlot, "west", "", 50, 0, 2},
		{belleSlot, "east", "." + liveEastDomain, 0, 4, 4},
	} {
		name := c.ad.String("CanopyVMName")
		if c.ad.String("CanopySite") != c.site || c.ad.String("VMType") != "el9" || c.ad.String("CanopyVMID") == "" ||
			!strings.HasPrefix(name, "canopy-"+c.site+"-") {
			t.Errorf("slot %s: site %q vm type %q id %q", c.ad.String("Name"), c.ad.String("CanopySite"), c.ad.String("VMType"), c.ad.String("CanopyVMID"))
		}
		if m := c.ad.String("Machine"); m != name+c.machineSuffix {
			t.Errorf("startd of %s runs on host %q, want %q", name, m, name+c.machineSuffix)
		}
		if n, _ := c.ad.Int("TotalSlotCpus"); n != c.wantCpus {
			t.Errorf("startd of %s has %d cpus, want %d (its flavor)", name, n, c.wantCpus)
		}
		lt, _ := c.ad.Int("CanopyMaxLifetime")
		ka, _ := c.ad.Int("CanopyKeepAlive")
		if lt != c.wantLifetime || ka != c.wantKeep {
			t.Errorf("startd of %s advertises CanopyMaxLifetime %d CanopyKeepAlive %d, want %d %d", name, lt, ka, c.wantLifetime, c.wantKeep)
		}
	}

	// START refuses another group's job: a belle probe that only the
	// atlas VM would suit (its Requirements ask for it) stays idle
	// through negotiation cycles while that VM has room, and HTCondor's
	// analysis says the machine rejects it.
	probe := p.Submit(t, liveSubmit("belle", "west", 1, 1, fmt.Sprintf("requirements = TARGET.CanopyVMName == %q", atlasSlot.String("CanopyVMName")), 1))
	var analysis string
	rejectRE := regexp.MustCompile(`(?m)^\s*(\d+) reject your job because of their own requirements`)
	defer func() {
		if t.Failed() && analysis != "" {
			t.Logf("last analysis of the probe:\n%s", analysis)
		}
	}()
	poll("the atlas VM rejecting the probe by its own requirements (START)", 45*time.Second, func() bool {
		out, err := p.RunErr("condor_q", "-better-analyze", strconv.Itoa(probe)+".0")
		analysis = string(out)
		m := rejectRE.FindStringSubmatch(analysis)
		return err == nil && m != nil && m[1] != "0"
	})
	for _, j := range p.Queue(t, strconv.Itoa(probe), "-attributes", "JobStatus,NumJobStarts") {
		if st, _ := j.Int("JobStatus"); st != 1 {
			t.Errorf("probe job status %d, want idle (1)", st)
		}
		if n, _ := j.Int("NumJobStarts"); n != 0 {
			t.Errorf("the belle probe started %d times on an atlas VM", n)
		}
	}
	p.Run(t, "condor_rm", strconv.Itoa(probe))

	// The atlas VM's retirement starts (the jobs' max lifetime) while
	// its long job runs.
	var atlasVM string
	poll("the atlas VM retiring with its job running", 90*time.Second, func() bool {
		var book struct {
			VMs []struct {
				Name        string `json:"name"`
				Group       string `json:"group"`
				Retiring    bool   `json:"retiring"`
				MaxLifetime int64  `json:"max_lifetime"`
			} `json:"vms"`
		}
		if GetJSON(ctx, sys.AgentURLs["west"]+"/v1/vms", &book) != nil {
			return false
		}
		for _, vm := range book.VMs {
			if vm.Group == "atlas" && vm.Retiring {
				atlasVM = vm.Name
				return true
			}
		}
		return false
	})
	running := p.Queue(t, strconv.Itoa(long), "-attributes", "JobStatus,RemoteHost")
	if len(running) != 1 {
		t.Fatalf("the long job is not in the queue when its VM retires: %v", running)
	}
	if st, _ := running[0].Int("JobStatus"); st != 2 || !strings.Contains(running[0].String("RemoteHost"), atlasVM) {
		t.Fatalf("when VM %s began retiring the long job was status %d on %q; want running there", atlasVM, st, running[0].String("RemoteHost"))
	}
	t.Logf("VM %s retiring (its jobs' max lifetime) with the long job running", atlasVM)

	// The queue drains; every job completed once, normally.
	poll("the queue drained", 120*time.Second, func() bool {
		return len(p.Queue(t, "-constraint", fmt.Sprintf("ClusterId == %d || ClusterId == %d", long, short), "-attributes", "JobStatus")) == 0
	})
	hist := p.History(t, "-constraint", fmt.Sprintf("ClusterId == %d || ClusterId == %d", long, short),
		"-attributes", "ClusterId,ProcId,JobStatus,ExitCode,NumJobStarts,CompletionDate,LastRemoteHost,CanopyGroup")
	if len(hist) != 1+liveShortJobs {
		t.Fatalf("condor_history shows %d jobs, want %d", len(hist), 1+liveShortJobs)
	}
	var lastDone int64
	for _, h := range hist {
		st, _ := h.Int("JobStatus")
		code, _ := h.Int("ExitCode")
		starts, _ := h.Int("NumJobStarts")
		done, _ := h.Int("CompletionDate")
		if st != 4 || code != 0 || starts != 1 {
			t.Errorf("job %v of %s: status %d exit %d starts %d; want completed once with exit 0", h["ClusterId"], h.String("CanopyGroup"), st, code, starts)
		}
		lastDone = max(lastDone, done)
	}

	// Servers deleted, ads invalidated, nothing left on the machine.
	var lastDeleted time.Time
	poll("every server deleted", 90*time.Second, func() bool {
		for _, site := range Sites {
			if len(globFiles(filepath.Join(sys.CloudDir(site), "vms", "*", "server.json"))) > 0 {
				return false
			}
		}
		lastDeleted = time.Now()
		return true
	})
	poll("the collector forgets the VMs", 30*time.Second, func() bool {
		return len(p.Status(t, "-any", "-constraint", liveOurs)) == 0
	})
	for _, site := range Sites {
		var book struct {
			VMs []struct{ Name string } `json:"vms"`
		}
		poll("agent "+site+" lists no VM", 20*time.Second, func() bool {
			return GetJSON(ctx, sys.AgentURLs[site]+"/v1/vms", &book) == nil && len(book.VMs) == 0
		})
		if pids := processesUnder(sys.CloudDir(site)); len(pids) > 0 {
			t.Errorf("processes of %s's VMs left: %v", site, pids)
		}
	}
	if lastDone > 0 {
		t.Logf("last job done -> last server deleted: %.1f s (CompletionDate %s, polled every 250 ms)",
			lastDeleted.Sub(time.Unix(lastDone, 0)).Seconds(), time.Unix(lastDone, 0).Format("15:04:05"))
	}
	sys.Stop()
	stopped = true
	t.Logf("wall time: %.1f s", time.Since(start).Seconds())
}

func globFiles(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	slices.Sort(m)
	return m
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// invalidateOurs makes the collector forget every ad liveOurs selects,
// as the hub does for a deleted VM.
func invalidateOurs(t *testing.T, p *condortest.Pool) {
	t.Helper()
	for _, c := range []struct{ cmd, target string }{{"INVALIDATE_STARTD_ADS", "Machine"}, {"INVALIDATE_STARTD_ADS", "StartD"},
		{"INVALIDATE_MASTER_ADS", "DaemonMaster"}} {
		cmd := exec.Command(p.Tool("condor_advertise"), "-pool", p.Collector, c.cmd, "-")
		cmd.Env = p.Env()
		cmd.Stdin = strings.NewReader(fmt.Sprintf("MyType = \"Query\"\nTargetType = %q\nRequirements = %s\n", c.target, liveOurs))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("condor_advertise %s: %v: %s", c.cmd, err, out)
		}
	}
	if ads := p.Status(t, "-any", "-constraint", liveOurs); len(ads) > 0 {
		t.Errorf("after invalidation the pool still lists %d ads of this test's VMs", len(ads))
	}
}
