// Package condorfake replays recorded HTCondor tool outputs for tests: an
// htcondor.Runner that answers each command line with what a recording holds
// (standard output, standard error and exit code, byte for byte) and
// remembers every command it was given, with its standard input.
package condorfake

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/canopy-grid/canopy/hub/htcondor"
)

// Recording is one recorded command: NAME.cmd (the command line), NAME.out,
// NAME.err and NAME.rc.
type Recording struct {
	// Name is the files' base name ("10_condor_q-json_all-states").
	Name string
	// Command is the recorded command line (the .cmd file, trimmed).
	Command  string
	Stdout   []byte
	Stderr   []byte
	ExitCode int
}

// Load reads every recording in dir, by name.
func Load(dir string) (map[string]Recording, error) {
	cmds, err := filepath.Glob(filepath.Join(dir, "*.cmd"))
	if err != nil {
		return nil, err
	}
	out := map[string]Recording{}
	for _, c := range cmds {
		name := strings.TrimSuffix(filepath.Base(c), ".cmd")
		rec, err := LoadOne(dir, name)
		if err != nil {
			return nil, err
		}
		out[name] = rec
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("condorfake: no recordings (*.cmd) in %s", dir)
	}
	return out, nil
}

// LoadOne reads the recording name in dir.
func LoadOne(dir, name string) (Recording, error) {
	read := func(ext string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name+ext))
		if err != nil {
			return nil, fmt.Errorf("condorfake: recording %s: %w", name, err)
		}
		return b, nil
	}
	rec := Recording{Name: name}
	cmd, err := read(".cmd")
	if err != nil {
		return rec, err
	}
	rec.Command = strings.TrimRight(string(cmd), "\n")
	if rec.Stdout, err = read(".out"); err != nil {
		return rec, err
	}
	if rec.Stderr, err = read(".err"); err != nil {
		return rec, err
	}
	rc, err := read(".rc")
	if err != nil {
		return rec, err
	}
	if rec.ExitCode, err = strconv.Atoi(strings.TrimSpace(string(rc))); err != nil {
		return rec, fmt.Errorf("condorfake: recording %s: exit code: %w", name, err)
	}
	return rec, nil
}

// Answer is what the fake does for one command line.
type Answer struct {
	Recording
	// Err is returned as the runner's error (the command could not run).
	Err error
	// Hang holds the answer until the context ends, to test timeouts.
	Hang bool
}

// Call is one command the fake was given.
type Call struct {
	Command string
	Stdin   string
}

// Replayer is a replaying htcondor.Runner. Its zero value answers nothing.
type Replayer struct {
	mu      sync.Mutex
	answers map[string]Answer
	calls   []Call
}

// New returns a Replayer that answers each recording's own command line
// with it.
func New(recs ...Recording) *Replayer {
	r := &Replayer{}
	for _, rec := range recs {
		r.Set(rec.Command, Answer{Recording: rec})
	}
	return r
}

// Set makes the fake answer the command line cmd (htcondor.Cmd.String) with
// a; a test uses it to answer the command a Source runs with a recording
// made with another command line, or with a failure.
func (r *Replayer) Set(cmd string, a Answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.answers == nil {
		r.answers = map[string]Answer{}
	}
	r.answers[cmd] = a
}

// Run implements htcondor.Runner. A command line with no answer fails with
// an error naming it.
func (r *Replayer) Run(ctx context.Context, cmd htcondor.Cmd, stdout func(io.Reader) error) ([]byte, int, error) {
	line := cmd.String()
	r.mu.Lock()
	r.calls = append(r.calls, Call{Command: line, Stdin: string(cmd.Stdin)})
	a, ok := r.answers[line]
	r.mu.Unlock()
	if !ok {
		return nil, -1, fmt.Errorf("condorfake: no answer for command %q", line)
	}
	if a.Hang {
		<-ctx.Done()
		return nil, -1, ctx.Err()
	}
	if a.Err != nil {
		return nil, -1, a.Err
	}
	if err := stdout(bytes.NewReader(a.Stdout)); err != nil {
		return a.Stderr, -1, err
	}
	return a.Stderr, a.ExitCode, nil
}

// Calls returns the commands run so far, in order.
func (r *Replayer) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// Recorder is an htcondor.Runner that runs each command through another
// Runner (a real one) and keeps what it printed, so that a test against a
// live pool can save its commands as recordings for the replaying tests.
type Recorder struct {
	Runner htcondor.Runner

	mu   sync.Mutex
	recs []Recording
}

// Run implements htcondor.Runner.
func (r *Recorder) Run(ctx context.Context, cmd htcondor.Cmd, stdout func(io.Reader) error) ([]byte, int, error) {
	var out bytes.Buffer
	stderr, code, err := r.Runner.Run(ctx, cmd, func(rd io.Reader) error {
		return stdout(io.TeeReader(rd, &out))
	})
	r.mu.Lock()
	r.recs = append(r.recs, Recording{Command: cmd.String(), Stdout: out.Bytes(), Stderr: append([]byte(nil), stderr...), ExitCode: code})
	r.mu.Unlock()
	return stderr, code, err
}

// Last returns the most recent recording of the command line cmd.
func (r *Recorder) Last(cmd string) (Recording, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.recs) - 1; i >= 0; i-- {
		if r.recs[i].Command == cmd {
			return r.recs[i], true
		}
	}
	return Recording{}, false
}

// Save writes rec into dir as name.cmd, name.out, name.err and name.rc.
func Save(dir, name string, rec Recording) error {
	for ext, b := range map[string][]byte{".cmd": []byte(rec.Command + "\n"), ".out": rec.Stdout, ".err": rec.Stderr,
		".rc": []byte(strconv.Itoa(rec.ExitCode) + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name+ext), b, 0o644); err != nil {
			return fmt.Errorf("condorfake: save %s: %w", name, err)
		}
	}
	return nil
}
