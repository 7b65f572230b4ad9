package vmagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Retirer retires the VM's startd gracefully: it stops it from accepting
// jobs, lets running jobs finish until a deadline, and reports how it went.
// Everything goes through the command runner, locally (FS authentication):
// the central manager never needs admin rights on workers.
type Retirer struct {
	Runner CommandRunner
	Log    *logrus.Entry
	// Poll is how often running jobs are counted; zero means 5 s.
	Poll time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// RetireResult says how a retirement ended.
type RetireResult struct {
	// Host is the startd's host name as HTCondor knows it ("" if unknown).
	Host string
	// JobsLeft is how many jobs were still running when the deadline
	// passed; 0 when the startd drained.
	JobsLeft int
	// TimedOut is true when the deadline passed with jobs running (or
	// their number unknown).
	TimedOut bool
}

// errStartdGone marks answers that mean no startd is running.
var errStartdGone = errors.New("startd is not running")

// Retire stops the startd from taking new jobs and waits until no job runs
// or deadline() has passed (deadline is asked again at every poll: a later
// order may bring it forward). It stops the startd with
// `condor_off -peaceful -startd` (running jobs go on, the startd exits when
// the last ends); if that fails it drains the slot instead with
// `condor_drain -graceful` by slot name. It counts jobs with
// `condor_status -direct <host> -af Name SlotType State Activity JobId`; a
// startd that has exited has none.
func (r Retirer) Retire(ctx context.Context, deadline func() time.Time, reason string) (RetireResult, error) {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	poll := r.Poll
	if poll <= 0 {
		poll = 5 * time.Second
	}
	var res RetireResult
	host, err := r.host(ctx)
	if err != nil {
		r.Log.WithError(err).Warn("cannot tell the startd's host name; polling for jobs is not possible")
	}
	res.Host = host

	if err := r.stop(ctx, host, reason); errors.Is(err, errStartdGone) {
		r.Log.Info("startd is not running: nothing to drain")
		return res, nil
	} else if err != nil {
		return res, err
	}
	if host == "" {
		// Without HTCondor (a local VM) or without a host name there is
		// nothing to poll: the startd exits by itself after its last job.
		return res, nil
	}
	last := -1
	for attempt := 0; ; attempt++ {
		n, err := r.countJobs(ctx, host)
		switch {
		case errors.Is(err, errStartdGone):
			n, err = 0, nil
		case err != nil:
			r.Log.WithError(err).Warn("count running jobs")
			n = -1
		}
		if n == 0 {
			r.Log.Info("no job running: drained")
			return res, nil
		}
		if n != last && n > 0 {
			r.Log.WithField("jobs", n).Info("waiting for running jobs to finish")
			last = n
		}
		left := deadline().Sub(now())
		if left <= 0 {
			res.JobsLeft, res.TimedOut = max(n, 0), true
			r.Log.WithField("jobs", n).Warn("retirement deadline passed with jobs running")
			return res, nil
		}
		t := time.NewTimer(min(poll, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, ctx.Err()
		case <-t.C:
		}
	}
}

// host asks HTCondor for its host name (what slot and startd names hold).
func (r Retirer) host(ctx context.Context) (string, error) {
	out, err := run(ctx, r.Runner, "condor_config_val", "FULL_HOSTNAME")
	if err != nil {
		return "", err
	}
	h := strings.TrimSpace(string(out))
	if h == "" {
		return "", nil
	}
	if !hostRE.MatchString(h) || strings.Contains(h, "\n") || len(h) > 255 {
		return "", fmt.Errorf("condor_config_val FULL_HOSTNAME printed %.100q, not a host name", h)
	}
	return h, nil
}

// stop makes the startd accept no new jobs.
func (r Retirer) stop(ctx context.Context, host, reason string) error {
	_, err := run(ctx, r.Runner, "condor_off", "-peaceful", "-startd")
	if err == nil {
		r.Log.Info("startd told to shut down peacefully: no new jobs, running ones go on")
		return nil
	}
	if startdGone(err) {
		return errStartdGone
	}
	if host == "" {
		return fmt.Errorf("stop accepting jobs: %w", err)
	}
	r.Log.WithError(err).Warn("peaceful shutdown failed; draining the slot instead")
	if reason == "" {
		reason = "retired by Canopy"
	}
	_, derr := run(ctx, r.Runner, "condor_drain", "-graceful", "-reason", "canopy: "+reason, "slot1@"+host)
	if derr == nil {
		r.Log.Info("slot draining: no new jobs, running ones go on")
		return nil
	}
	if startdGone(derr) {
		return errStartdGone
	}
	return fmt.Errorf("stop accepting jobs: %w; %w", err, derr)
}

// startdGone reports whether err is an HTCondor tool saying it found no
// startd to talk to.
func startdGone(err error) bool {
	var ce *CommandError
	if !errors.As(err, &ce) {
		return false
	}
	s := ce.Stderr
	return strings.Contains(s, "Can't find address") || strings.Contains(s, "Failed to connect") ||
		strings.Contains(s, "Connection refused")
}

// countJobs asks the local startd how many jobs it runs.
func (r Retirer) countJobs(ctx context.Context, host string) (int, error) {
	out, err := run(ctx, r.Runner, "condor_status", "-direct", host, "-af", "Name", "SlotType", "State", "Activity", "JobId")
	if err != nil {
		if startdGone(err) {
			return 0, errStartdGone
		}
		return -1, err
	}
	return ParseRunningJobs(out)
}

var (
	slotNameRE = regexp.MustCompile(`^[A-Za-z0-9_.@:\[\]-]+$`)
	wordRE     = regexp.MustCompile(`^[A-Za-z]+$`)
	jobIDRE    = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)
)

// maxSlotLines bounds the slots one startd may report.
const maxSlotLines = 4096

// ParseRunningJobs counts running jobs in the output of
// `condor_status -af Name SlotType State Activity JobId`: one line per
// slot, its job id "undefined" when it runs none (a partitionable slot).
// Any other line is an error.
func ParseRunningJobs(out []byte) (int, error) {
	n, lines := 0, 0
	for i, line := range bytes.Split(out, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		lines++
		if lines > maxSlotLines {
			return 0, fmt.Errorf("condor_status: over %d slot lines", maxSlotLines)
		}
		if len(f) != 5 || !slotNameRE.MatchString(f[0]) || !wordRE.MatchString(f[1]) || !wordRE.MatchString(f[2]) || !wordRE.MatchString(f[3]) {
			return 0, fmt.Errorf("condor_status line %d: %.100q is not \"Name SlotType State Activity JobId\"", i+1, line)
		}
		switch {
		case f[4] == "undefined":
		case jobIDRE.MatchString(f[4]):
			n++
		default:
			return 0, fmt.Errorf("condor_status line %d: job id %.40q is neither N.N nor undefined", i+1, f[4])
		}
	}
	return n, nil
}
