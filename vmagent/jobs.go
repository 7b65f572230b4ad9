package vmagent

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// ErrStartdNotRunning is CountJobs' answer when the local master reports
// its startd not running: nothing can be said of its jobs.
var ErrStartdNotRunning = errors.New("the local master reports its startd not running")

// CountJobs asks HTCondor on the VM how many jobs run and how many slots
// are claimed, as Probe does (the local master for the startd's address,
// then the startd itself: no name resolution, no central manager, so bare
// and dotted host names alike). Running counts slots running a job;
// Claimed slots running a job or claimed (Claimed, Matched, Preempting).
// Any failure, and a startd that is not running, is an error: the count
// is unknown, which is never the same as zero.
func (r Retirer) CountJobs(ctx context.Context) (vmproto.JobCount, error) {
	if r.NoCondor {
		return vmproto.JobCount{}, errors.New("no HTCondor on this VM")
	}
	st, err := r.Probe(ctx)
	if err != nil {
		return vmproto.JobCount{}, err
	}
	if st.StartdExited {
		return vmproto.JobCount{}, ErrStartdNotRunning
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	return vmproto.JobCount{Running: st.Jobs, Claimed: st.Busy, At: now().UTC()}, nil
}

// jobCounter is the check-ins' default job count: CountJobs, bounded in
// time, nil when unknown. It logs when counting starts or stops failing,
// not at every check-in.
type jobCounter struct {
	r       Retirer
	log     *logrus.Entry
	timeout time.Duration
	failing string // the last failure logged; "" while counts succeed
}

func (j *jobCounter) count(ctx context.Context) *vmproto.JobCount {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	c, err := j.r.CountJobs(ctx)
	if err != nil {
		if msg := err.Error(); msg != j.failing {
			j.log.WithError(err).Warn("cannot count the startd's jobs: reporting the count as unknown")
			j.failing = msg
		}
		return nil
	}
	if j.failing != "" {
		j.log.WithFields(logrus.Fields{"running": c.Running, "claimed": c.Claimed}).Info("counting the startd's jobs again")
		j.failing = ""
	}
	return &c
}
