// Package condortest gives tests a live HTCondor pool: the personal pool on
// 127.0.0.1 that deploy/testbed/htcondor/up.sh brings up (collector,
// negotiator and schedd under one condor_master, IDTOKENS + FS security),
// and worker startds that tests start themselves, each a fake VM with its
// own host name (StartWorker).
//
// up.sh writes what tests need to an env file (shell KEY=value lines,
// DefaultEnvFile, or the file named by $CANOPY_HTCONDOR_ENV); Load reads
// it. Without it, or with the pool's master not running, every helper
// fails the test and says to run up.sh: a missing pool is a broken test
// bed, never a reason to skip.
//
// The helpers run HTCondor's own tools with the pool's CONDOR_CONFIG:
// root's tools act as the pool owner (CONDOR_IDS), jobs are submitted as
// the pool's submit user, tokens are minted by the pool owner, who holds
// the signing key.
package condortest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DefaultEnvFile is where up.sh writes the pool's description.
const DefaultEnvFile = "/var/lib/canopy-testbed/htcondor/env"

// EnvFileVariable names an env file other than DefaultEnvFile.
const EnvFileVariable = "CANOPY_HTCONDOR_ENV"

// upHint is what a test is told when the pool is not there.
const upHint = "bring the HTCondor test pool up first: sudo deploy/testbed/htcondor/up.sh " +
	"(with CANOPY_HTCONDOR_TARBALL=/path/htcondor-*.tar.xz, or HTCondor installed with condor_master on PATH)"

// CommandTimeout bounds every tool the helpers run.
const CommandTimeout = 2 * time.Minute

// Pool is the running test pool, as up.sh described it.
type Pool struct {
	// EnvFile is the file the pool was read from.
	EnvFile string
	// Config is the pool's CONDOR_CONFIG.
	Config string
	// Version is HTCondor's version ("24.0.23").
	Version string
	// ReleaseDir, BinDir, SbinDir, LibDir and LibexecDir are the
	// installation's directories.
	ReleaseDir, BinDir, SbinDir, LibDir, LibexecDir string
	// StateDir is the pool's LOCAL_DIR (logs, spool, signing key).
	StateDir string
	// Collector is the collector's address, host:port.
	Collector string
	// Schedd is the schedd's name.
	Schedd string
	// TrustDomain is the pool's TRUST_DOMAIN: workers present tokens for
	// condor@TrustDomain.
	TrustDomain string
	// UIDDomain is the central manager's UID_DOMAIN.
	UIDDomain string
	// SigningKey is the pool signing key's path.
	SigningKey string
	// PoolUser runs the central manager's daemons and owns SigningKey.
	PoolUser string
	// SubmitUser is who Submit submits jobs as.
	SubmitUser string
	// HubIdentity is the identity root's HTCondor tools authenticate as
	// on this host (FS), which the pool's config lets invalidate ads as
	// deploy/htcondor/README.md tells a real pool to let the hub.
	HubIdentity string
	// MasterPID is the central manager's condor_master.
	MasterPID int
}

// Load reads the pool's env file and checks that its master runs. It fails
// the test, saying how to bring the pool up, when it cannot.
func Load(t testing.TB) *Pool {
	t.Helper()
	p, err := LoadFile(envFile())
	if err != nil {
		t.Fatalf("HTCondor test pool: %v\n%s", err, upHint)
	}
	if err := p.Running(); err != nil {
		t.Fatalf("HTCondor test pool: %v\n%s", err, upHint)
	}
	return p
}

func envFile() string {
	if f := os.Getenv(EnvFileVariable); f != "" {
		return f
	}
	return DefaultEnvFile
}

// LoadFile parses an env file as up.sh writes it (KEY=value lines; blank
// lines and # comments are ignored) without checking that the pool runs.
func LoadFile(path string) (*Pool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the pool's env file: %w", err)
	}
	kv, err := parseEnv(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p := &Pool{EnvFile: path}
	fields := []struct {
		key string
		dst *string
	}{
		{"CONDOR_CONFIG", &p.Config}, {"HTC_VERSION", &p.Version}, {"HTC_RELEASE_DIR", &p.ReleaseDir},
		{"HTC_BIN", &p.BinDir}, {"HTC_SBIN", &p.SbinDir}, {"HTC_LIB", &p.LibDir}, {"HTC_LIBEXEC", &p.LibexecDir},
		{"HTC_STATE", &p.StateDir}, {"HTC_COLLECTOR", &p.Collector}, {"HTC_SCHEDD", &p.Schedd},
		{"HTC_TRUST_DOMAIN", &p.TrustDomain}, {"HTC_UID_DOMAIN", &p.UIDDomain}, {"HTC_SIGNING_KEY", &p.SigningKey},
		{"HTC_POOL_USER", &p.PoolUser}, {"HTC_SUBMIT_USER", &p.SubmitUser}, {"HTC_HUB_IDENTITY", &p.HubIdentity},
	}
	var missing []string
	for _, f := range fields {
		v, ok := kv[f.key]
		if !ok || v == "" {
			missing = append(missing, f.key)
			continue
		}
		*f.dst = v
	}
	pid, err := strconv.Atoi(kv["HTC_MASTER_PID"])
	if err != nil || pid <= 0 {
		missing = append(missing, "HTC_MASTER_PID")
	}
	p.MasterPID = pid
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks %s", path, strings.Join(missing, ", "))
	}
	return p, nil
}

// maxEnvLines bounds the env file.
const maxEnvLines = 1000

// parseEnv reads KEY=value lines.
func parseEnv(b []byte) (map[string]string, error) {
	kv := map[string]string{}
	s := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; s.Scan(); n++ {
		if n > maxEnvLines {
			return nil, fmt.Errorf("over %d lines", maxEnvLines)
		}
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !envKeyRE.MatchString(k) {
			return nil, fmt.Errorf("line %d: %.80q is not KEY=value", n, line)
		}
		kv[k] = v
	}
	return kv, s.Err()
}

var envKeyRE = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// Running reports (as an error) whether the pool's master is not running.
func (p *Pool) Running() error {
	if !processIs(p.MasterPID, "condor_master") {
		return fmt.Errorf("the pool's condor_master (pid %d, from %s) is not running", p.MasterPID, p.EnvFile)
	}
	return nil
}

// DaemonPID returns the PID of one of the central manager's daemons
// ("condor_schedd", "condor_collector", ...): a process below the pool's
// master whose command is that program.
func (p *Pool) DaemonPID(name string) (int, error) {
	for _, d := range descendants(p.MasterPID) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.pid))
		if err != nil {
			continue
		}
		prog, _, _ := bytes.Cut(b, []byte{0})
		if filepath.Base(string(prog)) == name {
			return d.pid, nil
		}
	}
	return 0, fmt.Errorf("no %s below the pool's master (pid %d)", name, p.MasterPID)
}

// processIs reports whether pid is alive and its command line names prog.
func processIs(pid int, prog string) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(prog))
}

// Tool returns the path of an HTCondor program of the pool: in bin, or
// in sbin (daemons, and the admin tools condor_advertise, condor_off,
// condor_on, condor_reconfig, condor_restart).
func (p *Pool) Tool(name string) string {
	if b := filepath.Join(p.BinDir, name); fileExists(b) {
		return b
	}
	if s := filepath.Join(p.SbinDir, name); fileExists(s) {
		return s
	}
	return filepath.Join(p.BinDir, name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Env is the environment the pool's tools run with: this process's
// environment with CONDOR_CONFIG set to the pool's config.
func (p *Pool) Env() []string {
	return withEnv(os.Environ(), "CONDOR_CONFIG", p.Config)
}

// withEnv returns env with key set to value (replacing any earlier value).
func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return append(out, key+"="+value)
}

// SubmitTimeout bounds condor_submit (a submit of 100,000 jobs takes a
// while on a small machine).
const SubmitTimeout = 15 * time.Minute

// runOpts are how one tool is run.
type runOpts struct {
	user    string // run as this user; "" for this process's
	dir     string // working directory; "" for /
	stdin   []byte
	timeout time.Duration // 0: CommandTimeout
}

// run runs an HTCondor tool of the pool, bounded by CommandTimeout, and
// returns its stdout; a non-zero exit is an error carrying its stderr.
func (p *Pool) run(o runOpts, name string, args ...string) ([]byte, error) {
	timeout := o.timeout
	if timeout <= 0 {
		timeout = CommandTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Tool(name), args...)
	cmd.Env = p.Env()
	cmd.Dir = "/"
	if o.dir != "" {
		cmd.Dir = o.dir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if o.user != "" {
		u, cred, err := lookupUser(o.user)
		if err != nil {
			return nil, err
		}
		cmd.SysProcAttr.Credential = cred
		cmd.Env = withEnv(withEnv(cmd.Env, "HOME", u.HomeDir), "USER", u.Username)
	}
	if o.stdin != nil {
		cmd.Stdin = bytes.NewReader(o.stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	line := strings.TrimSpace(name + " " + strings.Join(args, " "))
	if ctx.Err() != nil {
		return stdout.Bytes(), fmt.Errorf("%s: no answer within %s", line, timeout)
	}
	if err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", line, err, clip(stderr.String(), 800))
	}
	return stdout.Bytes(), nil
}

// lookupUser returns a user and the credential to run as them.
func lookupUser(name string) (*user.User, *syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, nil, fmt.Errorf("user %s: %w", name, err)
	}
	return u, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}, nil
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Run runs an HTCondor tool of the pool as this process's user (root's
// tools act as the pool owner) and returns its stdout; a failure fails
// the test.
func (p *Pool) Run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := p.run(runOpts{}, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunErr is Run that returns the failure instead of failing the test.
func (p *Pool) RunErr(name string, args ...string) ([]byte, error) {
	return p.run(runOpts{}, name, args...)
}

// JobDir returns a new directory owned by the submit user, removed when
// the test ends: jobs' initial directory, where their output and logs go.
func (p *Pool) JobDir(t testing.TB) string {
	t.Helper()
	_, cred, err := lookupUser(p.SubmitUser)
	if err != nil {
		t.Fatalf("HTCondor test pool: submit user: %v\n%s", err, upHint)
	}
	dir, err := os.MkdirTemp("", "condortest-jobs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

var submittedRE = regexp.MustCompile(`(?m)^(\d+) job\(s\) submitted to cluster (\d+)\.`)

// Submit submits a submit description (the text of a submit file) as the
// submit user, from a fresh JobDir, and returns the cluster id. The
// cluster is removed from the queue when the test ends (if still there).
func (p *Pool) Submit(t testing.TB, submit string) int {
	t.Helper()
	return p.SubmitIn(t, p.JobDir(t), submit)
}

// SubmitIn is Submit from dir (which the submit user must be able to
// write: see JobDir).
func (p *Pool) SubmitIn(t testing.TB, dir, submit string) int {
	t.Helper()
	out, err := p.run(runOpts{user: p.SubmitUser, dir: dir, stdin: []byte(submit), timeout: SubmitTimeout}, "condor_submit")
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	cluster, err := ParseSubmitted(out)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	t.Cleanup(func() {
		_, _ = p.run(runOpts{user: p.SubmitUser, timeout: SubmitTimeout}, "condor_rm", strconv.Itoa(cluster))
	})
	return cluster
}

// ParseSubmitted reads the cluster id from condor_submit's output
// ("3 job(s) submitted to cluster 12.").
func ParseSubmitted(out []byte) (int, error) {
	m := submittedRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("condor_submit printed no \"submitted to cluster\" line: %s", clip(string(out), 400))
	}
	return strconv.Atoi(string(m[2]))
}

// Ad is one ClassAd as the tools print it with -json.
type Ad map[string]any

// Int returns an integer attribute; ok is false when it is missing or not
// a number.
func (a Ad) Int(name string) (int64, bool) {
	switch v := a[name].(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i, true
		}
		if f, err := v.Float64(); err == nil {
			return int64(f), true
		}
	case float64:
		return int64(v), true
	}
	return 0, false
}

// String returns a string attribute ("" when missing or not a string).
func (a Ad) String(name string) string {
	s, _ := a[name].(string)
	return s
}

// ParseAds reads the -json output of condor_q, condor_status or
// condor_history. Empty output (condor_q's and condor_status's answer when
// nothing matches) is no ads.
func ParseAds(out []byte) ([]Ad, error) {
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(out))
	d.UseNumber()
	var ads []Ad
	if err := d.Decode(&ads); err != nil {
		return nil, fmt.Errorf("not a JSON list of ads: %w", err)
	}
	return ads, nil
}

// Query runs `tool -json args...` and returns the ads it printed.
func (p *Pool) Query(t testing.TB, tool string, args ...string) []Ad {
	t.Helper()
	ads, err := p.QueryErr(tool, args...)
	if err != nil {
		t.Fatal(err)
	}
	return ads
}

// QueryErr is Query that returns the failure instead of failing the test.
func (p *Pool) QueryErr(tool string, args ...string) ([]Ad, error) {
	out, err := p.run(runOpts{}, tool, append([]string{"-json"}, args...)...)
	if err != nil {
		return nil, err
	}
	ads, err := ParseAds(out)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", tool, strings.Join(args, " "), err)
	}
	return ads, nil
}

// Queue runs `condor_q -allusers -json args...` (every user's jobs).
func (p *Pool) Queue(t testing.TB, args ...string) []Ad {
	t.Helper()
	return p.Query(t, "condor_q", append([]string{"-allusers"}, args...)...)
}

// Status runs `condor_status -json args...`.
func (p *Pool) Status(t testing.TB, args ...string) []Ad {
	t.Helper()
	return p.Query(t, "condor_status", args...)
}

// History runs `condor_history -json args...`.
func (p *Pool) History(t testing.TB, args ...string) []Ad {
	t.Helper()
	return p.Query(t, "condor_history", args...)
}

// Token mints an IDTOKEN for identity (condor_token_create, run as the
// pool owner, who holds the signing key), limited to the authorizations
// in authz (none: any) and valid for lifetime (rounded up to seconds;
// zero: no expiry).
func (p *Pool) Token(t testing.TB, identity string, authz []string, lifetime time.Duration) string {
	t.Helper()
	args := []string{"-identity", identity}
	for _, a := range authz {
		args = append(args, "-authz", a)
	}
	if lifetime > 0 {
		args = append(args, "-lifetime", strconv.FormatInt(int64((lifetime+time.Second-1)/time.Second), 10))
	}
	out, err := p.run(runOpts{user: p.PoolUser}, "condor_token_create", args...)
	if err != nil {
		t.Fatalf("mint a token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("condor_token_create printed %.100q, not a token", tok)
	}
	return tok
}

// Eventually calls cond every interval until it returns true, failing the
// test with what and cond's last error if timeout passes first. It returns
// how long it took.
func Eventually(t testing.TB, timeout, interval time.Duration, what string, cond func() (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return time.Since(start)
		}
		lastErr = err
		if !time.Now().Before(deadline) {
			if lastErr != nil {
				t.Fatalf("%s: not within %s: %v", what, timeout, lastErr)
			}
			t.Fatalf("%s: not within %s", what, timeout)
		}
		<-tick.C
	}
}
