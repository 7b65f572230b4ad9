package gluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol"
)

// Config configures a Collector. Zero fields take the defaults named on
// each; DefaultConfig returns them all.
type Config struct {
	// Command is the gluster CLI. Default "gluster" (found through PATH).
	Command string `json:"command" yaml:"command"`
	// CommandTimeout bounds each command but heal info. Default 30s.
	CommandTimeout time.Duration `json:"command_timeout" yaml:"command_timeout"`
	// HealTimeout bounds each heal info command (gluster starts a client,
	// glfsheal, that crawls the bricks' heal indices). Default 2m.
	HealTimeout time.Duration `json:"heal_timeout" yaml:"heal_timeout"`
	// MaxConcurrent bounds the commands running at once. Default 2. The
	// two volume status commands always run one after the other; a
	// command that finds glusterd's lock held is retried (LockRetries).
	MaxConcurrent int `json:"max_concurrent" yaml:"max_concurrent"`
	// LockRetries is how often a command is retried when glusterd answers
	// that another transaction holds its lock (an operator's command, say).
	// Default 2; negative: never.
	LockRetries int `json:"lock_retries" yaml:"lock_retries"`
	// LockRetryDelay is the pause before such a retry. Default 1s.
	LockRetryDelay time.Duration `json:"lock_retry_delay" yaml:"lock_retry_delay"`
	// Location is the time zone glusterd prints geo-replication times in
	// (the agent's host's, as the agent runs next to glusterd). Default
	// time.Local.
	Location *time.Location `json:"-" yaml:"-"`
	// Thresholds tune the health model; zero fields take
	// DefaultThresholds.
	Thresholds Thresholds `json:"thresholds" yaml:"thresholds"`
	// Log receives one warning per failed command per cycle. Default
	// logrus's standard logger.
	Log logrus.FieldLogger `json:"-" yaml:"-"`
	// Now is the clock. Default time.Now.
	Now func() time.Time `json:"-" yaml:"-"`
}

// DefaultConfig returns the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Command:        "gluster",
		CommandTimeout: 30 * time.Second,
		HealTimeout:    2 * time.Minute,
		MaxConcurrent:  2,
		LockRetries:    2,
		LockRetryDelay: time.Second,
		Location:       time.Local,
		Thresholds:     DefaultThresholds(),
		Log:            logrus.StandardLogger(),
		Now:            time.Now,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Command == "" {
		c.Command = d.Command
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = d.CommandTimeout
	}
	if c.HealTimeout <= 0 {
		c.HealTimeout = d.HealTimeout
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = d.MaxConcurrent
	}
	if c.LockRetries == 0 {
		c.LockRetries = d.LockRetries
	}
	if c.LockRetryDelay <= 0 {
		c.LockRetryDelay = d.LockRetryDelay
	}
	if c.Location == nil {
		c.Location = d.Location
	}
	c.Thresholds = c.Thresholds.withDefaults()
	if c.Log == nil {
		c.Log = d.Log
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	return c
}

// Collector reads a site's GlusterFS state through the gluster CLI and
// builds its health report. It is safe for concurrent use; cycles do not
// share state.
type Collector struct {
	run Runner
	cfg Config
}

// New returns a Collector that runs commands through r (ExecRunner{} when
// nil).
func New(r Runner, cfg Config) *Collector {
	if r == nil {
		r = ExecRunner{}
	}
	return &Collector{run: r, cfg: cfg.withDefaults()}
}

// Config returns the collector's configuration, defaults filled in.
func (c *Collector) Config() Config { return c.cfg }

// The gluster commands of one cycle (after the CLI's name).
var (
	cmdVolumeInfo   = []string{"--mode=script", "--xml", "volume", "info"}
	cmdStatusDetail = []string{"--mode=script", "--xml", "volume", "status", "all", "detail"}
	cmdStatus       = []string{"--mode=script", "--xml", "volume", "status", "all"}
	cmdPeerStatus   = []string{"--mode=script", "--xml", "peer", "status"}
	cmdGeoRep       = []string{"--mode=script", "--xml", "volume", "geo-replication", "status", "detail"}
)

func cmdHealSummary(vol string) []string {
	return []string{"--mode=script", "--xml", "volume", "heal", vol, "info", "summary"}
}

func cmdSplitBrain(vol string) []string {
	return []string{"--mode=script", "--xml", "volume", "heal", vol, "info", "split-brain"}
}

// Collect runs one cycle: every command (at most MaxConcurrent at once),
// parse, assess. A failed command makes the parts of the report it feeds
// unknown and is listed in the report's Errors (and logged once); it does
// not fail the cycle. The error is non-nil only when ctx ended during the
// cycle; the report then holds what was read before.
func (c *Collector) Collect(ctx context.Context) (protocol.StorageReport, error) {
	start := c.cfg.Now()
	cy := &cycle{c: c, sem: make(chan struct{}, c.cfg.MaxConcurrent)}
	s := Snapshot{
		TakenAt:       start,
		Heal:          map[string][]HealBrick{},
		HealErr:       map[string]error{},
		SplitBrain:    map[string][]HealBrick{},
		SplitBrainErr: map[string]error{},
	}
	var wg sync.WaitGroup
	// The two volume status commands take the same glusterd lock: one
	// after the other.
	wg.Go(func() {
		st, err := runCmd(cy, ctx, cmdStatusDetail, c.cfg.CommandTimeout, ParseVolumeStatus)
		cy.set(func() { s.Status, s.StatusErr = st, err })
		ds, err := runCmd(cy, ctx, cmdStatus, c.cfg.CommandTimeout, ParseVolumeStatus)
		cy.set(func() { s.Daemons, s.DaemonsErr = ds, err })
	})
	// Geo-replication status is the slowest command (glusterd runs
	// gsyncd, a python program, per worker): start it at once.
	wg.Go(func() {
		gr, err := runCmd(cy, ctx, cmdGeoRep, c.cfg.CommandTimeout, func(b []byte) ([]GeoRepPair, error) {
			return ParseGeoRepStatus(b, c.cfg.Location)
		})
		cy.set(func() { s.GeoRep, s.GeoRepErr = gr, err })
	})
	wg.Go(func() {
		ps, err := runCmd(cy, ctx, cmdPeerStatus, c.cfg.CommandTimeout, ParsePeerStatus)
		cy.set(func() { s.Peers, s.PeersErr = ps, err })
	})
	vols, err := runCmd(cy, ctx, cmdVolumeInfo, c.cfg.CommandTimeout, ParseVolumeInfo)
	cy.set(func() { s.Volumes, s.VolumesErr = vols, err })
	for _, v := range vols {
		if v.State != "Started" || !hasHeal(v) {
			continue
		}
		wg.Go(func() { cy.heal(ctx, v.Name, &s) })
	}
	wg.Wait()

	s.Errors = cy.errs
	sort.Strings(s.Errors)
	r := Assess(s, c.cfg.Thresholds)
	r.CycleMillis = c.cfg.Now().Sub(start).Milliseconds()
	return r, ctx.Err()
}

// cycle is the state of one Collect call.
type cycle struct {
	c    *Collector
	sem  chan struct{}
	mu   sync.Mutex
	errs []string
}

func (cy *cycle) set(f func()) {
	cy.mu.Lock()
	defer cy.mu.Unlock()
	f()
}

// heal reads a volume's heal summary and, when it counts split-brain
// entries, their names.
func (cy *cycle) heal(ctx context.Context, vol string, s *Snapshot) {
	hb, err := runCmd(cy, ctx, cmdHealSummary(vol), cy.c.cfg.HealTimeout, ParseHeal)
	cy.set(func() {
		if err != nil {
			s.HealErr[vol] = err
		} else {
			s.Heal[vol] = hb
		}
	})
	split := false
	for _, b := range hb {
		if b.SplitBrain > 0 {
			split = true
		}
	}
	if !split {
		return
	}
	sb, err := runCmd(cy, ctx, cmdSplitBrain(vol), cy.c.cfg.HealTimeout, ParseHeal)
	cy.set(func() {
		if err != nil {
			s.SplitBrainErr[vol] = err
		} else {
			s.SplitBrain[vol] = sb
		}
	})
}

// runCmd runs one gluster command under the concurrency bound and a timeout,
// retries it while glusterd's lock is busy, and parses its output. A
// failure is recorded in the cycle's errors, logged, and returned.
func runCmd[T any](cy *cycle, ctx context.Context, args []string, timeout time.Duration, parse func([]byte) (T, error)) (T, error) {
	var zero T
	cmdline := cy.c.cfg.Command + " " + strings.Join(args, " ")
	var err error
	for attempt := 0; ; attempt++ {
		var out T
		out, err = runOnce(cy, ctx, args, timeout, parse)
		if err == nil {
			return out, nil
		}
		var oe *OpError
		if !errors.As(err, &oe) || !lockBusy(oe.Msg) || attempt >= cy.c.cfg.LockRetries {
			break
		}
		t := time.NewTimer(cy.c.cfg.LockRetryDelay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
			continue
		}
		break
	}
	cy.c.cfg.Log.WithFields(logrus.Fields{"cmd": cmdline, "error": err.Error()}).Warn("gluster command failed")
	cy.set(func() { cy.errs = append(cy.errs, cmdline+": "+err.Error()) })
	return zero, err
}

func runOnce[T any](cy *cycle, ctx context.Context, args []string, timeout time.Duration, parse func([]byte) (T, error)) (T, error) {
	var zero T
	select {
	case cy.sem <- struct{}{}:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	stdout, stderr, code, err := cy.c.run.Run(cctx, cy.c.cfg.Command, args...)
	cancel()
	<-cy.sem
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return zero, fmt.Errorf("timed out after %s", timeout)
		}
		return zero, err
	}
	if len(bytes.TrimSpace(stdout)) == 0 && bytes.Contains(stderr, []byte(connFailed)) {
		return zero, ErrGlusterdDown
	}
	if len(bytes.TrimSpace(stdout)) == 0 {
		return zero, fmt.Errorf("exit %d, no output: %s", code, firstLine(stderr))
	}
	out, err := parse(stdout)
	if err != nil {
		if code != 0 {
			return zero, fmt.Errorf("exit %d: %w", code, err)
		}
		return zero, err
	}
	if code != 0 {
		return zero, fmt.Errorf("exit %d although the output reports success: %s", code, firstLine(stderr))
	}
	return out, nil
}

// lockBusy recognises glusterd's answers when another transaction holds
// the lock a command needs.
func lockBusy(msg string) bool {
	return strings.Contains(msg, "Another transaction is in progress") || strings.Contains(msg, "Locking failed")
}
