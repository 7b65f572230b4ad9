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

// The recorded workers (testdata/htcondor/live*): worker1 has a bare host
// name, worker2.canopy.test a dotted one.
const (
	whoCmd    = "condor_who -quick"
	offCmd    = "condor_off -peaceful -startd"
	hostCmd   = "condor_config_val FULL_HOSTNAME"
	statusCmd = "condor_status -direct <127.0.0.1:44041> -af Name SlotType State Activity JobId"
	drainCmd  = "condor_drain -graceful -reason canopy: demand fell slot1@worker1"
	// worker1's master, as condor_who -quick reports it.
	masterOffCmd = "condor_off -peaceful -master -addr <127.0.0.1:35855?addrs=127.0.0.1-35855&alias=worker1>"
)

var authFailure = answer{stderr: "AUTHENTICATE:1003:Failed to authenticate with any method\n", code: 1}

func TestRetire(t *testing.T) {
	far := func() time.Time { return time.Now().Add(time.Hour) }
	tests := []struct {
		name     string
		answers  func(t *testing.T) map[string][]answer
		deadline func() time.Time
		clock    *fakeClock
		want     RetireResult
		calls    []string
	}{
		{
			name: "bare host name: peaceful shutdown, jobs finish, startd exits",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who": {
						recorded(t, "live02_worker1_condor_who-quick_idle"),
						recorded(t, "live07_worker1_condor_who-quick_retiring"),
						recorded(t, "live09_worker1_condor_who-quick_startd-exited"),
					},
					"condor_off": {recorded(t, "live06_worker1_condor_off-peaceful-startd")},
					"condor_status": {
						recorded(t, "live05_worker1_condor_status-direct-addr_2jobs"),
						recorded(t, "live08_worker1_condor_status-direct-addr_retiring"),
					},
				}
			},
			deadline: far,
			want:     RetireResult{Drained: true, StartdExited: true},
			calls:    []string{whoCmd, statusCmd, offCmd, whoCmd, statusCmd, whoCmd},
		},
		{
			name: "dotted host name: the same",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who": {
						recorded(t, "live16_worker2_condor_who-quick_idle"),
						recorded(t, "live21_worker2_condor_who-quick_retiring"),
						recorded(t, "live21_worker2_condor_who-quick_retiring"),
						recorded(t, "live23_worker2_condor_who-quick_startd-exited"),
					},
					"condor_off": {recorded(t, "live20_worker2_condor_off-peaceful-startd")},
					"condor_status": {
						recorded(t, "live19_worker2_condor_status-direct-addr_2jobs"),
						recorded(t, "live22_worker2_condor_status-direct-addr_retiring"),
						recorded(t, "live22_worker2_condor_status-direct-addr_retiring"),
					},
				}
			},
			deadline: far,
			want:     RetireResult{Drained: true, StartdExited: true},
			calls: []string{whoCmd, "condor_status -direct <127.0.0.1:45319> -af Name SlotType State Activity JobId", offCmd,
				whoCmd, "condor_status -direct <127.0.0.1:45319> -af Name SlotType State Activity JobId",
				whoCmd, "condor_status -direct <127.0.0.1:45319> -af Name SlotType State Activity JobId", whoCmd},
		},
		{
			name: "startd already gone",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{"condor_who": {recorded(t, "live09_worker1_condor_who-quick_startd-exited")}}
			},
			deadline: far,
			want:     RetireResult{Drained: true, StartdExited: true},
			calls:    []string{whoCmd},
		},
		{
			name: "stopped startd with no busy slot is drained before it exits",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who":    {recorded(t, "live02_worker1_condor_who-quick_idle")},
					"condor_off":    {recorded(t, "live06_worker1_condor_off-peaceful-startd")},
					"condor_status": {recorded(t, "live03_worker1_condor_status-direct-addr_idle")},
				}
			},
			deadline: far,
			want:     RetireResult{Drained: true},
			calls:    []string{whoCmd, statusCmd, offCmd, whoCmd, statusCmd},
		},
		{
			name: "peaceful shutdown refused: drain by slot name (bare host name) instead",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who":        {recorded(t, "live02_worker1_condor_who-quick_idle")},
					"condor_off":        {authFailure},
					"condor_config_val": {recorded(t, "live01_worker1_condor_config_val_FULL_HOSTNAME")},
					"condor_drain":      {recorded(t, "57_condor_drain_by-slotname_slot1@vm")},
					"condor_status": {
						recorded(t, "live05_worker1_condor_status-direct-addr_2jobs"),
						recorded(t, "live03_worker1_condor_status-direct-addr_idle"),
					},
				}
			},
			deadline: far,
			want:     RetireResult{Host: "worker1", Drained: true},
			calls:    []string{whoCmd, statusCmd, offCmd, hostCmd, drainCmd, whoCmd, statusCmd},
		},
		{
			name: "neither stop works: an idle startd that still takes jobs is not drained; tried again until the deadline",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who":        {recorded(t, "live02_worker1_condor_who-quick_idle")},
					"condor_off":        {authFailure},
					"condor_config_val": {recorded(t, "live01_worker1_condor_config_val_FULL_HOSTNAME")},
					"condor_drain":      {{stderr: "AUTHENTICATE:1004:Failed to authenticate using IDTOKENS\n", code: 1}},
					"condor_status":     {recorded(t, "live03_worker1_condor_status-direct-addr_idle")},
				}
			},
			clock:    &fakeClock{t: time.Unix(1000, 0), step: time.Minute},
			deadline: func() time.Time { return time.Unix(1000, 0).Add(90 * time.Second) },
			want:     RetireResult{Host: "worker1", TimedOut: true},
			calls: []string{whoCmd, statusCmd, offCmd, hostCmd, drainCmd,
				whoCmd, statusCmd, offCmd, drainCmd},
		},
		{
			name: "stop failed, then the startd exits: drained",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who": {
						recorded(t, "live02_worker1_condor_who-quick_idle"),
						recorded(t, "live09_worker1_condor_who-quick_startd-exited"),
					},
					"condor_off":        {authFailure},
					"condor_config_val": {{stderr: "Not defined: FULL_HOSTNAME\n", code: 1}},
					"condor_status":     {recorded(t, "live05_worker1_condor_status-direct-addr_2jobs")},
				}
			},
			deadline: far,
			want:     RetireResult{Drained: true, StartdExited: true},
			calls:    []string{whoCmd, statusCmd, offCmd, hostCmd, whoCmd},
		},
		{
			name: "deadline passes with jobs running",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who":    {recorded(t, "live07_worker1_condor_who-quick_retiring")},
					"condor_off":    {recorded(t, "live06_worker1_condor_off-peaceful-startd")},
					"condor_status": {recorded(t, "live08_worker1_condor_status-direct-addr_retiring")},
				}
			},
			clock:    &fakeClock{t: time.Unix(1000, 0), step: time.Minute},
			deadline: func() time.Time { return time.Unix(1000, 0).Add(150 * time.Second) },
			want:     RetireResult{JobsLeft: 2, TimedOut: true},
			calls: []string{whoCmd, statusCmd, offCmd, whoCmd, statusCmd, // +1 min
				whoCmd, statusCmd, whoCmd, statusCmd}, // +2, +3 min
		},
		{
			name: "the startd does not answer: unknown, not drained, until the deadline",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who":    {recorded(t, "live07_worker1_condor_who-quick_retiring")},
					"condor_off":    {recorded(t, "live06_worker1_condor_off-peaceful-startd")},
					"condor_status": {recorded(t, "live10_worker1_condor_status-direct-addr_startd-exited")},
				}
			},
			clock:    &fakeClock{t: time.Unix(1000, 0), step: time.Minute},
			deadline: func() time.Time { return time.Unix(1000, 0).Add(90 * time.Second) },
			want:     RetireResult{JobsLeft: -1, TimedOut: true},
			calls:    []string{whoCmd, statusCmd, offCmd, whoCmd, statusCmd, whoCmd, statusCmd},
		},
		{
			name: "the old way's failure (condor_status -direct <bare host>) is never run; unreadable listing is unknown",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{
					"condor_who":    {recorded(t, "live07_worker1_condor_who-quick_retiring")},
					"condor_off":    {recorded(t, "live06_worker1_condor_off-peaceful-startd")},
					"condor_status": {recorded(t, "live04_worker1_condor_status-direct-hostname"), {stdout: "garbage\n"}},
				}
			},
			clock:    &fakeClock{t: time.Unix(1000, 0), step: time.Minute},
			deadline: func() time.Time { return time.Unix(1000, 0).Add(30 * time.Second) },
			want:     RetireResult{JobsLeft: -1, TimedOut: true},
			calls:    []string{whoCmd, statusCmd, offCmd, whoCmd, statusCmd},
		},
		{
			name: "the local master is gone: unknown, and condor_off is never sent (it would find a master by name)",
			answers: func(t *testing.T) map[string][]answer {
				return map[string][]answer{"condor_who": {recorded(t, "live14_worker1_condor_who-quick_master-gone")}}
			},
			clock:    &fakeClock{t: time.Unix(1000, 0), step: time.Minute},
			deadline: func() time.Time { return time.Unix(1000, 0).Add(90 * time.Second) },
			want:     RetireResult{JobsLeft: -1, TimedOut: true},
			calls:    []string{whoCmd, whoCmd},
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
			if err != nil {
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

func TestRetireWithoutCondor(t *testing.T) {
	log, hook := testLog()
	rt := Retirer{Runner: LogRunner{Log: log}, Log: log, NoCondor: !hasCondor(LogRunner{Log: log})}
	res, err := rt.Retire(context.Background(), func() time.Time { return time.Now().Add(time.Hour) }, "")
	if err != nil || res != (RetireResult{Drained: true}) {
		t.Fatalf("Retire = %+v, %v", res, err)
	}
	if err := rt.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, e := range hook.AllEntries() {
		if c, ok := e.Data["command"]; ok {
			t.Errorf("ran %q on a VM without HTCondor", c)
		}
	}
	if !hasCondor(ExecRunner{}) {
		t.Error("ExecRunner says it has no HTCondor")
	}
}

func TestRetireCancelled(t *testing.T) {
	log, _ := testLog()
	ctx, cancel := context.WithCancel(context.Background())
	r := newFakeRunner(t, map[string][]answer{
		"condor_who":    {recorded(t, "live07_worker1_condor_who-quick_retiring")},
		"condor_off":    {recorded(t, "live06_worker1_condor_off-peaceful-startd")},
		"condor_status": {recorded(t, "live08_worker1_condor_status-direct-addr_retiring")},
	})
	polls := 0
	r.onRun = func(line string) {
		if line == statusCmd {
			if polls++; polls == 2 {
				cancel()
			}
		}
	}
	_, err := Retirer{Runner: r, Log: log, Poll: time.Hour}.Retire(ctx, func() time.Time { return time.Now().Add(2 * time.Hour) }, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("startd exited: the master at its own address", func(t *testing.T) {
		log, _ := testLog()
		r := newFakeRunner(t, map[string][]answer{
			"condor_who": {recorded(t, "live09_worker1_condor_who-quick_startd-exited")},
			"condor_off": {recorded(t, "live29_try1_condor_off-peaceful-master-addr")},
		})
		if err := (Retirer{Runner: r, Log: log}).Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, want := r.Calls(), []string{whoCmd, masterOffCmd}; !reflect.DeepEqual(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
	})
	t.Run("jobs run again: refused", func(t *testing.T) {
		log, _ := testLog()
		r := newFakeRunner(t, map[string][]answer{
			"condor_who":    {recorded(t, "live02_worker1_condor_who-quick_idle")},
			"condor_status": {recorded(t, "live05_worker1_condor_status-direct-addr_2jobs")},
		})
		err := (Retirer{Runner: r, Log: log}).Shutdown(context.Background())
		if err == nil || !strings.Contains(err.Error(), "busy") {
			t.Fatalf("err %v", err)
		}
		if got, want := r.Calls(), []string{whoCmd, statusCmd}; !reflect.DeepEqual(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
	})
	t.Run("master gone: nothing sent", func(t *testing.T) {
		log, _ := testLog()
		r := newFakeRunner(t, map[string][]answer{"condor_who": {recorded(t, "live14_worker1_condor_who-quick_master-gone")}})
		if err := (Retirer{Runner: r, Log: log}).Shutdown(context.Background()); err == nil {
			t.Fatal("Shutdown with the master gone succeeded")
		}
		if got, want := r.Calls(), []string{whoCmd}; !reflect.DeepEqual(got, want) {
			t.Errorf("calls %q, want %q", got, want)
		}
	})
}

func TestParseWhoQuick(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    StartdState
		wantErr string
	}{
		{"recorded: idle, bare host", readFile(t, "testdata/htcondor/live02_worker1_condor_who-quick_idle.out"),
			StartdState{MasterAddr: "<127.0.0.1:35855?addrs=127.0.0.1-35855&alias=worker1>", StartdAddr: "<127.0.0.1:44041>"}, ""},
		{"recorded: retiring, dotted host", readFile(t, "testdata/htcondor/live21_worker2_condor_who-quick_retiring.out"),
			StartdState{MasterAddr: "<127.0.0.1:38967?addrs=127.0.0.1-38967&alias=worker2.canopy.test>", StartdAddr: "<127.0.0.1:45319>"}, ""},
		{"recorded: startd exited", readFile(t, "testdata/htcondor/live09_worker1_condor_who-quick_startd-exited.out"),
			StartdState{MasterAddr: "<127.0.0.1:35855?addrs=127.0.0.1-35855&alias=worker1>", StartdExited: true}, ""},
		{"recorded: master gone", readFile(t, "testdata/htcondor/live14_worker1_condor_who-quick_master-gone.out"), StartdState{}, "did not answer"},
		{"empty", "", StartdState{}, "did not answer"},
		{"no startd in the master's list", "MASTER_PID = 12\nMASTER_Addr = \"<127.0.0.1:5>\"\n", StartdState{}, "no startd"},
		{"startd running without an address", "MASTER_PID = 12\nMASTER_Addr = \"<127.0.0.1:5>\"\nSTARTD_PID = 13\n", StartdState{}, "not a daemon address"},
		{"bad startd address", "MASTER_PID = 12\nMASTER_Addr = \"<127.0.0.1:5>\"\nSTARTD_PID = 13\nSTARTD_Addr = \"127.0.0.1:6; rm\"\n", StartdState{}, "not a daemon address"},
		{"bad master address", "MASTER_PID = 12\nMASTER_Addr = \"-name x\"\nSTARTD_PID = 0\n", StartdState{}, "MASTER_Addr"},
		{"negative pid", "MASTER_PID = 12\nMASTER_Addr = \"<127.0.0.1:5>\"\nSTARTD_PID = -1\n", StartdState{}, "not a PID"},
		{"too long", strings.Repeat("X = 1\n", maxWhoLines+1), StartdState{}, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWhoQuick([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseSlots(t *testing.T) {
	tests := []struct {
		name, in string
		want     SlotCount
		wantErr  string
	}{
		{"empty", "", SlotCount{}, ""},
		{"recorded: two jobs", readFile(t, "testdata/htcondor/live05_worker1_condor_status-direct-addr_2jobs.out"), SlotCount{Jobs: 2, Busy: 2}, ""},
		{"recorded: two retiring jobs, dotted host", readFile(t, "testdata/htcondor/live22_worker2_condor_status-direct-addr_retiring.out"), SlotCount{Jobs: 2, Busy: 2}, ""},
		{"recorded: idle partitionable slot", readFile(t, "testdata/htcondor/live03_worker1_condor_status-direct-addr_idle.out"), SlotCount{}, ""},
		{"recorded (pool): two jobs", readFile(t, "testdata/htcondor/51_condor_status-af_after-worker-startd-exit.out"), SlotCount{Jobs: 2, Busy: 2}, ""},
		{"claimed, no job yet", "slot1_1@h Dynamic Claimed Idle undefined\n", SlotCount{Busy: 1}, ""},
		{"recorded: startd gone is an error", readFile(t, "testdata/htcondor/live10_worker1_condor_status-direct-addr_startd-exited.err"), SlotCount{}, "not \"Name"},
		{"too few fields", "slot1@h undefined\n", SlotCount{}, "not \"Name SlotType State Activity JobId\""},
		{"bad job id", "slot1_1@h Dynamic Claimed Busy 12\n", SlotCount{}, "neither N.N nor undefined"},
		{"bad slot name", "slot1\"@h Dynamic Claimed Busy 1.0\n", SlotCount{}, "not \"Name"},
		{"too many lines", strings.Repeat("s@h Dynamic Claimed Busy 1.0\n", maxSlotLines+1), SlotCount{}, "over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSlots([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzParseSlots: never a panic, never a count out of range.
func FuzzParseSlots(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseSlots(b)
		if err == nil && (c.Jobs < 0 || c.Busy < c.Jobs || c.Busy > maxSlotLines) {
			t.Fatalf("count %+v", c)
		}
	})
}

// FuzzParseWhoQuick: never a panic; an address that comes back is one
// that can be handed to a tool as an argument.
func FuzzParseWhoQuick(f *testing.F) {
	f.Add([]byte("MASTER_PID = 1\nMASTER_Addr = \"<127.0.0.1:5>\"\nSTARTD_PID = 2\nSTARTD_Addr = \"<127.0.0.1:6>\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseWhoQuick(b)
		if err != nil {
			return
		}
		if !sinfulRE.MatchString(st.MasterAddr) || (!st.StartdExited && !sinfulRE.MatchString(st.StartdAddr)) {
			t.Fatalf("addresses %+v", st)
		}
	})
}
