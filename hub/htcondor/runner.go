package htcondor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/canopy-grid/canopy/internal/condortools"
)

// Cmd is one run of an HTCondor tool.
type Cmd struct {
	// Name is the tool ("condor_q"); the runner finds it.
	Name string
	Args []string
	// Stdin is fed to the tool; nil means none.
	Stdin []byte
}

// String is the command line: the name and the arguments joined by single
// spaces, as the recordings' .cmd files hold them.
func (c Cmd) String() string {
	return strings.Join(append([]string{c.Name}, c.Args...), " ")
}

// Runner runs HTCondor's command-line tools. Run starts cmd, hands its
// standard output to stdout as a stream (stdout must not keep the reader),
// waits for it to exit and returns what it printed on standard error and its
// exit code. err is for failing to run the command at all or to read its
// output (including stdout's own error, wrapped); a command that ran and
// exited non-zero is not an err. Implementations: ExecRunner, and in tests
// condorfake.Replayer, which replays recorded outputs.
type Runner interface {
	Run(ctx context.Context, cmd Cmd, stdout func(io.Reader) error) (stderr []byte, exitCode int, err error)
}

// ExecRunner runs the tools as child processes, each in its own process
// group, killed as a whole when the context ends.
type ExecRunner struct {
	// BinDir and SbinDir are where the tools are (see Config.BinDir):
	// condor_advertise is in sbin, condor_q and condor_status in bin.
	BinDir, SbinDir string
	// MaxStderr bounds what is kept of standard error; zero means 64 KiB.
	MaxStderr int
}

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, c Cmd, stdout func(io.Reader) error) ([]byte, int, error) {
	path := condortools.Dirs{Bin: r.BinDir, Sbin: r.SbinDir}.Path(c.Name)
	limit := r.MaxStderr
	if limit <= 0 {
		limit = 64 << 10
	}
	cmd := exec.CommandContext(ctx, path, c.Args...)
	cmd.Dir = "/"
	cmd.Env = queryTimeoutEnv(ctx, os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	stderr := &clippedBuffer{limit: limit}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, -1, fmt.Errorf("run %s: %w", c.Name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, -1, fmt.Errorf("run %s: %w", c.Name, err)
	}
	readErr := stdout(out)
	if readErr != nil {
		// The output is useless: stop the tool rather than wait for it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// Drain what the reader left so that the tool is not blocked on a full
	// pipe; the context bounds how long this can take.
	_, _ = io.Copy(io.Discard, out)
	waitErr := cmd.Wait()
	if ctx.Err() != nil {
		return stderr.Bytes(), -1, fmt.Errorf("run %s: %w", c.Name, ctx.Err())
	}
	if readErr != nil {
		return stderr.Bytes(), -1, readErr
	}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		return stderr.Bytes(), 0, nil
	case errors.As(waitErr, &exitErr) && exitErr.Exited():
		return stderr.Bytes(), exitErr.ExitCode(), nil
	}
	return stderr.Bytes(), -1, fmt.Errorf("run %s: %w", c.Name, waitErr)
}

// queryTimeoutEnv returns env with condor_q's own query timeout
// (Q_QUERY_TIMEOUT, 20 s by default) raised to what is left of ctx's
// deadline, unless env sets it: a big queue on a busy schedd can take
// longer than 20 s to answer, and then condor_q gives up ("Failed to fetch
// ads") although the hub's command_timeout allows more.
func queryTimeoutEnv(ctx context.Context, env []string) []string {
	const name = "_CONDOR_Q_QUERY_TIMEOUT"
	deadline, ok := ctx.Deadline()
	if !ok {
		return env
	}
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return env
		}
	}
	secs := int(time.Until(deadline).Seconds())
	if secs <= 20 {
		return env
	}
	return append(env, fmt.Sprintf("%s=%d", name, secs))
}

// clippedBuffer keeps the first limit bytes written to it.
type clippedBuffer struct {
	bytes.Buffer
	limit int
}

func (b *clippedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// FailureKind says how a tool failed.
type FailureKind string

// Failure kinds.
const (
	// FailStart: the tool could not be run (not found, not executable).
	FailStart FailureKind = "start"
	// FailTimeout: the tool did not finish within Config.CommandTimeout
	// (or the poll's context ended).
	FailTimeout FailureKind = "timeout"
	// FailExit: the tool exited non-zero.
	FailExit FailureKind = "exit"
	// FailReported: the tool exited zero but said on standard error that
	// it failed (condor_q prints "-- Failed to fetch ads from ..." for a
	// schedd it cannot reach).
	FailReported FailureKind = "reported"
	// FailOutput: the tool's output is not what it should be: garbage,
	// truncated, or an ad that is not valid.
	FailOutput FailureKind = "output"
)

// CommandError is a tool that failed: which command, how, and what it said.
type CommandError struct {
	Command  string
	Kind     FailureKind
	ExitCode int
	// Stderr is the first lines of what the tool printed on standard error.
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	var b strings.Builder
	b.WriteString(e.Command)
	b.WriteString(": ")
	switch e.Kind {
	case FailExit:
		fmt.Fprintf(&b, "exit status %d", e.ExitCode)
	case FailReported:
		b.WriteString("the tool reported a failure")
	default:
		b.WriteString(string(e.Kind))
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Stderr != "" {
		b.WriteString(": ")
		b.WriteString(e.Stderr)
	}
	return b.String()
}

func (e *CommandError) Unwrap() error { return e.Err }

// failureMarkers are texts HTCondor's tools print on standard error when a
// query failed even though they exit zero (condor_q does for a schedd it
// cannot reach, in some versions).
var failureMarkers = []string{
	"Failed to fetch ads",
	"Failed to connect",
	"Couldn't contact",
	"Can't find address",
	"AUTHENTICATE:",
	"SECMAN:",
	"CEDAR:",
	"ERROR",
	"Error:",
}

// reportsFailure reports whether stderr holds one of failureMarkers.
func reportsFailure(stderr []byte) bool {
	for _, m := range failureMarkers {
		if bytes.Contains(stderr, []byte(m)) {
			return true
		}
	}
	return false
}

// summarize returns the first non-empty lines of stderr, one line, clipped.
func summarize(stderr []byte) string {
	var parts []string
	for _, l := range strings.Split(string(stderr), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
		if len(parts) == 4 {
			break
		}
	}
	s := strings.Join(parts, " | ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// runTool runs cmd with a timeout and classifies failures: a start failure, a
// timeout, a non-zero exit, a failure reported on standard error, or
// unreadable output (decode's error) all come back as *CommandError. It
// returns standard error for logging when the command succeeded.
func runTool(ctx context.Context, r Runner, timeout time.Duration, cmd Cmd, decode func(io.Reader) error) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	line := cmd.String()
	stderr, code, err := r.Run(ctx, cmd, decode)
	switch {
	case ctx.Err() != nil:
		return nil, &CommandError{Command: line, Kind: FailTimeout, ExitCode: code, Stderr: summarize(stderr),
			Err: fmt.Errorf("no answer within %s: %w", timeout, ctx.Err())}
	case code != 0 && err == nil:
		return nil, &CommandError{Command: line, Kind: FailExit, ExitCode: code, Stderr: summarize(stderr)}
	case reportsFailure(stderr):
		return nil, &CommandError{Command: line, Kind: FailReported, ExitCode: code, Stderr: summarize(stderr), Err: err}
	case err != nil:
		kind := FailStart
		var de *DecodeError
		if errors.As(err, &de) {
			kind = FailOutput
		}
		return nil, &CommandError{Command: line, Kind: kind, ExitCode: code, Stderr: summarize(stderr), Err: err}
	}
	return stderr, nil
}
