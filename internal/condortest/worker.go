package condortest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// WorkerOptions describe a worker StartWorker starts: a fake VM.
type WorkerOptions struct {
	// Hostname is the VM's host name, bare ("vm1") or dotted
	// ("vm2.example.test"); it resolves to 127.0.0.1 inside the worker.
	// Required.
	Hostname string
	// ConfigDir is the caller's configuration directory (the worker's
	// LOCAL_CONFIG_DIR): its files are read in lexical order after the
	// base config StartWorker writes, so they can override any of it except
	// the loopback settings and the state directories, which are read
	// last. Empty: none.
	ConfigDir string
	// Token, when set, is written to the worker's token directory (its
	// SEC_TOKEN_DIRECTORY unless ConfigDir names another): an IDTOKEN for
	// condor@<TrustDomain> lets the startd join the pool (Pool.Token).
	Token string
	// Cpus and MemoryMiB size the machine (NUM_CPUS, MEMORY); defaults 2
	// and 2048.
	Cpus, MemoryMiB int
}

// Worker is a running worker: a condor_master (as root) and its startd,
// in their own UTS namespace (the host name) and mount namespace (a
// private /etc/hosts, and every power-off program replaced by a stub that
// only records that it ran).
type Worker struct {
	// Hostname is the worker's host name.
	Hostname string
	// Dir holds the worker's config, state and logs.
	Dir string
	// Config is the worker's CONDOR_CONFIG.
	Config string
	// PID is the worker's condor_master.
	PID int

	pool      *Pool
	startTime uint64
	done      chan struct{}
	exitedAt  time.Time // set before done is closed
	stopOnce  sync.Once
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// powerOffPrograms are replaced by the stub inside every worker: a worker
// master runs DEFAULT_MASTER_SHUTDOWN_SCRIPT (vmagent sets /sbin/poweroff)
// as root when it exits, and this machine must stay up.
var powerOffPrograms = []string{"/sbin/poweroff", "/usr/sbin/poweroff", "/sbin/halt", "/usr/sbin/halt",
	"/sbin/reboot", "/usr/sbin/reboot", "/sbin/shutdown", "/usr/sbin/shutdown"}

// PoweroffLog is the file, in a worker's Dir, where the power-off stub
// appends one line per run: the Unix time in seconds (with nanoseconds),
// the name it ran as and its arguments.
const PoweroffLog = "poweroff.log"

// StartWorker starts a worker for a fake VM called opts.Hostname that
// joins the pool, and stops it when the test ends (Stop). It fails the
// test when it cannot start one, and refuses to start a worker whose
// master would run a shutdown program that is not the stub.
func (p *Pool) StartWorker(t testing.TB, opts WorkerOptions) *Worker {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("StartWorker: a worker's condor_master runs as root (startds run jobs as their owners); run the test as root\n%s", upHint)
	}
	if err := p.Running(); err != nil {
		t.Fatalf("HTCondor test pool: %v\n%s", err, upHint)
	}
	if !hostnameRE.MatchString(opts.Hostname) || len(opts.Hostname) > 253 {
		t.Fatalf("StartWorker: %q is not a host name", opts.Hostname)
	}
	if opts.Cpus <= 0 {
		opts.Cpus = 2
	}
	if opts.MemoryMiB <= 0 {
		opts.MemoryMiB = 2048
	}
	dir, err := os.MkdirTemp("", "condortest-"+strings.SplitN(opts.Hostname, ".", 2)[0]+"-")
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{Hostname: opts.Hostname, Dir: dir, Config: filepath.Join(dir, "condor_config"), pool: p,
		done: make(chan struct{})}
	t.Cleanup(func() {
		w.Stop(t)
		if t.Failed() {
			w.logTail(t)
		}
		_ = os.RemoveAll(dir)
	})
	if err := w.prepare(opts); err != nil {
		t.Fatalf("StartWorker %s: %v", opts.Hostname, err)
	}
	stubbed, err := stubTargets()
	if err != nil {
		t.Fatalf("StartWorker %s: %v", opts.Hostname, err)
	}
	if err := w.checkShutdownProgram(stubbed); err != nil {
		t.Fatalf("StartWorker %s: %v", opts.Hostname, err)
	}
	if err := w.start(stubbed); err != nil {
		t.Fatalf("StartWorker %s: %v", opts.Hostname, err)
	}
	return w
}

// prepare writes the worker's directories, config, hosts file, token and
// power-off stub.
func (w *Worker) prepare(opts WorkerOptions) error {
	p := w.pool
	_, condor, err := lookupUser("condor")
	if err != nil {
		return fmt.Errorf("the condor account: %w (up.sh creates it)", err)
	}
	// The startd works as the condor user: the directory chain must be
	// traversable, and its state directories its own.
	if err := os.Chmod(w.Dir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"log", "spool", "execute", "lock", "run"} {
		path := filepath.Join(w.Dir, d)
		if err := os.Mkdir(path, 0o755); err != nil {
			return err
		}
		if err := os.Chown(path, int(condor.Uid), int(condor.Gid)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(w.Dir, "tokens.d"), 0o700); err != nil {
		return err
	}
	if opts.Token != "" {
		if err := os.WriteFile(filepath.Join(w.Dir, "tokens.d", "condortest"), []byte(opts.Token+"\n"), 0o600); err != nil {
			return err
		}
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# Written by internal/condortest for the fake VM %s.", w.Hostname)
	line("RELEASE_DIR = %s", p.ReleaseDir)
	line("BIN = %s", p.BinDir)
	line("SBIN = %s", p.SbinDir)
	line("LIB = %s", p.LibDir)
	line("LIBEXEC = %s", p.LibexecDir)
	line("# As a packaged installation's config.d/00-security.")
	line("use security:recommended")
	line("CONDOR_HOST = %s", p.Collector)
	line("DAEMON_LIST = MASTER, STARTD")
	line("UPDATE_INTERVAL = 5")
	line("# No CPU benchmarks at start: they hold up a graceful shutdown.")
	line("RunBenchmarks = False")
	line("NUM_CPUS = %d", opts.Cpus)
	line("MEMORY = %d", opts.MemoryMiB)
	line("SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS")
	line("SEC_TOKEN_DIRECTORY = %s", filepath.Join(w.Dir, "tokens.d"))
	line("CONDOR_ADMIN =")
	line("MAIL = /bin/false")
	if opts.ConfigDir != "" {
		line("LOCAL_CONFIG_DIR = %s", opts.ConfigDir)
	}
	line("# Read after LOCAL_CONFIG_DIR.")
	line("LOCAL_CONFIG_FILE = %s", filepath.Join(w.Dir, "condortest-last.conf"))
	if err := os.WriteFile(w.Config, []byte(b.String()), 0o644); err != nil {
		return err
	}
	b.Reset()
	line("# Written by internal/condortest: read last, after the caller's config.")
	line("# Every daemon of the test machine shares 127.0.0.1 (see the HTCondor notes).")
	line("NETWORK_INTERFACE = 127.0.0.1")
	line("BIND_ALL_INTERFACES = False")
	line("ENABLE_IPV6 = False")
	line("USE_SHARED_PORT = False")
	line("# A worker on the collector's own machine: HTCondor would try its family")
	line("# session with the central manager's daemons, which refuse it.")
	line("SEC_USE_FAMILY_SESSION = False")
	line("LOCAL_DIR = %s", w.Dir)
	line("LOG = $(LOCAL_DIR)/log")
	line("SPOOL = $(LOCAL_DIR)/spool")
	line("EXECUTE = $(LOCAL_DIR)/execute")
	line("LOCK = $(LOCAL_DIR)/lock")
	line("RUN = $(LOCAL_DIR)/run")
	if err := os.WriteFile(filepath.Join(w.Dir, "condortest-last.conf"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	names := w.Hostname
	if short, _, dotted := strings.Cut(w.Hostname, "."); dotted {
		names += " " + short
	}
	hosts := fmt.Sprintf("127.0.0.1 localhost\n127.0.0.1 %s\n", names)
	if err := os.WriteFile(filepath.Join(w.Dir, "hosts"), []byte(hosts), 0o644); err != nil {
		return err
	}
	stub := fmt.Sprintf("#!/bin/sh\n# internal/condortest: stands in for power-off programs inside a test worker.\n"+
		"echo \"$(date +%%s.%%N) $0 $*\" >>%s\nexit 0\n", filepath.Join(w.Dir, PoweroffLog))
	return os.WriteFile(filepath.Join(w.Dir, "poweroff-stub"), []byte(stub), 0o755)
}

// stubTargets are the files the power-off programs resolve to (on Debian
// 12 they are all links to systemctl), each once.
func stubTargets() ([]string, error) {
	var out []string
	for _, p := range powerOffPrograms {
		r, err := filepath.EvalSymlinks(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", p, err)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// checkShutdownProgram refuses a config whose master would run, as root, a
// program that is neither stubbed in the worker nor inside its directory.
func (w *Worker) checkShutdownProgram(stubbed []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.pool.Tool("condor_config_val"), "-subsystem", "master", "DEFAULT_MASTER_SHUTDOWN_SCRIPT")
	cmd.Env = withEnv(os.Environ(), "CONDOR_CONFIG", w.Config)
	out, err := cmd.Output()
	prog := strings.TrimSpace(string(out))
	if err != nil || prog == "" {
		return nil // not defined: the master just exits
	}
	resolved, rerr := filepath.EvalSymlinks(prog)
	switch {
	case rerr == nil && slices.Contains(stubbed, resolved):
		return nil
	case rerr == nil && strings.HasPrefix(resolved, w.Dir+"/"):
		return nil
	}
	return fmt.Errorf("the worker's DEFAULT_MASTER_SHUTDOWN_SCRIPT is %q, which the worker would run as root on this machine: "+
		"only %s (stubbed inside the worker) or a program in the worker's directory are allowed", prog, strings.Join(powerOffPrograms, ", "))
}

// nsScript runs inside the worker's new UTS and mount namespaces (made
// private by unshare, so nothing mounted here is seen outside): it sets the
// host name, mounts the private /etc/hosts, hides the central manager's
// state directory (its signing key, and FS_LOCAL_DIR: like a real VM, the
// worker cannot authenticate to the collector with FS and must use its
// token), mounts the power-off stub and becomes the condor_master. Any
// failure stops it before the master runs.
const nsScript = `set -e
h=$1 hosts=$2 stub=$3 master=$4 cmstate=$5
shift 5
hostname "$h"
mount --bind "$hosts" /etc/hosts
mount -t tmpfs -o size=1m,mode=0755 canopy-worker-hide "$cmstate"
for p in "$@"; do mount --bind "$stub" "$p"; done
exec "$master" -f`

// start runs the master and waits (bounded) for its address file.
func (w *Worker) start(stubbed []string) error {
	args := []string{"--uts", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", nsScript, "sh",
		w.Hostname, filepath.Join(w.Dir, "hosts"), filepath.Join(w.Dir, "poweroff-stub"), w.pool.Tool("condor_master"), w.pool.StateDir}
	cmd := exec.Command("unshare", append(args, stubbed...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root", "CONDOR_CONFIG=" + w.Config}
	out, err := os.OpenFile(filepath.Join(w.Dir, "master.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that Stop can signal the group; unshare
	// execs (no fork), so the PID is the master's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start unshare: %w", err)
	}
	w.PID = cmd.Process.Pid
	w.startTime, _ = procStartTime(w.PID)
	go func() {
		_ = cmd.Wait()
		w.exitedAt = time.Now()
		close(w.done)
	}()
	addr := filepath.Join(w.Dir, "log", ".master_address")
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !fileExists(addr) {
		select {
		case <-w.done:
			b, _ := os.ReadFile(filepath.Join(w.Dir, "master.out"))
			return fmt.Errorf("the worker's master exited at once: %s", clip(string(b), 1000))
		case <-deadline.C:
			return fmt.Errorf("the worker's master wrote no address file within 30 s (see %s/log)", w.Dir)
		case <-tick.C:
		}
	}
	return nil
}

// procStartTime is a process's start time in clock ticks since boot
// (/proc/PID/stat field 22), to tell it from a later process with the same
// PID.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// proc is a process, told apart from later ones with the same PID.
type proc struct {
	pid   int
	start uint64
}

func (p proc) alive() bool {
	s, err := procStartTime(p.pid)
	return err == nil && s == p.start
}

// descendants lists every process below pid (from /proc's parent links).
func descendants(pid int) []proc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	kids := map[int][]int{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if parent, err := strconv.Atoi(f[1]); err == nil {
			kids[parent] = append(kids[parent], child)
		}
	}
	var out []proc
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 100000 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range kids[p] {
			if s, err := procStartTime(c); err == nil {
				out = append(out, proc{pid: c, start: s})
			}
			queue = append(queue, c)
		}
	}
	return out
}

// Exited reports whether the worker's master has exited.
func (w *Worker) Exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// Done is closed when the worker's master has exited.
func (w *Worker) Done() <-chan struct{} { return w.done }

// ExitedAt is when the worker's master was seen to exit (zero while it
// runs).
func (w *Worker) ExitedAt() time.Time {
	select {
	case <-w.done:
		return w.exitedAt
	default:
		return time.Time{}
	}
}

// Stop stops the worker, if it still runs: SIGTERM to its master (a
// graceful shutdown of its daemons), SIGQUIT after 30 s, SIGKILL to its
// process group after 10 s more; then whatever is left of the processes
// that were below the master gets SIGKILL. Only processes this worker
// started are signalled (each checked by PID and start time). It is
// called when the test ends; calling it earlier is fine.
func (w *Worker) Stop(t testing.TB) {
	t.Helper()
	w.stopOnce.Do(func() {
		if w.PID == 0 || w.Exited() {
			return
		}
		master := proc{pid: w.PID, start: w.startTime}
		kids := descendants(w.PID)
		_ = syscall.Kill(w.PID, syscall.SIGTERM)
		if !w.waitExit(30 * time.Second) {
			t.Logf("worker %s: master %d still alive 30 s after SIGTERM: SIGQUIT", w.Hostname, w.PID)
			_ = syscall.Kill(w.PID, syscall.SIGQUIT)
			if !w.waitExit(10 * time.Second) {
				t.Logf("worker %s: SIGKILL to process group %d", w.Hostname, w.PID)
				if master.alive() {
					_ = syscall.Kill(-w.PID, syscall.SIGKILL)
				}
				w.waitExit(10 * time.Second)
			}
		}
		var left []proc
		for _, k := range kids {
			if k.alive() {
				left = append(left, k)
			}
		}
		if len(left) > 0 && !waitGone(left, 10*time.Second) {
			for _, k := range left {
				if k.alive() {
					t.Logf("worker %s: SIGKILL to left-over pid %d", w.Hostname, k.pid)
					_ = syscall.Kill(k.pid, syscall.SIGKILL)
				}
			}
			waitGone(left, 5*time.Second)
		}
	})
}

// Kill kills the worker at once, as a VM that is deleted or loses power:
// SIGKILL to its master and every process below it, so that nothing tells
// the collector and the worker's ads stay there until they expire or are
// invalidated. Only processes this worker started are signalled.
func (w *Worker) Kill(t testing.TB) {
	t.Helper()
	w.stopOnce.Do(func() {
		if w.PID == 0 || w.Exited() {
			return
		}
		kids := descendants(w.PID)
		if (proc{pid: w.PID, start: w.startTime}).alive() {
			_ = syscall.Kill(w.PID, syscall.SIGKILL)
		}
		for _, k := range kids {
			if k.alive() {
				_ = syscall.Kill(k.pid, syscall.SIGKILL)
			}
		}
		if !w.waitExit(10*time.Second) || !waitGone(kids, 10*time.Second) {
			t.Errorf("worker %s: processes left after SIGKILL", w.Hostname)
		}
	})
}

// waitExit waits up to d for the master to exit.
func (w *Worker) waitExit(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-w.done:
		return true
	case <-timer.C:
		return false
	}
}

// waitGone waits up to d for every process in ps to be gone.
func waitGone(ps []proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		alive := false
		for _, p := range ps {
			alive = alive || p.alive()
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// Command returns a command that runs an HTCondor tool inside the worker
// (its namespaces, its CONDOR_CONFIG), as the VM's own root would.
func (w *Worker) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return w.CommandPath(ctx, w.pool.Tool(name), args...)
}

// CommandPath is Command for a program named by its path.
func (w *Worker) CommandPath(ctx context.Context, path string, args ...string) *exec.Cmd {
	nsArgs := append([]string{"--target", strconv.Itoa(w.PID), "--uts", "--mount", "--", path}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", nsArgs...)
	cmd.Dir = "/"
	cmd.Env = withEnv(os.Environ(), "CONDOR_CONFIG", w.Config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs an HTCondor tool inside the worker and returns its stdout; a
// failure fails the test.
func (w *Worker) Run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := w.Command(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("worker %s: %s %s: %v: %s", w.Hostname, name, strings.Join(args, " "), err, clip(stderr.String(), 800))
	}
	return stdout.Bytes()
}

// Slots returns the worker's slot ads in the collector (Machine is its
// host name).
func (w *Worker) Slots(t testing.TB) []Ad {
	t.Helper()
	ads, err := w.SlotsErr()
	if err != nil {
		t.Fatal(err)
	}
	return ads
}

// SlotsErr is Slots that returns the failure instead of failing the test.
func (w *Worker) SlotsErr() ([]Ad, error) {
	return w.pool.QueryErr("condor_status", "-constraint", fmt.Sprintf("Machine == %q", w.Hostname))
}

// WaitSlots waits until the worker's slots are in the collector and
// returns them.
func (w *Worker) WaitSlots(t testing.TB, timeout time.Duration) []Ad {
	t.Helper()
	var ads []Ad
	Eventually(t, timeout, 250*time.Millisecond, "worker "+w.Hostname+" slots in condor_status", func() (bool, error) {
		if w.Exited() {
			t.Fatalf("worker %s: master exited", w.Hostname)
		}
		var err error
		ads, err = w.SlotsErr()
		return len(ads) > 0, err
	})
	return ads
}

// PoweroffRuns returns the times the power-off stub ran inside the worker.
func (w *Worker) PoweroffRuns() []time.Time {
	b, err := os.ReadFile(filepath.Join(w.Dir, PoweroffLog))
	if err != nil {
		return nil
	}
	var out []time.Time
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		sec, frac, _ := strings.Cut(f[0], ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		ns, err2 := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		if err1 == nil && err2 == nil {
			out = append(out, time.Unix(s, ns))
		}
	}
	return out
}

// logTail logs the end of the worker's logs (for a failed test).
func (w *Worker) logTail(t testing.TB) {
	for _, f := range []string{"master.out", "log/MasterLog", "log/StartLog"} {
		b, err := os.ReadFile(filepath.Join(w.Dir, f))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("worker %s: tail of %s:\n%s", w.Hostname, f, strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
}
