// Package cmdrun runs local command-line tools for the agent and vmagent
// (gluster, HTCondor's tools, mount): each command in its own process group,
// the whole group killed when the context ends (a tool's own children must
// not outlive it), and output bounded so a runaway tool cannot exhaust
// memory.
package cmdrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// ErrOutputTooLarge is returned when a command prints more than the limit.
var ErrOutputTooLarge = errors.New("output too large")

// Exec runs commands as child processes.
type Exec struct {
	// MaxOutput bounds stdout and stderr, each; more is an error. Zero
	// means 1 MiB.
	MaxOutput int
	// WaitDelay is how long to wait for the output pipes after the process
	// was killed (a grandchild may hold them). Zero means 2 s.
	WaitDelay time.Duration
}

// Run runs name with args and returns what it printed and its exit code.
// err is for failing to run it at all (not found, killed when ctx ended,
// too much output); a command that ran and exited non-zero is not an err.
func (r Exec) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	limit := r.MaxOutput
	if limit <= 0 {
		limit = 1 << 20
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the whole process group.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = r.WaitDelay
	if cmd.WaitDelay <= 0 {
		cmd.WaitDelay = 2 * time.Second
	}
	stdout, stderr := &limitedBuffer{limit: limit}, &limitedBuffer{limit: limit}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	if stdout.over || stderr.over {
		return stdout.Bytes(), stderr.Bytes(), -1, fmt.Errorf("%s: %w (limit %d bytes)", name, ErrOutputTooLarge, limit)
	}
	if ctx.Err() != nil {
		return stdout.Bytes(), stderr.Bytes(), -1, fmt.Errorf("%s: %w", name, ctx.Err())
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), stderr.Bytes(), 0, nil
	case errors.As(err, &exitErr) && exitErr.Exited():
		return stdout.Bytes(), stderr.Bytes(), exitErr.ExitCode(), nil
	}
	return stdout.Bytes(), stderr.Bytes(), -1, fmt.Errorf("run %s: %w", name, err)
}

// limitedBuffer keeps at most limit bytes and notes when more came. It has
// no ReadFrom, so that io.Copy goes through Write.
type limitedBuffer struct {
	buf   bytes.Buffer
	limit int
	over  bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.buf.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		// Keep consuming, so the child is not blocked on a full pipe.
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *limitedBuffer) Bytes() []byte { return b.buf.Bytes() }
