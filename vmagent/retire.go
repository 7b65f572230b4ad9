package vmagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Retirer retires the VM's startd gracefully: it stops it from accepting
// jobs, lets running jobs finish until a deadline, and reports how it went.
// Everything goes through the command runner, locally (FS authentication):
// the central manager never needs admin rights on workers.
//
// Unknown is not drained. The retirer reports the VM drained only when
// HTCondor on the VM positively says so: the local master reports that
// its startd is not running, or the startd itself, after it was told to
// take no new jobs, lists no slot that runs a job or is claimed. A tool
// that fails, prints what it should not or cannot be reached makes the
// state unknown: the retirer says so in its log, keeps the VM and asks
// again at the next poll, until the deadline.
type Retirer struct {
	Runner CommandRunner
	Log    *logrus.Entry
	// Poll is how often running jobs are counted; zero means 5 s.
	Poll time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CommandTimeout bounds each tool run; zero means 60 s.
	CommandTimeout time.Duration
	// NoCondor says that the VM runs no HTCondor (a local test VM, see
	// LogRunner): there is nothing to drain.
	NoCondor bool
}

// RetireResult says how a retirement ended.
type RetireResult struct {
	// Host is the startd's host name as HTCondor knows it ("" if it was
	// not needed or unknown).
	Host string
	// Drained is true when HTCondor confirmed that no job runs: the
	// startd has exited, or it takes no new jobs and lists no busy slot.
	Drained bool
	// StartdExited is true when the local master reported its startd not
	// running.
	StartdExited bool
	// JobsLeft is how many slots still ran a job or were claimed when the
	// deadline passed; -1 when that was unknown (the last count failed).
	// 0 when drained.
	JobsLeft int
	// TimedOut is true when the deadline passed before the VM drained.
	TimedOut bool
}

// Retire stops the startd from taking new jobs and waits until HTCondor
// confirms that no job runs or deadline() has passed (deadline is asked
// again at every poll: a later order may bring it forward). It returns an
// error only when ctx ends.
//
// It stops the startd with `condor_off -peaceful -startd` (running jobs go
// on, the startd exits when the last ends); if that fails it drains the
// slot instead with `condor_drain -graceful` by slot name; if both fail it
// tries again at every poll. Neither one's success or failure says anything
// about the jobs (condor_off prints "Sent ..." and exits 0 even when the
// master it reached is not this VM's, see Probe): only Probe decides.
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
	if r.NoCondor {
		r.Log.Info("no HTCondor on this VM: nothing to drain")
		res.Drained = true
		return res, nil
	}
	stopped := false
	last := -2
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		st, perr := r.Probe(ctx)
		if perr == nil && st.StartdExited {
			r.Log.Info("the local master reports its startd not running: drained")
			res.Drained, res.StartdExited = true, true
			return res, nil
		}
		if !stopped && st.MasterAddr != "" {
			// Only once the local master has answered: condor_off without
			// a name sends to the daemons named in the local address files,
			// but with the master gone it looks one up in the collector by
			// this host's name, which may be another machine's.
			if err := r.stop(ctx, &res, reason); err != nil {
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				r.Log.WithError(err).Warn("cannot stop the startd from taking new jobs; the VM is kept, trying again")
			} else {
				stopped = true
				// Count after the order, not before it.
				st, perr = r.Probe(ctx)
				if perr == nil && st.StartdExited {
					r.Log.Info("the local master reports its startd not running: drained")
					res.Drained, res.StartdExited = true, true
					return res, nil
				}
			}
		}
		n := -1
		switch {
		case perr != nil:
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			r.Log.WithError(perr).Warn("cannot tell whether jobs run: not drained; the VM is kept, asking again")
		case stopped && st.Busy == 0:
			r.Log.Info("the startd takes no new jobs and no slot runs a job or is claimed: drained")
			res.Drained = true
			return res, nil
		default:
			n = st.Busy
		}
		if n != last && n >= 0 {
			r.Log.WithFields(logrus.Fields{"busy_slots": n, "jobs": st.Jobs}).Info("waiting for running jobs to finish")
		}
		last = n
		left := deadline().Sub(now())
		if left <= 0 {
			res.JobsLeft, res.TimedOut = n, true
			if n < 0 {
				r.Log.Warn("retirement deadline passed; whether jobs still run is unknown")
			} else {
				r.Log.WithField("busy_slots", n).Warn("retirement deadline passed with jobs running")
			}
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

func (r Retirer) timeout() time.Duration {
	if r.CommandTimeout > 0 {
		return r.CommandTimeout
	}
	return time.Minute
}

// run runs a tool bounded by the command timeout.
func (r Retirer) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	return run(ctx, r.Runner, name, args...)
}

// host asks HTCondor for its host name (what slot names hold).
func (r Retirer) host(ctx context.Context) (string, error) {
	out, err := r.run(ctx, "condor_config_val", "FULL_HOSTNAME")
	if err != nil {
		return "", err
	}
	h := strings.TrimSpace(string(out))
	if h == "" || !hostRE.MatchString(h) || strings.Contains(h, "\n") || len(h) > 255 {
		return "", fmt.Errorf("condor_config_val FULL_HOSTNAME printed %.100q, not a host name", h)
	}
	return h, nil
}

// stop makes the startd accept no new jobs: a peaceful shutdown, or a
// graceful drain of its slot when that fails.
func (r Retirer) stop(ctx context.Context, res *RetireResult, reason string) error {
	_, err := r.run(ctx, "condor_off", "-peaceful", "-startd")
	if err == nil {
		r.Log.Info("startd told to shut down peacefully: no new jobs, running ones go on")
		return nil
	}
	r.Log.WithError(err).Warn("peaceful shutdown failed; draining the slot instead")
	if res.Host == "" {
		h, herr := r.host(ctx)
		if herr != nil {
			return fmt.Errorf("stop accepting jobs: %w; and no slot name to drain: %w", err, herr)
		}
		res.Host = h
	}
	if reason == "" {
		reason = "retired by Canopy"
	}
	// By slot name: condor_drain resolves a bare host name through DNS
	// and fails ("unknown host"), a slot name it does not.
	_, derr := r.run(ctx, "condor_drain", "-graceful", "-reason", "canopy: "+reason, "slot1@"+res.Host)
	if derr == nil {
		r.Log.Info("slot draining: no new jobs, running ones go on")
		return nil
	}
	return fmt.Errorf("stop accepting jobs: %w; %w", err, derr)
}

// StartdState is what HTCondor on the VM says of its startd.
type StartdState struct {
	// MasterAddr is the local master's address (a sinful string).
	MasterAddr string
	// StartdExited is true when the master reports its startd not running.
	StartdExited bool
	// StartdAddr is the startd's address while it runs.
	StartdAddr string
	// Jobs counts slots running a job; Busy slots running a job or
	// claimed (a claimed slot may start one).
	Jobs, Busy int
}

// Probe asks HTCondor on the VM about its startd, without any name
// resolution and without the central manager:
//
//  1. `condor_who -quick` asks the local master (found through its
//     address file) for its daemons: the startd's PID, 0 once it has
//     exited, and its address.
//  2. while it runs, `condor_status -direct <that address> -af Name
//     SlotType State Activity JobId` asks the startd itself for its slots.
//
// Why not `condor_status -direct <FULL_HOSTNAME>`: HTCondor resolves a
// daemon name through DNS (or DEFAULT_DOMAIN_NAME) and fails for the bare
// host names cloud images often have ("Failed to locate startd ...
// unknown host"). Why not the collector (a constraint on CanopyVMID): it
// is remote, so a VM cut off from its central manager would learn nothing,
// and its ads lag the startd by up to UPDATE_INTERVAL. The local master
// knows whether its startd runs, and the startd knows its slots.
//
// Any failure, or an answer that is not what it should be, is an error:
// the state is unknown.
func (r Retirer) Probe(ctx context.Context) (StartdState, error) {
	out, err := r.run(ctx, "condor_who", "-quick")
	if err != nil {
		return StartdState{}, err
	}
	st, err := ParseWhoQuick(out)
	if err != nil || st.StartdExited {
		return st, err
	}
	out, err = r.run(ctx, "condor_status", "-direct", st.StartdAddr, "-af", "Name", "SlotType", "State", "Activity", "JobId")
	if err != nil {
		return st, err
	}
	c, err := ParseSlots(out)
	if err != nil {
		return st, err
	}
	st.Jobs, st.Busy = c.Jobs, c.Busy
	return st, nil
}

// Shutdown stops the VM's condor_master at once, peacefully (a startd
// still running would let its jobs finish first): `condor_off -peaceful
// -master -addr <the master's address>`, addressed to the master that
// Probe found, never one looked up by name. The master then runs its
// shutdown program (vmagent's config: power off). Without it the master
// would notice its startd gone only at its next ad update
// (MASTER.DAEMON_SHUTDOWN is evaluated then; MASTER_UPDATE_INTERVAL is 5
// minutes by default). Call it once the retirement has drained the VM.
func (r Retirer) Shutdown(ctx context.Context) error {
	if r.NoCondor {
		return nil
	}
	st, err := r.Probe(ctx)
	if err != nil {
		return fmt.Errorf("stop the condor_master: find it: %w", err)
	}
	if !st.StartdExited && st.Busy > 0 {
		return fmt.Errorf("stop the condor_master: %d slots are busy again", st.Busy)
	}
	if _, err := r.run(ctx, "condor_off", "-peaceful", "-master", "-addr", st.MasterAddr); err != nil {
		return fmt.Errorf("stop the condor_master: %w", err)
	}
	r.Log.Info("condor_master told to shut down: the VM powers off")
	return nil
}

var (
	slotNameRE = regexp.MustCompile(`^[A-Za-z0-9_.@:\[\]-]+$`)
	wordRE     = regexp.MustCompile(`^[A-Za-z]+$`)
	jobIDRE    = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)
	// sinfulRE is a daemon address as HTCondor prints it:
	// <127.0.0.1:9618?addrs=127.0.0.1-9618&alias=vm1>.
	sinfulRE = regexp.MustCompile(`^<[A-Za-z0-9.:\[\]-]+(\?[A-Za-z0-9.:\[\]_&=+%,-]*)?>$`)
	// whoLineRE is one line of condor_who -quick: ATTR = value.
	whoLineRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*) = (.*)$`)
)

// maxSlotLines bounds the slots one startd may report.
const maxSlotLines = 4096

// SlotCount is what a startd's slot listing says.
type SlotCount struct {
	// Jobs counts slots running a job; Busy slots running a job or in a
	// claimed state (Claimed, Matched, Preempting).
	Jobs, Busy int
}

// ParseSlots reads the output of `condor_status -af Name SlotType State
// Activity JobId`: one line per slot, its job id "undefined" when it runs
// none (a partitionable slot). Any other line is an error.
func ParseSlots(out []byte) (SlotCount, error) {
	var c SlotCount
	lines := 0
	for i, line := range bytes.Split(out, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		lines++
		if lines > maxSlotLines {
			return SlotCount{}, fmt.Errorf("condor_status: over %d slot lines", maxSlotLines)
		}
		if len(f) != 5 || !slotNameRE.MatchString(f[0]) || !wordRE.MatchString(f[1]) || !wordRE.MatchString(f[2]) || !wordRE.MatchString(f[3]) {
			return SlotCount{}, fmt.Errorf("condor_status line %d: %.100q is not \"Name SlotType State Activity JobId\"", i+1, line)
		}
		job := false
		switch {
		case f[4] == "undefined":
		case jobIDRE.MatchString(f[4]):
			job = true
		default:
			return SlotCount{}, fmt.Errorf("condor_status line %d: job id %.40q is neither N.N nor undefined", i+1, f[4])
		}
		claimed := f[2] == "Claimed" || f[2] == "Matched" || f[2] == "Preempting"
		if job {
			c.Jobs++
		}
		if job || claimed {
			c.Busy++
		}
	}
	return c, nil
}

// maxWhoLines bounds condor_who -quick's output.
const maxWhoLines = 1000

// ParseWhoQuick reads the output of `condor_who -quick`: the local
// master's ad of its daemons, one `ATTR = value` per line (MASTER_PID,
// MASTER_Addr, STARTD = "Alive", STARTD_PID, STARTD_Addr, ...). The
// master must have answered (MASTER_PID and MASTER_Addr) and reported its
// startd (STARTD_PID: 0 when it is not running; otherwise STARTD_Addr).
// Anything else, such as condor_who's "Master ... Exited" read from the
// log of a master that has gone, is an error.
func ParseWhoQuick(out []byte) (StartdState, error) {
	attrs := map[string]string{}
	n := 0
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if n++; n > maxWhoLines {
			return StartdState{}, fmt.Errorf("condor_who -quick: over %d lines", maxWhoLines)
		}
		m := whoLineRE.FindStringSubmatch(line)
		if m == nil {
			continue // not an attribute: checked below by what is missing
		}
		attrs[m[1]] = m[2]
	}
	var st StartdState
	pid, err := strconv.Atoi(attrs["MASTER_PID"])
	if err != nil || pid <= 0 {
		return st, fmt.Errorf("condor_who -quick: the local master did not answer: %s", firstLines(out, 2))
	}
	addr, err := strconv.Unquote(attrs["MASTER_Addr"])
	if err != nil || !sinfulRE.MatchString(addr) {
		return st, fmt.Errorf("condor_who -quick: MASTER_Addr %.100q is not a daemon address", attrs["MASTER_Addr"])
	}
	st.MasterAddr = addr
	spid, ok := attrs["STARTD_PID"]
	if !ok {
		return st, errors.New("condor_who -quick: the local master reports no startd (STARTD_PID)")
	}
	p, err := strconv.Atoi(spid)
	if err != nil || p < 0 {
		return st, fmt.Errorf("condor_who -quick: STARTD_PID %.40q is not a PID", spid)
	}
	if p == 0 {
		st.StartdExited = true
		return st, nil
	}
	saddr, err := strconv.Unquote(attrs["STARTD_Addr"])
	if err != nil || !sinfulRE.MatchString(saddr) {
		return st, fmt.Errorf("condor_who -quick: the startd runs (pid %d) but its address %.100q is not a daemon address", p, attrs["STARTD_Addr"])
	}
	st.StartdAddr = saddr
	return st, nil
}
