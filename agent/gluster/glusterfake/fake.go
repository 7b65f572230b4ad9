// Package glusterfake replays recorded gluster CLI outputs for tests: a
// gluster.Runner that answers each command line with what was recorded for
// it and remembers what it was asked.
package glusterfake

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Response is what the fake answers to one command line.
type Response struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
	// Err is returned as the runner's error (the command could not run).
	Err error
	// Block, when set, holds the answer until it is closed or the context
	// ends (then the context's error is returned), to test timeouts.
	Block <-chan struct{}
}

// Runner is a replaying gluster.Runner. The zero value answers nothing;
// use New or LoadScenario.
type Runner struct {
	mu    sync.Mutex
	resp  map[string]Response
	calls []string
}

// New returns a Runner with no recorded answers.
func New() *Runner { return &Runner{resp: map[string]Response{}} }

// Key is the command line a response is recorded under: the name and the
// arguments joined by single spaces.
func Key(name string, args ...string) string {
	return strings.Join(append([]string{name}, args...), " ")
}

// Set records the answer to a command line (see Key).
func (f *Runner) Set(cmdline string, r Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resp == nil {
		f.resp = map[string]Response{}
	}
	f.resp[cmdline] = r
}

// Run implements gluster.Runner. A command line with no recorded answer
// fails with an error naming it.
func (f *Runner) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	key := Key(name, args...)
	f.mu.Lock()
	f.calls = append(f.calls, key)
	r, ok := f.resp[key]
	f.mu.Unlock()
	if !ok {
		return nil, nil, -1, fmt.Errorf("glusterfake: no recorded output for %q", key)
	}
	if r.Block != nil {
		select {
		case <-r.Block:
		case <-ctx.Done():
			return nil, nil, -1, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, -1, err
	}
	return r.Stdout, r.Stderr, r.ExitCode, r.Err
}

// Calls returns the command lines asked so far, in order.
func (f *Runner) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Scenario is a recorded collection cycle: which fixture answers which
// command, and when it was captured.
type Scenario struct {
	// TakenAt is the capture time (the "@taken_at" line).
	TakenAt time.Time
	// Fixtures are the files the scenario uses, relative to its fixture
	// directory.
	Fixtures []string
}

// LoadScenario reads a scenario file and returns a Runner that answers
// with its fixtures. The file has one tab-separated line per command:
//
//	FIXTURE<TAB>EXIT<TAB>COMMAND LINE
//
// FIXTURE is a file under fixtureDir served as stdout ("-" for empty
// output), EXIT the exit code; a line "@taken_at<TAB>RFC3339" gives the
// capture time. Blank lines and lines starting with # are ignored.
func LoadScenario(path, fixtureDir string) (*Runner, Scenario, error) {
	var sc Scenario
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, sc, fmt.Errorf("load scenario: %w", err)
	}
	f := New()
	s := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; s.Scan(); n++ {
		line := strings.TrimRight(s.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if fields[0] == "@taken_at" {
			if len(fields) != 2 {
				return nil, sc, fmt.Errorf("%s:%d: want @taken_at<TAB>time", path, n)
			}
			if sc.TakenAt, err = time.Parse(time.RFC3339, fields[1]); err != nil {
				return nil, sc, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			continue
		}
		if len(fields) != 3 {
			return nil, sc, fmt.Errorf("%s:%d: want FIXTURE<TAB>EXIT<TAB>COMMAND, got %d fields", path, n, len(fields))
		}
		code, err := strconv.Atoi(fields[1])
		if err != nil {
			return nil, sc, fmt.Errorf("%s:%d: exit code %q: %w", path, n, fields[1], err)
		}
		var out []byte
		if fields[0] != "-" {
			if out, err = os.ReadFile(filepath.Join(fixtureDir, fields[0])); err != nil {
				return nil, sc, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			sc.Fixtures = append(sc.Fixtures, fields[0])
		}
		f.Set(fields[2], Response{Stdout: out, ExitCode: code})
	}
	if err := s.Err(); err != nil {
		return nil, sc, fmt.Errorf("read scenario %s: %w", path, err)
	}
	return f, sc, nil
}
