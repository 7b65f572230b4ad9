package gluster

import (
	"context"
	"time"

	"github.com/canopy-grid/canopy/internal/cmdrun"
)

// Runner runs one command and returns what it printed and its exit code.
// err is for failures to run it at all (not found, killed on timeout, too
// much output); a command that ran and exited non-zero is not an err.
// Implementations: ExecRunner (real processes) and glusterfake.Runner
// (recorded outputs, for tests).
type Runner interface {
	Run(ctx context.Context, name string, args ...string) (stdout, stderr []byte, exitCode int, err error)
}

// ExecRunner runs commands as child processes, each in its own process
// group: when ctx ends the whole group is killed (the gluster CLI starts
// glfsheal for heal info, which must not outlive it).
type ExecRunner struct {
	// MaxOutput bounds stdout and stderr, each; more is an error. Zero
	// means 16 MiB.
	MaxOutput int
	// WaitDelay is how long to wait for the output pipes after the process
	// was killed (a grandchild may hold them). Zero means 2 s.
	WaitDelay time.Duration
}

// ErrOutputTooLarge is returned when a command prints more than the
// runner's limit.
var ErrOutputTooLarge = cmdrun.ErrOutputTooLarge

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	limit := r.MaxOutput
	if limit <= 0 {
		limit = 16 << 20
	}
	return cmdrun.Exec{MaxOutput: limit, WaitDelay: r.WaitDelay}.Run(ctx, name, args...)
}
