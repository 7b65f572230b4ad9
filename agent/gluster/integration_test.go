//go:build integration

package gluster_test

// Integration tests against a real glusterd on 127.0.0.1, brought up by
// deploy/testbed/gluster/up.sh (which installs glusterfs-server and
// openssh-server with apt-get when missing). Run as root:
//
//	go test -tags integration -v ./agent/gluster/
//	go test -tags integration -run XXX -bench CollectLive -benchtime 20x ./agent/gluster/
//
// TestMain stops the test bed with down.sh afterwards only if up.sh
// started glusterd in this run.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/gluster"
	"github.com/canopy-grid/canopy/protocol"
)

// bed is what up.sh printed (KEY=VALUE lines).
var bed = map[string]string{}

const testbedDir = "../../deploy/testbed/gluster"

func TestMain(m *testing.M) {
	start := time.Now()
	cmd := exec.Command("bash", filepath.Join(testbedDir, "up.sh"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "gluster test bed: up.sh failed: %v\n", err)
		os.Exit(1)
	}
	s := bufio.NewScanner(&out)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), "="); ok {
			bed[k] = v
		}
	}
	fmt.Fprintf(os.Stderr, "gluster test bed up in %s: %v\n", time.Since(start).Round(time.Millisecond), bed)
	code := m.Run()
	if bed["STARTED_GLUSTERD"] == "1" {
		down := exec.Command("bash", filepath.Join(testbedDir, "down.sh"))
		down.Stdout, down.Stderr = os.Stderr, os.Stderr
		if err := down.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "gluster test bed: down.sh failed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func glusterCmd() string {
	if _, err := os.Stat("/usr/sbin/gluster"); err == nil {
		return "/usr/sbin/gluster"
	}
	return "gluster"
}

func newCollector() *gluster.Collector {
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	return gluster.New(nil, gluster.Config{Command: glusterCmd(), HealTimeout: time.Minute, Log: log})
}

// gl runs a gluster CLI command for the test's own actions.
func gl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, glusterCmd(), append([]string{"--mode=script"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("gluster %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitFor collects until cond holds or the deadline passes; it returns the
// last report and how many cycles it took.
func waitFor(t *testing.T, c *gluster.Collector, within time.Duration, what string, cond func(protocol.StorageReport) bool) (protocol.StorageReport, int) {
	t.Helper()
	deadline := time.Now().Add(within)
	var r protocol.StorageReport
	for n := 1; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		var err error
		r, err = c.Collect(ctx)
		cancel()
		if err != nil {
			t.Fatalf("collect: %v", err)
		}
		if cond(r) {
			return r, n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s; last report: status %s, reasons %q, errors %q", what, within, r.Status, r.Reasons, r.Errors)
		}
	}
}

func volume(r protocol.StorageReport, name string) protocol.VolumeHealth {
	for _, v := range r.Volumes {
		if v.Name == name {
			return v
		}
	}
	return protocol.VolumeHealth{}
}

func session(r protocol.StorageReport) (protocol.GeoRepHealth, bool) {
	for _, g := range r.GeoReps {
		if g.PrimaryVolume == bed["GL_VOL"] && g.Secondary == bed["GEOREP_SECONDARY"] {
			return g, true
		}
	}
	return protocol.GeoRepHealth{}, false
}

func allWorkers(g protocol.GeoRepHealth, status ...string) bool {
	if len(g.Workers) == 0 {
		return false
	}
	for _, w := range g.Workers {
		ok := false
		for _, s := range status {
			ok = ok || w.Status == s
		}
		if !ok {
			return false
		}
	}
	return true
}

// brickPID reads the PID of the brick whose path contains part.
func brickPID(t *testing.T, vol, part string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _, _, err := gluster.ExecRunner{}.Run(ctx, glusterCmd(), "--xml", "volume", "status", vol)
	if err != nil {
		t.Fatal(err)
	}
	st, err := gluster.ParseVolumeStatus(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, vs := range st {
		for _, b := range vs.Bricks {
			if strings.Contains(b.Path, part) && b.PID > 0 {
				return b.PID
			}
		}
	}
	t.Fatalf("no running brick %s in %s", part, out)
	return 0
}

// TestBrickFailureAndHeal: healthy -> a brick killed by PID -> partial with
// pending heals after writes -> "volume start force" -> healed.
func TestBrickFailureAndHeal(t *testing.T) {
	vol := bed["GL_VOL"]
	c := newCollector()
	waitFor(t, c, 2*time.Minute, "volume up", func(r protocol.StorageReport) bool {
		v := volume(r, vol)
		return v.Status == protocol.StorageUp && v.BricksOnline == 3
	})
	t.Cleanup(func() { gl(t, "volume", "start", vol, "force") })

	pid := brickPID(t, vol, "/b2/")
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r, cycles := waitFor(t, c, time.Minute, "brick reported offline", func(r protocol.StorageReport) bool {
		return volume(r, vol).BricksOnline == 2
	})
	t.Logf("brick death to report: %s (%d collection cycles, last cycle %d ms)", time.Since(killed).Round(time.Millisecond), cycles, r.CycleMillis)
	v := volume(r, vol)
	if v.Status != protocol.StoragePartial || v.QuorumLost {
		t.Errorf("one brick of replica 3 arbiter 1 down: status %s quorum lost %v, want partial and false (reasons %q)", v.Status, v.QuorumLost, v.Reasons)
	}

	// Writes while b2 is down leave entries pending heal on b1 and b3.
	dir := filepath.Join(bed["GL_MNT"], fmt.Sprintf("it-%d", time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), []byte("canopy"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, _ = waitFor(t, c, time.Minute, "pending heals reported", func(r protocol.StorageReport) bool {
		return volume(r, vol).HealPending >= 20
	})
	v = volume(r, vol)
	t.Logf("pending heal entries with b2 down: %d (bricks %d/%d)", v.HealPending, v.BricksOnline, v.BricksTotal)
	if v.Status != protocol.StoragePartial {
		t.Errorf("status %s, want partial (reasons %q)", v.Status, v.Reasons)
	}

	restarted := time.Now()
	gl(t, "volume", "start", vol, "force")
	r, _ = waitFor(t, c, 3*time.Minute, "healed", func(r protocol.StorageReport) bool {
		v := volume(r, vol)
		return v.Status == protocol.StorageUp && v.BricksOnline == 3 && v.HealPending == 0
	})
	t.Logf("brick restart to healed and up: %s", time.Since(restarted).Round(time.Millisecond))
	if err := os.RemoveAll(dir); err != nil {
		t.Error(err)
	}
}

// TestGeoRepStates: session paused, resumed, stopped, started, secondary
// volume stopped, and back; each is reported.
func TestGeoRepStates(t *testing.T) {
	vol, sec, secVol := bed["GL_VOL"], bed["GEOREP_SECONDARY"], bed["GL_SEC_VOL"]
	if sec == "" {
		t.Fatal("test bed has no geo-replication (GL_GEOREP=0?)")
	}
	c := newCollector()
	syncing := func(r protocol.StorageReport) bool {
		g, ok := session(r)
		return ok && g.Status == protocol.StorageUp && allWorkers(g, "Active", "Passive")
	}
	waitFor(t, c, 3*time.Minute, "session syncing", syncing)
	t.Cleanup(func() {
		// Leave the bed as up.sh makes it, whatever failed.
		exec.Command(glusterCmd(), "--mode=script", "volume", "start", secVol).Run()
		exec.Command(glusterCmd(), "--mode=script", "volume", "geo-replication", vol, sec, "stop", "force").Run()
		exec.Command(glusterCmd(), "--mode=script", "volume", "geo-replication", vol, sec, "start").Run()
	})

	steps := []struct {
		name   string
		action []string
		within time.Duration
		check  func(protocol.StorageReport) bool
	}{
		{"paused", []string{"volume", "geo-replication", vol, sec, "pause"}, time.Minute, func(r protocol.StorageReport) bool {
			g, ok := session(r)
			return ok && allWorkers(g, "Paused") && g.Status == protocol.StorageDown
		}},
		{"resumed", []string{"volume", "geo-replication", vol, sec, "resume"}, 2 * time.Minute, syncing},
		{"stopped", []string{"volume", "geo-replication", vol, sec, "stop"}, time.Minute, func(r protocol.StorageReport) bool {
			g, ok := session(r)
			return ok && allWorkers(g, "Stopped") && g.Status == protocol.StorageDown
		}},
		{"started", []string{"volume", "geo-replication", vol, sec, "start"}, 2 * time.Minute, syncing},
		{"secondary down", []string{"volume", "stop", secVol}, 3 * time.Minute, func(r protocol.StorageReport) bool {
			g, ok := session(r)
			faulty := false
			for _, w := range g.Workers {
				faulty = faulty || w.Status == "Faulty"
			}
			return ok && faulty && volume(r, secVol).Status == protocol.StorageDown &&
				(g.Status == protocol.StorageDegraded || g.Status == protocol.StorageDown)
		}},
	}
	for _, st := range steps {
		began := time.Now()
		gl(t, st.action...)
		if st.name == "secondary down" {
			// A change to sync makes the workers notice the secondary is gone.
			if err := os.WriteFile(filepath.Join(bed["GL_MNT"], "georep-probe"), []byte(began.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		r, cycles := waitFor(t, c, st.within, st.name, st.check)
		g, _ := session(r)
		var ws []string
		for _, w := range g.Workers {
			ws = append(ws, w.Status)
		}
		t.Logf("%s: reported after %s (%d cycles): session %s %q, workers %v", st.name, time.Since(began).Round(time.Millisecond), cycles, g.Status, g.Reasons, ws)
	}

	// Back: secondary started; after the automatic recovery the live sync
	// can stall (see the fixture notes), so the session is restarted.
	gl(t, "volume", "start", secVol)
	gl(t, "volume", "geo-replication", vol, sec, "stop", "force")
	gl(t, "volume", "geo-replication", vol, sec, "start")
	r, _ := waitFor(t, c, 3*time.Minute, "recovered", func(r protocol.StorageReport) bool {
		return syncing(r) && volume(r, secVol).Status == protocol.StorageUp
	})
	if r.Status == protocol.StorageDown || r.Status == protocol.StorageDegraded {
		t.Errorf("site %s after recovery: %q", r.Status, r.Reasons)
	}
}

// BenchmarkCollectLive measures one collection cycle against the live test
// bed: wall time per cycle, and the CPU the gluster CLI processes it runs
// (children) and glusterd spend per cycle.
func BenchmarkCollectLive(b *testing.B) {
	c := newCollector()
	gdPID, _ := strconv.Atoi(bed["GLUSTERD_PID"])
	var before, after syscall.Rusage
	gd0 := procCPU(gdPID)
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &before); err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		r, err := c.Collect(context.Background())
		if err != nil || len(r.Errors) > 0 {
			b.Fatalf("collect: %v %q", err, r.Errors)
		}
		n++
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &after); err != nil {
		b.Fatal(err)
	}
	cpu := func(u syscall.Rusage) time.Duration {
		return time.Duration(u.Utime.Nano() + u.Stime.Nano())
	}
	b.ReportMetric(float64(cpu(after)-cpu(before))/float64(n)/1e6, "cli-cpu-ms/op")
	if gdPID > 0 {
		b.ReportMetric(float64(procCPU(gdPID)-gd0)/float64(n)/1e6, "glusterd-cpu-ms/op")
	}
}

// procCPU returns a process's user+system CPU time from /proc, with that
// of its waited-for children (glusterd runs gsyncd for geo-replication
// status); 0 if unreadable.
func procCPU(pid int) time.Duration {
	bs, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(bs)
	fs := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fs) < 15 {
		return 0
	}
	var ticks int64
	for _, f := range fs[11:15] { // utime stime cutime cstime
		n, _ := strconv.ParseInt(f, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}
