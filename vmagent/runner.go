package vmagent

import (
	"context"
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/internal/cmdrun"
	"github.com/canopy-grid/canopy/internal/condortools"
)

// CommandRunner runs the VM's system tools (HTCondor's command-line tools,
// mount, cvmfs_config) and returns what they printed and their exit code.
// err is for failing to run a command at all (not found, killed, too much
// output); a command that ran and exited non-zero is not an err.
// Implementations: ExecRunner (real processes), LogRunner (local test VMs
// without HTCondor) and, in tests, runners that replay recorded outputs.
type CommandRunner interface {
	Run(ctx context.Context, name string, args ...string) (stdout, stderr []byte, exitCode int, err error)
}

// ExecRunner runs commands as child processes, each in its own process
// group, killed as a whole when ctx ends.
type ExecRunner struct {
	// MaxOutput bounds stdout and stderr, each; more is an error. Zero
	// means 1 MiB.
	MaxOutput int
	// CondorBin and CondorSbin are where HTCondor's programs are: bin for
	// the user tools (condor_status, condor_who, condor_drain,
	// condor_config_val), sbin for the daemons and the administration
	// tools (condor_off, condor_reconfig, condor_master). Either alone
	// implies the other (its sibling); a program missing from its
	// directory is looked for in the other, then in PATH and the standard
	// sbin directories (see internal/condortools). Both empty: PATH.
	// Other commands (mount, cvmfs_config) always come from PATH.
	CondorBin, CondorSbin string
}

// ErrOutputTooLarge is returned when a command prints more than the
// runner's limit.
var ErrOutputTooLarge = cmdrun.ErrOutputTooLarge

// Run implements CommandRunner.
func (r ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	if strings.HasPrefix(name, "condor_") {
		name = condortools.Dirs{Bin: r.CondorBin, Sbin: r.CondorSbin}.Path(name)
	}
	return cmdrun.Exec{MaxOutput: r.MaxOutput}.Run(ctx, name, args...)
}

// LogRunner only logs the commands it is given and answers as if each
// succeeded silently. The local cloud uses it: its "VMs" are processes on
// a machine without HTCondor, GlusterFS or CVMFS, so nothing is mounted or
// reloaded and a poll for running jobs finds none.
type LogRunner struct{ Log *logrus.Entry }

// HasCondor reports false: a VM with a LogRunner runs no HTCondor.
func (LogRunner) HasCondor() bool { return false }

// hasCondor reports whether commands run through r reach a real HTCondor:
// false for runners that say so (LogRunner).
func hasCondor(r CommandRunner) bool {
	if h, ok := r.(interface{ HasCondor() bool }); ok {
		return h.HasCondor()
	}
	return true
}

// Run implements CommandRunner.
func (l LogRunner) Run(_ context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	l.Log.WithField("command", commandLine(name, args)).Info("command not run (local VM: no HTCondor, mounts or CVMFS)")
	return nil, nil, 0, nil
}

func commandLine(name string, args []string) string {
	return strings.TrimSpace(name + " " + strings.Join(args, " "))
}

// run runs a command that must succeed and returns its stdout; a non-zero
// exit is an error carrying the command line and its stderr.
func run(ctx context.Context, r CommandRunner, name string, args ...string) ([]byte, error) {
	stdout, stderr, code, err := r.Run(ctx, name, args...)
	if err != nil {
		return stdout, err
	}
	if code != 0 {
		return stdout, &CommandError{Command: commandLine(name, args), ExitCode: code, Stderr: firstLines(stderr, 3)}
	}
	return stdout, nil
}

// CommandError is a command that exited non-zero.
type CommandError struct {
	Command  string
	ExitCode int
	Stderr   string
}

func (e *CommandError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: exit status %d", e.Command, e.ExitCode)
	}
	return fmt.Sprintf("%s: exit status %d: %s", e.Command, e.ExitCode, e.Stderr)
}

// firstLines returns up to n non-empty lines of b, joined by " / ", each
// cut to 200 bytes: enough to say what went wrong, bounded for logs.
func firstLines(b []byte, n int) string {
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if len(line) > 200 {
			line = line[:200] + "..."
		}
		out = append(out, line)
		if len(out) == n {
			break
		}
	}
	return strings.Join(out, " / ")
}
