package vmagent

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock advances by step at every reading.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

var hostAnswer = answer{stdout: "worker1.example.org\n"}

const (
	offCmd    = "condor_off -peaceful -startd"
	hostCmd   = "condor_config_val FULL_HOSTNAME"
	statusCmd = "condor_status -direct worker1.example.org -af Name SlotType State Activity JobId"
	drainCmd  = "condor_drain -graceful -reason canopy: demand fell slot1@worker1.example.org"
)

func TestRetire(t *testing.T) {
	far := func() time.Time { return time.Now().Add(time.Hour) }
	tests := []struct {
		name     string
		answers  func(t *testing.T) map[string][]answer
		deadline func() time.Time
		clock    *fakeClock
		want     RetireResult
		wantErr  string
		calls    []string
	}{
		{
			name: "peaceful shutdown, jobs finish, startd exits",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {hostAnswer},
					"condor_off":        {recorded(t, "50_condor_off_peaceful_startd_worker1")},
					"condor_status": {
						recorded(t, "51_condor_status-af_after-worker-startd-exit"), // 2 jobs
						recorded(t, "50_condor_status-af_after-off-peaceful"),       // 1 job, retiring
						recorded(t, "43_condor_off_NO-SUCH-NAME"),                   // startd gone
					},
				}
			},
			deadline: far,
			want:     RetireResult{Host: "worker1.example.org"},
			calls:    []string{hostCmd, offCmd, statusCmd, statusCmd, statusCmd},
		},
		{
			name: "startd stays with an idle partitionable slot",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {hostAnswer},
					"condor_off":        {recorded(t, "50_condor_off_peaceful_startd_worker1")},
					"condor_status":     {{stdout: "slot1@worker1.example.org Partitionable Unclaimed Idle undefined\n"}},
				}
			},
			deadline: far,
			want:     RetireResult{Host: "worker1.example.org"},
			calls:    []string{hostCmd, offCmd, statusCmd},
		},
		{
			name: "peaceful shutdown refused: drain by slot name instead",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {hostAnswer},
					"condor_off":        {{stderr: "AUTHENTICATE:1003:Failed to authenticate with any method\n", code: 1}},
					"condor_drain":      {recorded(t, "57_condor_drain_by-slotname_slot1@vm")},
					"condor_status":     {recorded(t, "53_condor_status-af_after-drain-exit")}, // no slots left
				}
			},
			deadline: far,
			want:     RetireResult{Host: "worker1.example.org"},
			calls:    []string{hostCmd, offCmd, drainCmd, statusCmd},
		},
		{
			name: "startd not running",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {hostAnswer},
					"condor_off":        {recorded(t, "54a_condor_off_peaceful_no-daemon-flag_worker1_ERROR-startd-already-gone")},
				}
			},
			deadline: far,
			want:     RetireResult{Host: "worker1.example.org"},
			calls:    []string{hostCmd, offCmd},
		},
		{
			name: "deadline passes with a job running",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {hostAnswer},
					"condor_off":        {recorded(t, "50_condor_off_peaceful_startd_worker1")},
					"condor_status":     {recorded(t, "50_condor_status-af_after-off-peaceful")},
				}
			},
			clock:    &fakeClock{t: time.Unix(1000, 0), step: time.Minute},
			deadline: func() time.Time { return time.Unix(1000, 0).Add(150 * time.Second) },
			want:     RetireResult{Host: "worker1.example.org", JobsLeft: 1, TimedOut: true},
			calls:    []string{hostCmd, offCmd, statusCmd, statusCmd, statusCmd}, // at +1, +2 and +3 min
		},
		{
			name: "unreadable job listing until the deadline",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {hostAnswer},
					"condor_off":        {recorded(t, "50_condor_off_peaceful_startd_worker1")},
					"condor_status":     {{stdout: "garbage\n"}},
				}
			},
			clock:    &fakeClock{t: time.Unix(1000, 0), step: time.Minute},
			deadline: func() time.Time { return time.Unix(1000, 0).Add(90 * time.Second) },
			want:     RetireResult{Host: "worker1.example.org", TimedOut: true},
			calls:    []string{hostCmd, offCmd, statusCmd, statusCmd}, // at +1 and +2 min
		},
		{
			name: "neither stop works",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {hostAnswer},
					"condor_off":        {{stderr: "AUTHENTICATE:1003:Failed to authenticate with any method\n", code: 1}},
					"condor_drain":      {{stderr: "AUTHENTICATE:1004:Failed to authenticate using IDTOKENS\n", code: 1}},
				}
			},
			deadline: far,
			want:     RetireResult{Host: "worker1.example.org"},
			wantErr:  "AUTHENTICATE:1004",
			calls:    []string{hostCmd, offCmd, drainCmd},
		},
		{
			name: "no host name (no HTCondor configured)",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_config_val": {{stderr: "Not defined: FULL_HOSTNAME", code: 1}},
					"condor_off":        {recorded(t, "50_condor_off_peaceful_startd_worker1")},
				}
			},
			deadline: far,
			calls:    []string{hostCmd, offCmd},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := testLog()
			r := newFakeRunner(t, tt.answers(t))
			rt := Retirer{Runner: r, Log: log, Poll: time.Microsecond}
			if tt.clock != nil {
				rt.Now = tt.clock.Now
			}
			got, err := rt.Retire(context.Background(), tt.deadline, "demand fell")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("result %+v, want %+v", got, tt.want)
			}
			if calls := r.Calls(); !reflect.DeepEqual(calls, tt.calls) {
				t.Errorf("calls:\n%q\nwant\n%q", calls, tt.calls)
			}
		})
	}
}

func TestRetireWithLogRunner(t *testing.T) {
	log, hook := testLog()
	res, err := Retirer{Runner: LogRunner{Log: log}, Log: log}.Retire(context.Background(),
		func() time.Time { return time.Now().Add(time.Hour) }, "")
	if err != nil || res != (RetireResult{}) {
		t.Fatalf("Retire = %+v, %v", res, err)
	}
	var cmds []string
	for _, e := range hook.AllEntries() {
		if c, ok := e.Data["command"]; ok {
			cmds = append(cmds, c.(string))
		}
	}
	if want := []string{hostCmd, offCmd}; !reflect.DeepEqual(cmds, want) {
		t.Fatalf("logged %q, want %q", cmds, want)
	}
}

func TestRetireCancelled(t *testing.T) {
	log, _ := testLog()
	ctx, cancel := context.WithCancel(context.Background())
	r := newFakeRunner(t, map[string][]answer{
		"condor_config_val": {hostAnswer},
		"condor_off":        {recorded(t, "50_condor_off_peaceful_startd_worker1")},
		"condor_status":     {recorded(t, "50_condor_status-af_after-off-peaceful")},
	})
	r.onRun = func(line string) {
		if line == statusCmd {
			cancel()
		}
	}
	_, err := Retirer{Runner: r, Log: log, Poll: time.Hour}.Retire(ctx, func() time.Time { return time.Now().Add(2 * time.Hour) }, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

func TestParseRunningJobs(t *testing.T) {
	tests := []struct {
		name, in string
		want     int
		wantErr  string
	}{
		{"empty", "", 0, ""},
		{"recorded: two jobs", readFile(t, "testdata/htcondor/51_condor_status-af_after-worker-startd-exit.out"), 2, ""},
		{"recorded: one retiring job", readFile(t, "testdata/htcondor/50_condor_status-af_after-off-peaceful.out"), 1, ""},
		{"idle partitionable slot", "slot1@h Partitionable Unclaimed Idle undefined\n", 0, ""},
		{"too few fields", "slot1@h undefined\n", 0, "not \"Name SlotType State Activity JobId\""},
		{"bad job id", "slot1_1@h Dynamic Claimed Busy 12\n", 0, "neither N.N nor undefined"},
		{"bad slot name", "slot1\"@h Dynamic Claimed Busy 1.0\n", 0, "not \"Name"},
		{"error text", "Error: communication error\n", 0, "not \"Name"},
		{"too many lines", strings.Repeat("s@h Dynamic Claimed Busy 1.0\n", maxSlotLines+1), 0, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRunningJobs([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// FuzzParseRunningJobs: never a panic, never a negative count.
func FuzzParseRunningJobs(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseRunningJobs(b)
		if err == nil && (n < 0 || n > maxSlotLines) {
			t.Fatalf("count %d", n)
		}
	})
}
