package htcondor_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/hub/htcondor/condorfake"
	"github.com/canopy-grid/canopy/hub/planner"
)

// recordedStart is the START of the recorded personal pool's startds.
const recordedStart = `(TARGET.VMType =?= MY.VMType) || (TARGET.VMType =?= undefined)`

// testConfig describes the recorded pool: two VM types, centos7 and
// ubuntu22, whose startds advertise the recorded START and file system
// domain. It reads queues job by job, as the recordings of the shared
// fixtures were made; the autocluster query has recordings of its own
// (autocluster_test.go).
func testConfig() htcondor.Config {
	return htcondor.Config{
		DemandQuery: htcondor.QueryJobs,
		VMTypes: []htcondor.VMTypeConfig{
			{Name: "centos7"},
			{Name: "ubuntu22", Attributes: map[string]string{"OpSysAndVer": `"Ubuntu22"`}},
		},
		MachineAd: map[string]string{"FileSystemDomain": `"localpool"`, "Start": recordedStart},
	}
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

var recordings map[string]condorfake.Recording

func rec(t *testing.T, name string) condorfake.Recording {
	t.Helper()
	if recordings == nil {
		var err error
		if recordings, err = condorfake.Load("testdata/recorded"); err != nil {
			t.Fatal(err)
		}
	}
	r, ok := recordings[name]
	if !ok {
		t.Fatalf("no recording %s", name)
	}
	return r
}

// withVMNames returns a recorded condor_status -json output with vmagent's
// attributes added to each slot ad, as a Canopy VM's startd advertises them:
// vms maps a startd daemon name to a VM name. The recorded pool ran no
// vmagent, so its slots lack them; everything else is as recorded.
func withVMNames(t *testing.T, r condorfake.Recording, vms map[string]string) condorfake.Recording {
	t.Helper()
	var ads []map[string]any
	if len(strings.TrimSpace(string(r.Stdout))) == 0 {
		return r
	}
	if err := json.Unmarshal(r.Stdout, &ads); err != nil {
		t.Fatal(err)
	}
	for _, ad := range ads {
		name, _ := ad["Name"].(string)
		startd := name[strings.IndexByte(name, '@')+1:]
		vm, ok := vms[startd]
		if !ok {
			continue
		}
		ad["CanopyVMName"] = vm
		ad["CanopyVMID"] = "id-" + vm
		ad["CanopySite"] = "site1"
		ad["CanopyGroup"] = "alice"
	}
	out, err := json.MarshalIndent(ads, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	r.Stdout = out
	r.Name += " (with vmagent attributes)"
	return r
}

// newSource returns a Source on a Replayer that answers its condor_q with
// queue and its condor_status with slots.
func newSource(t *testing.T, cfg htcondor.Config, queue, slots condorfake.Answer) (*htcondor.Source, *condorfake.Replayer) {
	t.Helper()
	fake := condorfake.New()
	src, err := htcondor.New(cfg, fake, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append([]string{""}, cfg.Schedds...) {
		fake.Set(src.QueueCommand(s).String(), queue)
	}
	fake.Set(src.SlotsCommand().String(), slots)
	return src, fake
}

func answer(r condorfake.Recording) condorfake.Answer { return condorfake.Answer{Recording: r} }

// now is after the recordings were made.
var now = time.Unix(1795360000, 0).UTC()

// TestPollShapes reads the recorded queue with jobs in every state.
func TestPollShapes(t *testing.T) {
	shape := func(vmType string, cpus, mem int, disk int64, idle, running int) planner.Shape {
		return planner.Shape{Group: "alice", VMType: vmType, Cpus: cpus, MemoryMiB: mem, DiskKiB: disk, Idle: idle, Running: running}
	}
	tests := []struct {
		name  string
		queue string
		want  []planner.Shape
	}{
		{"all states (held job left out)", "10_condor_q-json_all-states", []planner.Shape{
			// 3.0: default RequestMemory/RequestDisk expressions, evaluated
			// against the job ad ((ImageSize + 1023) / 1024 and DiskUsage);
			// no VM type named, both match, the default is taken.
			shape("centos7", 1, 1, 45, 0, 1),
			shape("centos7", 1, 128, 10240, 2, 0),
			shape("centos7", 1, 512, 1048576, 0, 3),
			shape("centos7", 8, 65536, 104857600, 1, 0),
			shape("ubuntu22", 2, 2048, 4194304, 1, 0),
		}},
		{"idle only", "11_condor_q-json_idle-only", []planner.Shape{
			shape("centos7", 1, 128, 10240, 2, 0),
			shape("centos7", 8, 65536, 104857600, 1, 0),
			shape("ubuntu22", 2, 2048, 4194304, 1, 0),
		}},
		{"the projection a provisioner asks for", "11_condor_q-json_projection", []planner.Shape{
			// No FileSystemDomain in this projection: the Requirements
			// clause TARGET.FileSystemDomain == MY.FileSystemDomain is
			// undefined, so every job is unmatchable.
		}},
		{"empty queue: no output at all", "00_condor_q-json_EMPTY-QUEUE", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, fake := newSource(t, testConfig(), answer(rec(t, tt.queue)), answer(rec(t, "20_condor_status-json_partitionable+4dynamic")))
			d, err := src.Poll(context.Background(), now, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Shapes) != len(tt.want) || (len(tt.want) > 0 && !reflect.DeepEqual(d.Shapes, tt.want)) {
				t.Errorf("shapes:\n got %+v\nwant %+v", d.Shapes, tt.want)
			}
			if !d.TakenAt.Equal(now) {
				t.Errorf("TakenAt %v", d.TakenAt)
			}
			if len(d.Machines) != 0 {
				t.Errorf("the recorded slots carry no CanopyVMName, yet machines %v", d.Machines)
			}
			calls := fake.Calls()
			if len(calls) != 2 {
				t.Fatalf("calls %v", calls)
			}
			for _, c := range calls {
				if strings.HasPrefix(c.Command, "condor_q ") && !strings.Contains(c.Command, " -allusers ") {
					t.Errorf("condor_q without -allusers: %s", c.Command)
				}
			}
		})
	}
}

// TestPollUnmatchable checks that jobs no VM type would run are counted
// apart, with the reason, and are not demand.
func TestPollUnmatchable(t *testing.T) {
	cfg := testConfig()
	cfg.VMTypes = cfg.VMTypes[:1] // centos7 only: job 2.0 wants ubuntu22
	src, _ := newSource(t, cfg, answer(rec(t, "11_condor_q-json_idle-only")), answer(rec(t, "00_condor_status-json_NO-MATCH")))
	d, err := src.Poll(context.Background(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range d.Shapes {
		if sh.VMType != "centos7" {
			t.Errorf("unexpected shape %+v", sh)
		}
	}
	st := src.Status()
	want := []htcondor.Unmatchable{{Group: "alice", Reason: `VM type "ubuntu22" is not configured`, Idle: 1, Example: "2.0"}}
	if !reflect.DeepEqual(st.Unmatchable, want) {
		t.Errorf("unmatchable %+v, want %+v", st.Unmatchable, want)
	}

	// vmagent's own START admits only jobs of the VM's group
	// (CanopyGroup or AcctGroup): the recorded jobs have neither.
	cfg = testConfig()
	delete(cfg.MachineAd, "Start")
	src, _ = newSource(t, cfg, answer(rec(t, "11_condor_q-json_idle-only")), answer(rec(t, "00_condor_status-json_NO-MATCH")))
	d, err = src.Poll(context.Background(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Shapes) != 0 {
		t.Errorf("shapes %+v, want none", d.Shapes)
	}
	idle := 0
	for _, u := range src.Status().Unmatchable {
		idle += u.Idle
		if !strings.Contains(u.Reason, "START") {
			t.Errorf("reason %q does not name START", u.Reason)
		}
	}
	if idle != 4 {
		t.Errorf("%d idle unmatchable jobs, want 4", idle)
	}
}

// TestPollSchedds reads two schedds and sums their jobs.
func TestPollSchedds(t *testing.T) {
	cfg := testConfig()
	cfg.Schedds = []string{"schedd1.example.org", "schedd2.example.org"}
	cfg.Pool = "cm.example.org:9618"
	src, fake := newSource(t, cfg, answer(rec(t, "11_condor_q-json_idle-only")), answer(rec(t, "00_condor_status-json_NO-MATCH")))
	d, err := src.Poll(context.Background(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	idle := 0
	for _, sh := range d.Shapes {
		idle += sh.Idle
	}
	if idle != 8 {
		t.Errorf("%d idle jobs, want 2 x 4", idle)
	}
	var qs []string
	for _, c := range fake.Calls() {
		if !strings.Contains(c.Command, " -pool cm.example.org:9618 ") {
			t.Errorf("no -pool: %s", c.Command)
		}
		if strings.HasPrefix(c.Command, "condor_q") {
			qs = append(qs, c.Command)
		}
	}
	if len(qs) != 2 || !strings.Contains(strings.Join(qs, "\n"), "-name schedd1.example.org") || !strings.Contains(strings.Join(qs, "\n"), "-name schedd2.example.org") {
		t.Errorf("condor_q runs %v", qs)
	}
	if got := src.Status().Schedds; len(got) != 2 || got[0].Idle != 4 || got[1].Idle != 4 {
		t.Errorf("schedd status %+v", got)
	}
}

// TestPollFailures checks that every way a tool can fail is an error naming
// the command and the reason, and never partial demand.
func TestPollFailures(t *testing.T) {
	queue := rec(t, "10_condor_q-json_all-states")
	// condor_q's answer when its schedd is down (HTCondor prints this; it
	// was not recorded here, the text is the one queue.cpp prints).
	down := condorfake.Recording{Name: "synthetic schedd down", Stderr: []byte(
		"\n-- Failed to fetch ads from: <127.0.0.1:9618?addrs=127.0.0.1-9618> : vm\nCEDAR:6001:Failed to connect to <127.0.0.1:9618?addrs=127.0.0.1-9618>\n")}
	downRC1 := down
	downRC1.ExitCode = 1
	cut := queue
	cut.Stdout = queue.Stdout[:len(queue.Stdout)*2/3]
	garbage := queue
	garbage.Stdout = []byte("Error: communication error\nCEDAR:6001:Failed to connect\n")
	garbage.Stderr = nil
	ok := answer(rec(t, "20_condor_status-json_partitionable+4dynamic"))
	tests := []struct {
		name      string
		q, s      condorfake.Answer
		ctx       func() (context.Context, context.CancelFunc)
		kind      htcondor.FailureKind
		truncated bool
		says      string
	}{
		{name: "schedd down, exit 1", q: condorfake.Answer{Recording: downRC1}, s: ok, kind: htcondor.FailExit, says: "Failed to fetch ads"},
		{name: "schedd down, exit 0", q: condorfake.Answer{Recording: down}, s: ok, kind: htcondor.FailReported, says: "Failed to connect"},
		{name: "truncated output", q: answer(cut), s: ok, kind: htcondor.FailOutput, truncated: true, says: "output ends early"},
		{name: "garbage output", q: answer(garbage), s: ok, kind: htcondor.FailOutput, says: "expected '[' or '{'"},
		{name: "tool missing", q: condorfake.Answer{Err: errors.New(`exec: "condor_q": executable file not found in $PATH`)}, s: ok,
			kind: htcondor.FailStart, says: "executable file not found"},
		{name: "timeout", q: condorfake.Answer{Hang: true}, s: ok, kind: htcondor.FailTimeout, says: "no answer within",
			ctx: func() (context.Context, context.CancelFunc) { return context.WithTimeout(context.Background(), 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, _ := newSource(t, testConfig(), tt.q, tt.s)
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			d, err := src.Poll(ctx, now, nil)
			if err == nil {
				t.Fatal("poll succeeded")
			}
			if !reflect.DeepEqual(d, demand.Demand{}) {
				t.Errorf("partial demand returned: %+v", d)
			}
			var ce *htcondor.CommandError
			if !errors.As(err, &ce) {
				t.Fatalf("%v is not a *CommandError", err)
			}
			if ce.Kind != tt.kind {
				t.Errorf("kind %s, want %s (%v)", ce.Kind, tt.kind, err)
			}
			if !strings.HasPrefix(ce.Command, "condor_") || !strings.Contains(err.Error(), ce.Command) {
				t.Errorf("error does not name the command: %v", err)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not say %q", err, tt.says)
			}
			if errors.Is(err, htcondor.ErrTruncated) != tt.truncated {
				t.Errorf("errors.Is(ErrTruncated) wrong for %v", err)
			}
			if src.Status().Err == "" {
				t.Error("status does not show the error")
			}
		})
	}
}

// TestPollCollectorUnreachable: condor_status failing is a failed pool
// view, not a failed poll: the queue's demand stands, the VMs' states are
// unknown (no Machines), and PoolErr names the command and the reason.
func TestPollCollectorUnreachable(t *testing.T) {
	// The recorded failure of another tool (condor_off on an unknown
	// name): what a collector that cannot be found looks like.
	src, _ := newSource(t, testConfig(), answer(rec(t, "10_condor_q-json_all-states")), answer(rec(t, "43_condor_off_NO-SUCH-NAME")))
	d, err := src.Poll(context.Background(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.PoolErr, "condor_status") || !strings.Contains(d.PoolErr, "Can't find address") || d.Machines != nil {
		t.Errorf("pool error %q, machines %v", d.PoolErr, d.Machines)
	}
	if len(d.Shapes) == 0 || !d.Fresh() {
		t.Errorf("demand lost with the pool view: %+v", d)
	}
	if st := src.Status(); st.PoolErr == "" {
		t.Errorf("status does not show the pool error: %+v", st)
	}
}

// TestPollKeepsLastGoodStatus checks that a failed poll leaves the last good
// poll's shapes on the status page, with the error.
func TestPollKeepsLastGoodStatus(t *testing.T) {
	src, fake := newSource(t, testConfig(), answer(rec(t, "11_condor_q-json_idle-only")), answer(rec(t, "00_condor_status-json_NO-MATCH")))
	if _, err := src.Poll(context.Background(), now, nil); err != nil {
		t.Fatal(err)
	}
	fake.Set(src.QueueCommand("").String(), condorfake.Answer{Recording: condorfake.Recording{ExitCode: 1, Stderr: []byte("ERROR: boom")}})
	if _, err := src.Poll(context.Background(), now.Add(time.Minute), nil); err == nil {
		t.Fatal("second poll succeeded")
	}
	st := src.Status()
	if len(st.Shapes) != 3 || !st.TakenAt.Equal(now) || !strings.Contains(st.Err, "boom") {
		t.Errorf("status %+v", st)
	}
}

// TestMachines maps the recorded slots of two startds to Canopy VMs.
func TestMachines(t *testing.T) {
	vms := map[string]string{"vm": "canopy-a", "worker1@vm": "canopy-b"}
	queue := answer(rec(t, "10_condor_q-json_all-states"))
	tests := []struct {
		name  string
		slots string
		pool  []demand.PoolVM
		want  map[string]demand.Machine
		check func(t *testing.T, ms []htcondor.MachineInfo)
	}{
		{name: "two startds, both running jobs", slots: "40_condor_status-json_two-startds",
			want: map[string]demand.Machine{
				"canopy-a": {VMName: "canopy-a", State: demand.MachineBusy, RunningJobs: 2, JobsStarted: 6, FreeCpus: 2, FreeMemoryMiB: 3072},
				"canopy-b": {VMName: "canopy-b", State: demand.MachineBusy, RunningJobs: 1, JobsStarted: 1},
			},
			check: func(t *testing.T, ms []htcondor.MachineInfo) {
				a, b := ms[0], ms[1]
				// canopy-a has 2 cpus and 3072 MiB unclaimed, and idle jobs
				// 5.0/5.1 (centos7, 1 cpu, 128 MiB) match it.
				if !a.TakesIdle || a.FreeCpus != 2 || a.FreeMemoryMiB != 3072 || a.Startd != "vm" || a.VMType != "centos7" {
					t.Errorf("canopy-a %+v", a)
				}
				// canopy-b's partitionable slot has nothing left.
				if b.TakesIdle || b.FreeCpus != 0 || b.Startd != "worker1@vm" || b.Site != "site1" || b.VMID != "id-canopy-b" {
					t.Errorf("canopy-b %+v", b)
				}
				if a.RegisteredAt.Unix() != 1795357332 || a.LastHeardFrom.Unix() != 1795357561 {
					t.Errorf("canopy-a times %v %v", a.RegisteredAt, a.LastHeardFrom)
				}
			}},
		{name: "worker draining (condor_drain)", slots: "41_condor_status-json_worker1-draining",
			want: map[string]demand.Machine{
				"canopy-b": {VMName: "canopy-b", State: demand.MachineDraining, RunningJobs: 1, JobsStarted: 1, IdleSince: now},
			},
			check: func(t *testing.T, ms []htcondor.MachineInfo) {
				if ms[0].FreeCpus != 0 || ms[0].TakesIdle {
					t.Errorf("a draining VM counts as capacity: %+v", ms[0])
				}
			}},
		{name: "hub ordered retirement", slots: "40_condor_status-json_two-startds", pool: []demand.PoolVM{{Name: "canopy-a", Retiring: true}},
			want: map[string]demand.Machine{
				"canopy-a": {VMName: "canopy-a", State: demand.MachineDraining, RunningJobs: 2, JobsStarted: 6, IdleSince: now},
				"canopy-b": {VMName: "canopy-b", State: demand.MachineBusy, RunningJobs: 1, JobsStarted: 1},
			},
			check: func(t *testing.T, ms []htcondor.MachineInfo) {
				if ms[0].FreeCpus != 0 || ms[0].TakesIdle {
					t.Errorf("a retiring VM counts as capacity: %+v", ms[0])
				}
			}},
		{name: "idle VM that never ran a job", slots: "01_condor_status-json_idle-partitionable-slot",
			want: map[string]demand.Machine{
				"canopy-a": {VMName: "canopy-a", State: demand.MachineIdle, IdleSince: time.Unix(1795357332, 0).UTC(), FreeCpus: 4, FreeMemoryMiB: 4096},
			}},
		{name: "startd gone (after peaceful shutdown)", slots: "51_condor_status-json_worker1_gone", want: map[string]demand.Machine{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, _ := newSource(t, testConfig(), queue, answer(withVMNames(t, rec(t, tt.slots), vms)))
			d, err := src.Poll(context.Background(), now, tt.pool)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Machines, tt.want) {
				t.Errorf("machines:\n got %+v\nwant %+v", d.Machines, tt.want)
			}
			if tt.check != nil {
				tt.check(t, src.Status().Machines)
			}
		})
	}
}

// TestIdleSince follows one VM across polls: idle since registration, busy,
// then idle again since the poll that saw it idle.
func TestIdleSince(t *testing.T) {
	vms := map[string]string{"vm": "canopy-a"}
	src, fake := newSource(t, testConfig(), answer(rec(t, "00_condor_q-json_EMPTY-QUEUE")),
		answer(withVMNames(t, rec(t, "01_condor_status-json_idle-partitionable-slot"), vms)))
	steps := []struct {
		slots string
		state demand.MachineState
		idle  time.Time
	}{
		{"01_condor_status-json_idle-partitionable-slot", demand.MachineIdle, time.Unix(1795357332, 0).UTC()},
		{"20_condor_status-json_partitionable+4dynamic", demand.MachineBusy, time.Time{}},
		// The partitionable slot alone, having started 4 jobs: idle again.
		{"22_condor_status-json_partitionable-only", demand.MachineIdle, now.Add(2 * time.Minute)},
		{"22_condor_status-json_partitionable-only", demand.MachineIdle, now.Add(2 * time.Minute)},
	}
	for i, st := range steps {
		fake.Set(src.SlotsCommand().String(), answer(withVMNames(t, rec(t, st.slots), vms)))
		d, err := src.Poll(context.Background(), now.Add(time.Duration(i)*time.Minute), nil)
		if err != nil {
			t.Fatal(err)
		}
		m := d.Machines["canopy-a"]
		if m.State != st.state || !m.IdleSince.Equal(st.idle) {
			t.Errorf("step %d (%s): %+v, want %s since %v", i, st.slots, m, st.state, st.idle)
		}
	}
}

// TestInvalidate checks the condor_advertise commands and their ads, and
// that a VM under manual control is never touched.
func TestInvalidate(t *testing.T) {
	cfg := testConfig()
	cfg.Pool = "cm.example.org"
	src, fake := newSource(t, cfg, answer(rec(t, "00_condor_q-json_EMPTY-QUEUE")),
		answer(withVMNames(t, rec(t, "40_condor_status-json_two-startds"), map[string]string{"worker1@vm": "canopy-b"})))
	src.Manual = func(vm string) bool { return vm == "canopy-held" }
	// condor_advertise prints nothing when it succeeds (not recorded).
	okAnswer := condorfake.Answer{}
	cmds := src.InvalidateCommands("canopy-b", "worker1@vm")
	for _, c := range cmds {
		fake.Set(c.String(), okAnswer)
	}
	if _, err := src.Poll(context.Background(), now, nil); err != nil {
		t.Fatal(err)
	}
	if err := src.Invalidate(context.Background(), "canopy-b"); err != nil {
		t.Fatal(err)
	}
	var got []condorfake.Call
	for _, c := range fake.Calls() {
		if strings.HasPrefix(c.Command, "condor_advertise") {
			got = append(got, c)
		}
	}
	want := []condorfake.Call{
		{Command: "condor_advertise -pool cm.example.org INVALIDATE_STARTD_ADS -",
			Stdin: "MyType = \"Query\"\nTargetType = \"Machine\"\nRequirements = CanopyVMName =?= \"canopy-b\"\n"},
		{Command: "condor_advertise -pool cm.example.org INVALIDATE_STARTD_ADS -",
			Stdin: "MyType = \"Query\"\nTargetType = \"StartD\"\nRequirements = (Name =?= \"worker1@vm\") || (CanopyVMName =?= \"canopy-b\")\n"},
		{Command: "condor_advertise -pool cm.example.org INVALIDATE_MASTER_ADS -",
			Stdin: "MyType = \"Query\"\nTargetType = \"DaemonMaster\"\nRequirements = (Name =?= \"worker1@vm\") || (CanopyVMName =?= \"canopy-b\")\n"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n got %q\nwant %q", got, want)
	}

	n := len(fake.Calls())
	if err := src.Invalidate(context.Background(), "canopy-held"); !errors.Is(err, htcondor.ErrManual) {
		t.Errorf("manual VM: %v", err)
	}
	if err := src.Invalidate(context.Background(), `bad" || true || "`); err == nil {
		t.Error("a name that would inject ClassAd text was accepted")
	}
	if len(fake.Calls()) != n {
		t.Errorf("commands run for refused VMs: %v", fake.Calls()[n:])
	}

	// A failing collector: the error names the command.
	for _, c := range src.InvalidateCommands("canopy-c", "") {
		fake.Set(c.String(), condorfake.Answer{Recording: condorfake.Recording{ExitCode: 1,
			Stderr: []byte("ERROR: Failed to send invalidation to collector\n")}})
	}
	err := src.Invalidate(context.Background(), "canopy-c")
	var ce *htcondor.CommandError
	if !errors.As(err, &ce) || ce.Kind != htcondor.FailExit || !strings.Contains(err.Error(), "INVALIDATE_STARTD_ADS") {
		t.Errorf("failing collector: %v", err)
	}
}

// TestMatcher checks the function the planner calls to test a flavor.
func TestMatcher(t *testing.T) {
	src, _ := newSource(t, testConfig(), answer(rec(t, "10_condor_q-json_all-states")), answer(rec(t, "00_condor_status-json_NO-MATCH")))
	if src.Matcher() != nil {
		t.Fatal("a matcher before the first poll")
	}
	d, err := src.Poll(context.Background(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := src.Matcher()
	var ubuntu planner.Shape
	for _, sh := range d.Shapes {
		if sh.VMType == "ubuntu22" {
			ubuntu = sh
		}
	}
	tests := []struct {
		cpus, mem int
		disk      int64
		want      bool
	}{
		{2, 2048, 4194304, true},
		{4, 8192, 41943040, true},
		{1, 2048, 4194304, false}, // RequestCpus 2
		{2, 1024, 4194304, false}, // Requirements: TARGET.Memory >= 2048
		{2, 2048, 1024, false},    // RequestDisk
	}
	for _, tt := range tests {
		if got := m.Matches(ubuntu, tt.cpus, tt.mem, tt.disk); got != tt.want {
			t.Errorf("Matches(%d cpus, %d MiB, %d KiB) = %v, want %v", tt.cpus, tt.mem, tt.disk, got, tt.want)
		}
	}
	other := ubuntu
	other.VMType = "nosuchtype"
	if m.Matches(other, 8, 8192, 1<<30) {
		t.Error("an unknown VM type matches")
	}
}

// TestConfigValidate checks defaults and the errors Validate reports.
func TestConfigValidate(t *testing.T) {
	c := testConfig().WithDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.DefaultVMType != "centos7" || c.CommandTimeout != time.Minute || c.Attributes.VMName != "CanopyVMName" ||
		!reflect.DeepEqual(c.GroupAttributes, []string{"CanopyGroup", "AcctGroup", "AccountingGroup", "Owner"}) {
		t.Errorf("defaults %+v", c)
	}
	tests := []struct {
		name   string
		modify func(*htcondor.Config)
		says   string
	}{
		{"no VM type", func(c *htcondor.Config) { c.VMTypes = nil }, "at least one VM type"},
		{"bad VM type name", func(c *htcondor.Config) { c.VMTypes[0].Name = "a b" }, "not a VM type name"},
		{"duplicate VM type", func(c *htcondor.Config) { c.VMTypes[1].Name = "centos7" }, "listed twice"},
		{"unknown default", func(c *htcondor.Config) { c.DefaultVMType = "debian" }, "not one of vm_types"},
		{"bad expression", func(c *htcondor.Config) { c.MachineAd["Start"] = "TARGET.x &&" }, "machine_ad.Start"},
		{"bad attribute name", func(c *htcondor.Config) { c.VMTypes[0].Attributes = map[string]string{"a-b": "1"} }, "not an attribute name"},
		{"bad schedd", func(c *htcondor.Config) { c.Schedds = []string{"a b"} }, "not a schedd name"},
		{"short timeout", func(c *htcondor.Config) { c.CommandTimeout = time.Millisecond }, "below 1s"},
		{"relative bin dir", func(c *htcondor.Config) { c.BinDir = "bin" }, "absolute"},
		{"bad group attribute", func(c *htcondor.Config) { c.GroupAttributes = []string{"My Group"} }, "group_attributes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.modify(&c)
			err := c.WithDefaults().Validate()
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("got %v, want an error saying %q", err, tt.says)
			}
			if _, err := htcondor.New(c, condorfake.New(), quietLog()); err == nil {
				t.Error("New accepted the config")
			}
		})
	}
}
