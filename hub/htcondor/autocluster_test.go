package htcondor_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/hub/htcondor/condorfake"
)

// recordedPoolConfig is the hub config the 80_* recordings were made with
// (TestLiveAutocluster): the test pool's collector and two VM types. The
// Source it makes runs exactly the recorded command lines.
func recordedPoolConfig(query string) htcondor.Config {
	return htcondor.Config{Pool: "127.0.0.1:29618", DemandQuery: query,
		VMTypes: []htcondor.VMTypeConfig{{Name: "el9"}, {Name: "el8"}},
		// The recorded jobs require it (they stay off other workers).
		MachineAd: map[string]string{"CanopyTestFence": `"canopy-live-autocluster"`}}
}

// pollRecorded polls a Source over recordings answering their own command
// lines.
func pollRecorded(t *testing.T, cfg htcondor.Config, names ...string) (htcondor.Status, *condorfake.Replayer) {
	t.Helper()
	var recs []condorfake.Recording
	for _, n := range names {
		recs = append(recs, rec(t, n))
	}
	fake := condorfake.New(recs...)
	src, err := htcondor.New(cfg, fake, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	d, err := src.Poll(context.Background(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Fresh() {
		t.Fatalf("stale: %v", d.Stale())
	}
	return src.Status(), fake
}

// TestAutoclusterMatchesJobs: the recorded queue read by the autocluster
// query (grouped by the schedd) and job by job gives the same shapes and
// counts.
func TestAutoclusterMatchesJobs(t *testing.T) {
	auto, fake := pollRecorded(t, recordedPoolConfig(htcondor.QueryAutocluster),
		"80_live_condor_q-group-by", "80_live_condor_status-json_slots")
	jobs, _ := pollRecorded(t, recordedPoolConfig(htcondor.QueryJobs),
		"80_live_condor_q-json_jobs", "80_live_condor_status-json_slots")
	var cmds []string
	for _, c := range fake.Calls() {
		cmds = append(cmds, c.Command)
	}
	if len(cmds) != 2 || !strings.Contains(cmds[0]+cmds[1], " -group-by ") {
		t.Errorf("autocluster source ran %q", cmds)
	}
	if !reflect.DeepEqual(auto.Shapes, jobs.Shapes) {
		t.Errorf("shapes differ:\nautocluster %+v\njobs        %+v", auto.Shapes, jobs.Shapes)
	}
	if !reflect.DeepEqual(auto.Unmatchable, jobs.Unmatchable) {
		t.Errorf("unmatchable differ:\nautocluster %+v\njobs        %+v", auto.Unmatchable, jobs.Unmatchable)
	}
	type counts struct{ idle, running int }
	got := map[string]counts{}
	for _, sh := range auto.Shapes {
		got[sh.Group+"/"+sh.VMType] = counts{got[sh.Group+"/"+sh.VMType].idle + sh.Idle, got[sh.Group+"/"+sh.VMType].running + sh.Running}
	}
	want := map[string]counts{"atlas/el9": {5 + 2, 2}, "cms/el9": {3, 0}, "lhcb/el9": {3, 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("counts by group %v, want %v", got, want)
	}
	if len(auto.Unmatchable) != 1 || auto.Unmatchable[0].Idle != 2 || auto.Unmatchable[0].Example == "" {
		t.Errorf("unmatchable %+v", auto.Unmatchable)
	}
	s := auto.Schedds[0]
	if s.Query != htcondor.QueryAutocluster || s.Groups != 6 || s.Idle != 15 || s.Running != 2 || s.QueryNote != "" {
		t.Errorf("schedd status %+v", s)
	}
	if j := jobs.Schedds[0]; j.Query != htcondor.QueryJobs || j.Idle != 15 || j.Running != 2 {
		t.Errorf("jobs schedd status %+v", j)
	}
}

// TestDefaultAutoclustersAreNotDemand documents, on recordings, why the
// hub does not read the schedd's default autoclusters: they hold only the
// jobs the schedd has clustered so far (none before it has negotiated, as
// in a pool with no worker, Canopy's starting point), a cluster's JobCount
// counts its jobs whatever their status and its ad does not say which, and
// they group by the negotiator's significant attributes, not Canopy's; the
// grouping query sees the jobs as they are.
func TestDefaultAutoclustersAreNotDemand(t *testing.T) {
	sum := func(name string) int {
		var ads []map[string]any
		decodeJSON(t, rec(t, name).Stdout, &ads)
		n := 0
		for _, ad := range ads {
			n += int(ad["JobCount"].(float64))
		}
		return n
	}
	// 80_*: the queue holds 15 idle, 2 running and 2 held jobs of the test,
	// and a removed one left from an earlier run. The default clusters
	// count 16 jobs: the removed one and the 2 running ones among them,
	// looking like idle ones, while 4 jobs are in no cluster yet; VMType
	// is in none of them.
	if got := sum("80_live_condor_q-autocluster_default"); got != 16 {
		t.Errorf("default autoclusters count %d jobs; recorded: 16", got)
	}
	if out := string(rec(t, "80_live_condor_q-autocluster_default").Stdout); strings.Contains(out, "JobStatus") ||
		strings.Contains(out, `"VMType"`) || !strings.Contains(out, `"JobIds": "48.0 48.1"`) {
		t.Errorf("default autocluster ads: %s", out)
	}
	if got := sum("80_live_condor_q-group-by"); got != 15+2 {
		t.Errorf("group rows count %d jobs, want the 15 idle and 2 running", got)
	}
	// 83_*: three jobs, one of them held: the clusters count 3 jobs and
	// their ads say nothing of status, nor of CanopyGroup.
	if got := sum("83_live_condor_q-autocluster_counts-a-held-job"); got != 3 {
		t.Errorf("default autoclusters count %d jobs, want all 3, the held one too", got)
	}
	if out := string(rec(t, "83_live_condor_q-autocluster_counts-a-held-job").Stdout); strings.Contains(out, "JobStatus") || strings.Contains(out, "CanopyGroup") {
		t.Errorf("default autocluster ads carry JobStatus or CanopyGroup: %s", out)
	}
	if out := rec(t, "81_live_condor_q-autocluster_no-negotiation-yet").Stdout; len(out) != 0 {
		t.Errorf("default autoclusters before negotiation: %q, want nothing", out)
	}
	if got := sum("81_live_condor_q-group-by_no-negotiation-yet"); got != 9 {
		t.Errorf("group rows before negotiation count %d jobs, want the 9 idle", got)
	}
}

// TestAutoclusterFallback: a schedd whose condor_q or schedd cannot group
// is read job by job in the same poll, with the reason in the status and
// the log, and later polls go straight to the job-by-job query.
func TestAutoclusterFallback(t *testing.T) {
	unknownOption := rec(t, "82_live_condor_q-UNKNOWN-OPTION")
	plainAds := rec(t, "80_live_condor_q-json_jobs") // job ads: rows without JobCount
	for _, tt := range []struct {
		name   string
		answer condorfake.Recording
		says   string
	}{
		{"condor_q without -group-by", unknownOption, "does not know -group-by"},
		{"schedd that does not aggregate", plainAds, "no JobCount"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := recordedPoolConfig(htcondor.QueryAutocluster)
			fake := condorfake.New(rec(t, "80_live_condor_q-json_jobs"), rec(t, "80_live_condor_status-json_slots"))
			l, hook := logtest.NewNullLogger()
			src, err := htcondor.New(cfg, fake, logrus.NewEntry(l))
			if err != nil {
				t.Fatal(err)
			}
			fake.Set(src.GroupsCommand("").String(), condorfake.Answer{Recording: tt.answer})
			for poll := range 2 {
				d, err := src.Poll(context.Background(), now.Add(time.Duration(poll)*time.Minute), nil)
				if err != nil || !d.Fresh() {
					t.Fatalf("poll %d: %v (stale %v)", poll, err, d.Stale())
				}
				st := src.Status()
				if s := st.Schedds[0]; s.Query != htcondor.QueryJobs || !strings.Contains(s.QueryNote, tt.says) || s.Idle != 15 || s.Running != 2 {
					t.Errorf("poll %d: schedd status %+v", poll, s)
				}
			}
			var grouped int
			for _, c := range fake.Calls() {
				if strings.Contains(c.Command, " -group-by ") {
					grouped++
				}
			}
			if grouped != 1 {
				t.Errorf("the grouping query ran %d times, want once", grouped)
			}
			warned := 0
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "cannot group") {
					warned++
				}
			}
			if warned != 1 {
				t.Errorf("%d warnings about grouping, want 1", warned)
			}
		})
	}
}

// TestPollStaleSchedd: of two schedds, one fails: the other is read fresh;
// the failed one's last good demand counts until demand_max_age, then is
// dropped; the poll says it is not fresh all along, and fresh after it
// answers again. Every schedd failing fails the poll; condor_status
// failing is a failed pool view.
func TestPollStaleSchedd(t *testing.T) {
	cfg := recordedPoolConfig(htcondor.QueryAutocluster)
	cfg.Schedds = []string{"schedd1.example.org", "schedd2.example.org"}
	cfg.DemandMaxAge = 5 * time.Minute
	fake := condorfake.New()
	src, err := htcondor.New(cfg, fake, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	good := func(schedd string) {
		fake.Set(src.GroupsCommand(schedd).String(), answer(rec(t, "80_live_condor_q-group-by")))
	}
	bad := func(schedd string) {
		fake.Set(src.GroupsCommand(schedd).String(), answer(rec(t, "82_live_condor_q-group-by_NO-SUCH-SCHEDD")))
	}
	slotsOK := answer(rec(t, "80_live_condor_status-json_slots"))
	fake.Set(src.SlotsCommand().String(), slotsOK)
	good("schedd1.example.org")
	good("schedd2.example.org")

	type view struct {
		idle, running int
		stale         []string
		kept          bool
	}
	poll := func(at time.Duration) (view, error) {
		d, err := src.Poll(context.Background(), now.Add(at), nil)
		var v view
		for _, sh := range d.Shapes {
			v.idle += sh.Idle
			v.running += sh.Running
		}
		v.stale = d.Stale()
		if err == nil && (len(d.Schedds) != 2 || d.Schedds[0].Name != "schedd1.example.org" || d.Fresh() != (len(v.stale) == 0)) {
			t.Errorf("Demand.Schedds %+v", d.Schedds)
		}
		for _, s := range src.Status().Schedds {
			v.kept = v.kept || s.Kept
		}
		return v, err
	}
	// The recorded queue has 13 idle jobs in shapes (2 more unmatchable)
	// and 2 running, per schedd.
	steps := []struct {
		name  string
		at    time.Duration
		setup func()
		want  view
	}{
		{"both fresh", 0, func() {}, view{idle: 26, running: 4}},
		{"schedd2 fails: its last good demand is kept", time.Minute, func() { bad("schedd2.example.org") },
			view{idle: 26, running: 4, stale: []string{"schedd2.example.org"}, kept: true}},
		{"still failing at demand_max_age: kept", 5 * time.Minute, func() {},
			view{idle: 26, running: 4, stale: []string{"schedd2.example.org"}, kept: true}},
		{"past demand_max_age: dropped, still stale", 5*time.Minute + time.Second, func() {},
			view{idle: 13, running: 2, stale: []string{"schedd2.example.org"}}},
		{"schedd2 answers again", 6 * time.Minute, func() { good("schedd2.example.org") }, view{idle: 26, running: 4}},
	}
	for _, s := range steps {
		s.setup()
		got, err := poll(s.at)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !reflect.DeepEqual(got, s.want) {
			t.Errorf("%s: %+v, want %+v", s.name, got, s.want)
		}
	}
	st := src.Status()
	if len(st.Schedds) != 2 || st.Schedds[1].Stale || !st.Schedds[1].LastGood.Equal(now.Add(6*time.Minute)) {
		t.Errorf("status after recovery %+v", st.Schedds)
	}

	// A failing schedd's status names the command and the reason.
	bad("schedd2.example.org")
	if _, err := poll(7 * time.Minute); err != nil {
		t.Fatal(err)
	}
	s2 := src.Status().Schedds[1]
	if !s2.Stale || !s2.Kept || !strings.Contains(s2.Err, "Collector has no record") || !strings.Contains(s2.Err, "-name schedd2.example.org") ||
		!s2.FailingSince.Equal(now.Add(7*time.Minute)) || !slices.Equal(src.Status().Stale, []string{"schedd2.example.org"}) {
		t.Errorf("failing schedd status %+v", s2)
	}

	// Both failing: no fresh view of any queue, the poll fails.
	bad("schedd1.example.org")
	if _, err := poll(8 * time.Minute); err == nil {
		t.Error("poll with every schedd failing succeeded")
	}
	// condor_status failing is a failed pool view: the schedds' demand
	// stands, the VMs' states are unknown.
	good("schedd1.example.org")
	good("schedd2.example.org")
	fake.Set(src.SlotsCommand().String(), condorfake.Answer{Err: errors.New("collector gone")})
	d, err := src.Poll(context.Background(), now.Add(9*time.Minute), nil)
	if err != nil || !strings.Contains(d.PoolErr, "collector gone") || d.Machines != nil || len(d.Shapes) == 0 || !d.Fresh() {
		t.Errorf("poll with condor_status failing: %v, pool error %q, machines %v, %d shapes", err, d.PoolErr, d.Machines, len(d.Shapes))
	}
}

func TestConfigDemandQuery(t *testing.T) {
	c := htcondor.Config{VMTypes: []htcondor.VMTypeConfig{{Name: "el9"}}}.WithDefaults()
	if c.DemandQuery != htcondor.QueryAutocluster || c.DemandMaxAge != 5*time.Minute {
		t.Errorf("defaults: %q, %s", c.DemandQuery, c.DemandMaxAge)
	}
	c.DemandQuery = "fast"
	c.DemandMaxAge = -time.Second
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "demand_query") || !strings.Contains(err.Error(), "demand_max_age") {
		t.Errorf("Validate: %v", err)
	}
}

func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
