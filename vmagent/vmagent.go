// Package vmagent is the agent inside every worker VM. At boot it reads its
// metadata and user-data, writes the HTCondor startd configuration that ties
// the VM to its site, group and VM type, mounts the site's read-only
// GlusterFS volume, points CVMFS at the site's squids, starts HTCondor, and
// then checks in with its site agent until it is told to retire, when it
// stops taking jobs, lets running ones finish, reports, and exits.
package vmagent

import (
	"crypto/ed25519"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/gossip"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// Options configure a vmagent.
type Options struct {
	// Root is prepended to every path the vmagent writes (/ in a real VM).
	Root   string
	Source MetadataSource
	Runner CommandRunner
	Log    *logrus.Entry
	// GossipBind is where the VM's gossip member listens (default
	// 0.0.0.0:7946; local test VMs use 127.0.0.1:0).
	GossipBind string
	// Proxies gives the CVMFS squid proxies; nil means the list in the
	// VM's settings.
	Proxies ProxySource
	// HTTP is used for check-ins; nil means a client with a 10 s timeout.
	HTTP *http.Client
	// RetirePoll is how often running jobs are counted while retiring;
	// zero means 5 s.
	RetirePoll time.Duration
	// Jobs, if set, counts the startd's jobs for each check-in; nil (or
	// a nil count) reports the count as unknown.
	Jobs func(ctx context.Context) *vmproto.JobCount
}

// CondorStartedPath marks, for the life of one boot, that the vmagent has
// started HTCondor (a restarted vmagent then reconfigures instead).
const CondorStartedPath = "/run/canopy/condor-started"

// Run contextualizes the VM and checks in until retired or ctx ends.
func Run(ctx context.Context, o Options) error {
	start := time.Now()
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	md, ud, err := fetchWithRetry(ctx, o.Source, o.Log)
	if err != nil {
		return err
	}
	s, err := vmproto.ParseUserData(ud)
	if err != nil {
		return fmt.Errorf("read settings from user-data: %w", err)
	}
	log := o.Log.WithFields(logrus.Fields{"vm": md.Name, "site": s.Site, "group": s.Group, "vm_type": s.VMType})
	proxies := o.Proxies
	if proxies == nil {
		proxies = discoveredProxies{s: s, log: o.Log}
	}
	res, err := Contextualize(ctx, o.Root, md, s, proxies, o.Runner, log)
	if err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"condor_changed": res.Condor, "fstab_changed": res.Fstab, "cvmfs_changed": res.CVMFS,
		"elapsed": time.Since(start).Round(time.Microsecond)}).Info("contextualized")
	if err := startCondor(ctx, o.Root, o.Runner, res.Condor); err != nil {
		return err
	}
	member := joinGossip(o, s, md, log)
	if member != nil {
		defer func() { _ = member.Leave(gossip.LeaveTimeout) }()
	}
	return checkinLoop(ctx, o, s, md, member, log)
}

// ContextResult says which parts of the VM's configuration changed.
type ContextResult struct {
	Condor bool // HTCondor config or its secrets
	Fstab  bool // the GlusterFS entry
	CVMFS  bool // the CVMFS proxy setting
}

// Contextualize writes, under root, everything the VM needs from its
// metadata and settings: the HTCondor configuration and secrets, the
// GlusterFS mount (if the settings name a volume) and the CVMFS proxies.
// Every file is written only when its content changes, atomically, so it
// is safe to run again. A proxy source that fails leaves CVMFS on DIRECT.
func Contextualize(ctx context.Context, root string, md Metadata, s vmproto.Settings, proxies ProxySource, r CommandRunner, log *logrus.Entry) (ContextResult, error) {
	var res ContextResult
	var err error
	if res.Condor, err = WriteCondorConfig(root, md, s); err != nil {
		return res, err
	}
	if s.Gluster != nil {
		if res.Fstab, err = MountGluster(ctx, root, *s.Gluster, r); err != nil {
			return res, err
		}
	}
	groups, err := proxies.Proxies(ctx)
	if err == nil {
		err = vmproto.ValidateProxies(groups)
	}
	if err != nil {
		log.WithError(err).Warn("no usable squid proxies; CVMFS goes DIRECT")
		groups = nil
	}
	if res.CVMFS, err = ApplyCVMFSProxies(ctx, root, groups, r); err != nil {
		return res, err
	}
	return res, nil
}

// startCondor starts the condor_master once per boot; when it already runs
// and its configuration changed, it reconfigures it instead.
func startCondor(ctx context.Context, root string, r CommandRunner, changed bool) error {
	marker := filepath.Join(root, CondorStartedPath)
	if _, err := os.Stat(marker); err == nil {
		if !changed {
			return nil
		}
		if _, err := run(ctx, r, "condor_reconfig"); err != nil {
			return fmt.Errorf("reconfigure condor: %w", err)
		}
		return nil
	}
	if _, err := run(ctx, r, "condor_master"); err != nil {
		return fmt.Errorf("start condor: %w", err)
	}
	if _, err := writeFile(root, CondorStartedPath, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return fmt.Errorf("start condor: %w", err)
	}
	return nil
}

// retirement is a retirement in progress: its deadline can only move
// earlier, as the agent keeps the earliest order.
type retirement struct {
	mu       sync.Mutex
	deadline time.Time
	done     chan RetireResult
}

func (r *retirement) setDeadline(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deadline.IsZero() || t.Before(r.deadline) {
		r.deadline = t
	}
}

func (r *retirement) getDeadline() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deadline
}

func checkinLoop(ctx context.Context, o Options, s vmproto.Settings, md Metadata, member *gossip.Member, log *logrus.Entry) error {
	every := s.CheckinEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	c := &checkin{http: o.HTTP, s: s, md: md, jobs: o.Jobs}
	state := vmproto.CheckinReady
	failures := 0
	var ret *retirement
	var result RetireResult
	rt := Retirer{Runner: o.Runner, Log: log, Poll: o.RetirePoll, NoCondor: !hasCondor(o.Runner)}
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, cancelRetire := context.WithCancel(ctx)
	defer cancelRetire()
	// startRetire begins the graceful retirement once; a later order only
	// moves the deadline.
	startRetire := func(deadline time.Time, reason, via string) {
		if ret != nil {
			ret.setDeadline(deadline)
			return
		}
		log.WithFields(logrus.Fields{"reason": reason, "deadline": time.Until(deadline).Round(time.Second), "via": via}).Info("retirement ordered")
		ret = &retirement{done: make(chan RetireResult, 1)}
		ret.setDeadline(deadline)
		wg.Go(func() {
			// Retire ends with the VM drained (HTCondor said so) or the
			// deadline passed; an error is only the context ending, when
			// nothing is reported.
			if res, err := rt.Retire(rctx, ret.getDeadline, reason); err == nil {
				ret.done <- res
			}
		})
		state = vmproto.CheckinRetiring
		if member != nil {
			_ = member.SetState(gossip.StateDraining)
		}
	}
	var retiredC, changedC <-chan struct{}
	var squidVersion uint64
	if member != nil {
		retiredC, changedC = member.Retired(), member.Changed()
	}
	for {
		resp, err := c.do(ctx, state)
		switch {
		case err != nil:
			failures++
			// Logged at most every tenth failure: a VM cut off from its agent
			// keeps working; the agent notices by the silence.
			if failures%10 == 1 {
				log.WithError(err).WithField("state", state).Warn("check-in failed")
			}
		case state == vmproto.CheckinDrained:
			log.Info("retired; reported drained")
			if result.Drained {
				// Power off now rather than when the master next
				// evaluates MASTER.DAEMON_SHUTDOWN (minutes away).
				if err := rt.Shutdown(ctx); err != nil {
					log.WithError(err).Warn("condor_master not stopped; MASTER.DAEMON_SHUTDOWN will power the VM off")
				}
			}
			return nil
		case resp.Retire:
			failures = 0
			startRetire(time.Now().Add(resp.Deadline), resp.Reason, "check-in")
		default:
			failures = 0
		}
		var done chan RetireResult
		if ret != nil && state == vmproto.CheckinRetiring {
			done = ret.done
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changedC:
			t.Stop()
			// A newer squid ranking from the agent: CVMFS fails over in rank order.
			if l := member.Squids(); l.Version > squidVersion && len(l.Proxies) > 0 {
				squidVersion = l.Version
				groups := make([][]string, 0, len(l.Proxies))
				for _, p := range l.Proxies {
					groups = append(groups, []string{p})
				}
				if changed, err := ApplyCVMFSProxies(ctx, o.Root, groups, o.Runner); err != nil {
					log.WithError(err).Warn("apply squid list from gossip")
				} else if changed {
					log.WithField("proxies", l.Proxies).Info("CVMFS proxies updated from the site's gossip pool")
				}
			}
			continue
		case <-retiredC:
			t.Stop()
			retiredC = nil
			if order, ok := member.RetireOrder(); ok {
				startRetire(order.Deadline, order.Reason, "gossip")
			}
			continue
		case res := <-done:
			t.Stop()
			result = res
			if res.Drained {
				log.WithField("startd_exited", res.StartdExited).Info("drained")
			} else {
				log.WithField("busy_slots", res.JobsLeft).Warn("retirement deadline passed before the VM drained; reporting it retired")
			}
			state = vmproto.CheckinDrained
			continue // report at once
		case <-t.C:
		}
	}
}

// joinGossip joins the site's gossip pool when the settings name one. A VM
// that cannot join still works: check-ins carry its orders.
func joinGossip(o Options, s vmproto.Settings, md Metadata, log *logrus.Entry) *gossip.Member {
	if s.GossipJoin == "" {
		return nil
	}
	key, err1 := gossip.ParseKey(s.GossipKey)
	agentKey, err2 := gossip.ParseKey(s.GossipAgentKey)
	if err := errors.Join(err1, err2); err != nil {
		log.WithError(err).Warn("gossip settings unusable; relying on check-ins")
		return nil
	}
	m, err := gossip.NewMember(gossip.Config{Site: s.Site, Name: md.Name, Bind: o.GossipBind, Key: key,
		AgentKey: ed25519.PublicKey(agentKey), Log: log.WithField("component", "gossip"),
		Meta: gossip.Meta{ServerID: md.UUID, Group: s.Group}}, s.GossipJoin)
	if err != nil {
		log.WithError(err).Warn("gossip unavailable; relying on check-ins")
		return nil
	}
	return m
}

func fetchWithRetry(ctx context.Context, src MetadataSource, log *logrus.Entry) (Metadata, []byte, error) {
	var lastErr error
	delay := 200 * time.Millisecond
	for attempt := 1; attempt <= 10; attempt++ {
		md, ud, err := src.Fetch(ctx)
		if err == nil {
			return md, ud, nil
		}
		if errors.Is(err, ErrNoUserData) {
			return Metadata{}, nil, err // booted without user-data: no retry helps
		}
		lastErr = err
		log.WithError(err).WithField("attempt", attempt).Warn("read metadata")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return Metadata{}, nil, ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 5*time.Second)
	}
	return Metadata{}, nil, fmt.Errorf("read metadata: gave up after 10 attempts: %w", lastErr)
}

type checkin struct {
	http *http.Client
	s    vmproto.Settings
	md   Metadata
	jobs func(ctx context.Context) *vmproto.JobCount
}

// maxCheckinAnswer bounds the agent's answer.
const maxCheckinAnswer = 64 << 10

func (c *checkin) do(ctx context.Context, state string) (vmproto.CheckinResponse, error) {
	var out vmproto.CheckinResponse
	in := vmproto.CheckinRequest{ServerID: c.md.UUID, Server: c.md.Name, State: state}
	if c.jobs != nil {
		in.Jobs = c.jobs(ctx)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return out, fmt.Errorf("check-in: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.s.AgentURL, "/")+vmproto.PathCheckin, bytes.NewReader(body))
	if err != nil {
		return out, fmt.Errorf("check-in: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.s.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return out, fmt.Errorf("check-in: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckinAnswer+1))
	if err != nil {
		return out, fmt.Errorf("check-in: read answer: %w", err)
	}
	if len(b) > maxCheckinAnswer {
		return out, fmt.Errorf("check-in: answer over %d bytes", maxCheckinAnswer)
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("check-in: %s: %.200s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("check-in answer: %w", err)
	}
	if out.Deadline < 0 {
		out.Deadline = 0
	}
	return out, nil
}
