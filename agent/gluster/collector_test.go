package gluster

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/gluster/glusterfake"
	"github.com/canopy-grid/canopy/protocol"
)

// healthyFake answers the commands of one cycle with the healthy captures.
func healthyFake(t *testing.T) (*glusterfake.Runner, time.Time) {
	t.Helper()
	f, sc, err := glusterfake.LoadScenario("testdata/scenarios/healthy.tsv", "testdata/fixtures")
	if err != nil {
		t.Fatal(err)
	}
	return f, sc.TakenAt
}

func fixture(t *testing.T, name string) []byte { return readFixture(t, name) }

var healKey = glusterfake.Key("gluster", cmdHealSummary("repvol")...)

func TestCollectDegradesOnePart(t *testing.T) {
	tests := []struct {
		name      string
		resp      glusterfake.Response
		heal      time.Duration
		wantErr   string
		wantState protocol.StorageStatus
	}{
		{name: "runner error", resp: glusterfake.Response{Err: errors.New("fork: resource busy")},
			wantErr: healKey + ": fork: resource busy", wantState: protocol.StorageUnknown},
		{name: "timeout", resp: glusterfake.Response{Block: make(chan struct{})}, heal: 50 * time.Millisecond,
			wantErr: healKey + ": timed out after 50ms", wantState: protocol.StorageUnknown},
		{name: "text instead of XML", resp: glusterfake.Response{Stdout: fixture(t, "heal-info-summary-pending-brick-down.txt")},
			wantErr: "output is not XML", wantState: protocol.StorageUnknown},
		{name: "failure on stderr only", resp: glusterfake.Response{Stderr: []byte("Launching heal operation has been unsuccessful\n"), ExitCode: 1},
			wantErr: "exit 1, no output: Launching heal operation has been unsuccessful", wantState: protocol.StorageUnknown},
		{name: "gluster op error", resp: glusterfake.Response{Stdout: fixture(t, "volume-status-stopped-volume.xml"), ExitCode: 1},
			wantErr: "exit 1: gluster failed (opRet -1, opErrno 30800): Volume geoslave is not started", wantState: protocol.StorageUnknown},
		{name: "truncated XML", resp: glusterfake.Response{Stdout: fixture(t, "heal-info-summary-healthy.xml")[:300]},
			wantErr: "malformed XML", wantState: protocol.StorageUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, at := healthyFake(t)
			f.Set(healKey, tc.resp)
			c := New(f, Config{Location: time.UTC, Now: func() time.Time { return at }, Log: quietLog(), HealTimeout: tc.heal})
			r, err := c.Collect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Errors) != 1 || !strings.Contains(r.Errors[0], tc.wantErr) {
				t.Errorf("errors %q, want one containing %q", r.Errors, tc.wantErr)
			}
			var repvol, geoslave protocol.VolumeHealth
			for _, v := range r.Volumes {
				switch v.Name {
				case "repvol":
					repvol = v
				case "geoslave":
					geoslave = v
				}
			}
			if repvol.Status != tc.wantState || repvol.HealPending != -1 {
				t.Errorf("repvol %s with %d pending, want %s and -1", repvol.Status, repvol.HealPending, tc.wantState)
			}
			// The rest of the report is intact.
			if repvol.BricksOnline != 3 || geoslave.Status != protocol.StorageUp || len(r.GeoReps) != 1 || r.GeoReps[0].Status != protocol.StorageUp {
				t.Errorf("other parts damaged: repvol %d bricks, geoslave %s, georeps %+v", repvol.BricksOnline, geoslave.Status, r.GeoReps)
			}
			if r.Status != protocol.StorageUnknown || !r.GlusterdUp {
				t.Errorf("site %s glusterd up %v, want unknown and true", r.Status, r.GlusterdUp)
			}
		})
	}
}

// runnerFunc adapts a function to Runner.
type runnerFunc func(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error)

func (f runnerFunc) Run(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
	return f(ctx, name, args...)
}

func TestCollectRetriesBusyLock(t *testing.T) {
	f, at := healthyFake(t)
	busy := []byte(`<?xml version="1.0"?><cliOutput><opRet>-1</opRet><opErrno>30802</opErrno><opErrstr>Another transaction is in progress for repvol. Please try again after some time.</opErrstr></cliOutput>`)
	statusKey := glusterfake.Key("gluster", cmdStatusDetail...)
	var tries atomic.Int32
	r := runnerFunc(func(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
		if glusterfake.Key(name, args...) == statusKey && tries.Add(1) <= 2 {
			return busy, nil, 1, nil
		}
		return f.Run(ctx, name, args...)
	})
	c := New(r, Config{Location: time.UTC, Now: func() time.Time { return at }, Log: quietLog(), LockRetryDelay: time.Millisecond})
	rep, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tries.Load() != 3 || len(rep.Errors) != 0 || rep.Status != protocol.StorageUp {
		t.Errorf("tries %d, errors %q, status %s; want 3 tries and a clean report", tries.Load(), rep.Errors, rep.Status)
	}

	// Out of retries: reported, not fatal.
	tries.Store(-10)
	rep, err = c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "Another transaction is in progress") {
		t.Errorf("errors %q", rep.Errors)
	}
}

func TestCollectBoundsConcurrency(t *testing.T) {
	f, at := healthyFake(t)
	var mu sync.Mutex
	running, peak := 0, 0
	r := runnerFunc(func(ctx context.Context, name string, args ...string) ([]byte, []byte, int, error) {
		mu.Lock()
		running++
		peak = max(peak, running)
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			mu.Unlock()
		}()
		return f.Run(ctx, name, args...)
	})
	for _, n := range []int{1, 2} {
		c := New(r, Config{Location: time.UTC, Now: func() time.Time { return at }, Log: quietLog(), MaxConcurrent: n})
		if _, err := c.Collect(context.Background()); err != nil {
			t.Fatal(err)
		}
		if peak > n {
			t.Errorf("MaxConcurrent %d: %d commands ran at once", n, peak)
		}
	}
}

func TestCollectCancelled(t *testing.T) {
	f, _ := healthyFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := New(f, Config{Log: quietLog()}).Collect(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	if r.Status != protocol.StorageUnknown {
		t.Errorf("status %s, want unknown", r.Status)
	}
}

// TestCollectSplitBrainOnlyWhenCounted checks that the split-brain list,
// another glfsheal run, is asked only when the summary counts entries.
func TestCollectSplitBrainOnlyWhenCounted(t *testing.T) {
	f, at := healthyFake(t)
	c := New(f, Config{Location: time.UTC, Now: func() time.Time { return at }, Log: quietLog()})
	if _, err := c.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, call := range f.Calls() {
		if strings.HasSuffix(call, "split-brain") {
			t.Errorf("asked %q on a healthy volume", call)
		}
	}
}

func TestDefaultConfig(t *testing.T) {
	c := New(nil, Config{}).Config()
	d := DefaultConfig()
	if c.Command != "gluster" || c.CommandTimeout != 30*time.Second || c.HealTimeout != 2*time.Minute || c.MaxConcurrent != 2 ||
		c.LockRetries != 2 || c.Thresholds != d.Thresholds || c.Location == nil || c.Log == nil || c.Now == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	th := Thresholds{HealPendingPartial: -1, GeoRepLagPartial: time.Hour}.withDefaults()
	if th.HealPendingPartial != -1 || th.GeoRepLagPartial != time.Hour || th.SplitBrainDegraded != 1 {
		t.Errorf("explicit thresholds overridden: %+v", th)
	}
}

func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/fixtures/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
