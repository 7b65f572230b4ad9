package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/planner"
)

const minimal = `sim duration=1h
flavor name=c1 cpus=1 memory_mib=2048
cloud site=west
`

func TestParseTrace(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader(`
# comment
sim start=2025-01-01T00:00:00Z duration=1d12h step=30s seed=42 drain=0
config keep_alive=20m max_boots_per_cloud=5 fairness=share retire_order=oldest come_alive=-1s unknown_deadline=-1s
flavor name=c1 cpus=1 memory_mib=2048 disk_gib=10   # trailing comment
flavor name=c8 cpus=8 memory_mib=16384
cloud site=west priority=2 cores=100 caps_vms=10 soft_cores=50 foreign_cores=4 boot=1m..2m fail=0.5 flavors=c8
cloud site=uni count=3 instances=7
group name=astro share=3 vms=9 clouds=west,eu
vmtype name=multi jobs_per_vm=4
alias name=eu sites=uni-*
jobs at=1h every=30m until=3h count=10 group=astro cpus=2 memory_mib=100 run=5m..10m clouds=eu
event at=2h cloud=uni* paused=true
event at=3h group=astro vms=2
event at=4h pool_outage=5m
`))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Duration != 36*time.Hour || tr.Step != 30*time.Second || tr.Seed != 42 || tr.Drain != 0 || tr.Start.Year() != 2025 {
		t.Errorf("sim = %+v", tr)
	}
	if tr.Config.KeepAlive != 20*time.Minute || tr.Config.MaxBootsPerCloud != 5 || tr.Config.Fairness != planner.FairShare ||
		tr.Config.RetireOrder != planner.RetireOldest || tr.Config.ComeAlive != -time.Second || tr.Config.ErrorDelay != planner.DefaultErrorDelay ||
		tr.Config.UnknownDeadline != -time.Second || tr.BootListTimeout != 10*time.Minute {
		t.Errorf("config = %+v", tr.Config)
	}
	if len(tr.Clouds) != 4 || tr.Clouds[1].Site != "uni-001" || tr.Clouds[3].Site != "uni-003" || tr.Clouds[3].Limits.MaxInstances != 7 {
		t.Errorf("clouds = %+v", tr.Clouds)
	}
	w := tr.Clouds[0]
	if w.Priority != 2 || w.Limits.MaxCores != 100 || w.Limits.MaxRAMMiB != -1 || w.Caps.VMs != 10 || w.SoftQuota.Cores != 50 ||
		w.Foreign.Cores != 4 || w.Boot != (Range{time.Minute, 2 * time.Minute}) || w.FailRate != 0.5 || w.Flavors[0] != "c8" {
		t.Errorf("west = %+v", w)
	}
	if got := tr.Aliases["eu"]; strings.Join(got, ",") != "uni-001,uni-002,uni-003" {
		t.Errorf("alias eu = %v", got)
	}
	j := tr.Jobs[0]
	if j.At != time.Hour || j.Every != 30*time.Minute || j.Until != 3*time.Hour || j.Count != 10 || j.Shape.Cpus != 2 ||
		j.Shape.VMType != "default" || j.Run != (Range{5 * time.Minute, 10 * time.Minute}) {
		t.Errorf("jobs = %+v", j)
	}
	if len(tr.Events) != 3 || tr.Events[0].Cloud != "uni*" || tr.Events[1].Group != "astro" || tr.Events[2].PoolOutage != 5*time.Minute {
		t.Errorf("events = %+v", tr.Events)
	}
}

// TestParseTraceResources: the quota tree and HS06 keys reach the planner's
// settings.
func TestParseTraceResources(t *testing.T) {
	tr, err := ParseTrace(strings.NewReader(minimal + `config share_in=hs06
flavor name=c8 cpus=8 memory_mib=16384 hs06_per_core=12.5
group name=atlas hs06=1000
group name=prod parent=atlas borrow=false vms=5 preemptible=true
cloud site=spot preemptible=true preemptible_flavors=c8
jobs group=prod min_hs06_per_core=10 count=1 preemptible=true
event at=1h group=prod borrow=true
`))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Config.ShareIn != planner.ShareHS06 || tr.HS06PerCore["c8"] != 12.5 || len(tr.HS06PerCore) != 1 {
		t.Errorf("share_in %q, ratings %v", tr.Config.ShareIn, tr.HS06PerCore)
	}
	if g := tr.Groups[0]; g.Name != "atlas" || g.Caps.HS06 != 1000 || g.Parent != "" {
		t.Errorf("atlas = %+v", g)
	}
	if g := tr.Groups[1]; g.Parent != "atlas" || !g.NoBorrow || g.Caps.VMs != 5 {
		t.Errorf("prod = %+v", g)
	}
	if c := tr.Clouds[1]; !c.Preemptible || len(c.PreemptibleFlavors) != 1 || !tr.Groups[1].Preemptible {
		t.Errorf("spot = %+v, prod = %+v", c, tr.Groups[1])
	}
	if j := tr.Jobs[0]; j.Shape.MinHS06PerCore != 10 || !j.Shape.Preemptible {
		t.Errorf("jobs = %+v", j.Shape)
	}
}

func TestParseTraceErrors(t *testing.T) {
	for _, tc := range []struct {
		name, trace, want string
	}{
		{"unknown keyword", minimal + "clowd site=x\n", `line 4: clowd: unknown keyword "clowd"`},
		{"unknown key", minimal + "cloud site=x coress=1\n", `line 4: cloud: coress="1": unknown key`},
		{"not key=value", minimal + "cloud site\n", `field "site" is not key=value`},
		{"key twice", minimal + "cloud site=a site=b\n", `key "site" given twice`},
		{"bad duration", "sim duration=1x\n", `duration="1x": bad duration`},
		{"negative duration", "sim duration=-1h\n", "negative duration"},
		{"bad range", minimal + "cloud site=x boot=5m..1m\n", "high below low"},
		{"bad fraction", minimal + "cloud site=x fail=1.5\n", "fraction"},
		{"NaN fraction", minimal + "cloud site=x fail=NaN\n", "fraction"},
		{"bad int", minimal + "cloud site=x cores=ten\n", "not an integer"},
		{"int out of range", minimal + "cloud site=x caps_vms=-3\n", "out of range"},
		{"bad name", minimal + "cloud site=a;b\n", `character ';' not allowed`},
		{"site missing", minimal + "cloud priority=1\n", "site missing"},
		{"duplicate cloud", minimal + "cloud site=west\n", "cloud west defined twice"},
		{"duplicate expanded cloud", minimal + "cloud site=u count=2\ncloud site=u-002\n", "cloud u-002 defined twice"},
		{"too many clouds", minimal + "cloud site=u count=20000\n", "out of range"},
		{"unknown flavor", minimal + "cloud site=x flavors=c9\n", "unknown flavor c9"},
		{"no duration", "flavor name=c1\ncloud site=w\n", "sim duration missing"},
		{"no cloud", "sim duration=1h\nflavor name=c1\n", "no cloud"},
		{"second sim", minimal + "sim duration=2h\n", "second sim line"},
		{"too many steps", "sim duration=3000d step=1s\nflavor name=c1\ncloud site=w\n", "steps, more than"},
		{"tiny step", "sim duration=1h step=1ms\nflavor name=c1\ncloud site=w\n", "shorter than 1s"},
		{"event without target", minimal + "event at=1h paused=true\n", "exactly one of cloud= and group="},
		{"event sets nothing", minimal + "event at=1h cloud=west\n", "nothing to set"},
		{"event bad key", minimal + "event at=1h cloud=west site=x\n", "cannot be changed"},
		{"event unknown cloud", minimal + "event at=1h cloud=mars paused=true\n", "unknown cloud mars"},
		{"event unknown group", minimal + "event at=1h group=g vms=1\n", "unknown group g"},
		{"pool outage with a cloud", minimal + "event at=1h cloud=west pool_outage=5m\n", "pool_outage goes alone"},
		{"pool outage of nothing", minimal + "event at=1h pool_outage=0\n", "must be positive"},
		{"jobs without group", minimal + "jobs count=1\n", "group missing"},
		{"jobs until before at", minimal + "jobs group=g at=2h every=1h until=1h\n", "until before at"},
		{"jobs zero run", minimal + "jobs group=g run=0\n", "run time must be positive"},
		{"jobs unknown cloud", minimal + "jobs group=g clouds=mars\n", "unknown cloud or alias mars"},
		{"group unknown cloud", minimal + "group name=g clouds=mars\n", "group g: unknown cloud or alias mars"},
		{"too many arrivals", minimal + "jobs group=g every=1s until=3650d\n", "arrivals"},
		{"bad fairness", minimal + "config fairness=random\n", "want rotate or share"},
		{"bad share_in", minimal + "config share_in=watts\n", "want cores or hs06"},
		{"bad rating", minimal + "flavor name=c2 hs06_per_core=0\n", "want an HS06 rating per core above 0"},
		{"NaN rating", minimal + "flavor name=c2 hs06_per_core=NaN\n", "want an HS06 rating per core above 0"},
		{"bad job rating", minimal + "jobs group=g min_hs06_per_core=-1\n", "want an HS06 rating per core above 0"},
		{"unknown parent", minimal + "group name=g parent=top\n", "group g: parent top is no group"},
		{"bad borrow", minimal + "group name=top\ngroup name=g parent=top borrow=maybe\n", `borrow="maybe"`},
		{"reclaim on a cloud line", minimal + "cloud site=x reclaim=0.5\n", "an event key"},
		{"bad reclaim", minimal + "event at=1h cloud=west reclaim=2\n", "fraction"},
		{"bad preempt_max", minimal + "config preempt_max=-5\n", "out of range"},
		{"event sets parent", minimal + "group name=g\ngroup name=h\nevent at=1h group=g parent=h\n", "cannot be changed"},
		{"long line", minimal + "cloud site=" + strings.Repeat("a", 70000) + "\n", "token too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTrace(strings.NewReader(tc.trace))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseDur(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "90s": 90 * time.Second, "1d": 24 * time.Hour, "1d12h": 36 * time.Hour, "2h30m": 150 * time.Minute,
	} {
		got, err := parseDur(in)
		if err != nil || got != want {
			t.Errorf("parseDur(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1d-1h", "x", "1.5d", "99999999d", "-"} {
		if _, err := parseDur(in); err == nil {
			t.Errorf("parseDur(%q) accepted", in)
		}
	}
}

func FuzzParseTrace(f *testing.F) {
	f.Add(minimal)
	f.Add(minimal + "jobs at=0 count=3 group=g run=1m..2m\nevent at=10m cloud=west paused=true\n")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ParseTrace(strings.NewReader(in))
		if err != nil {
			return
		}
		if tr.Duration <= 0 || tr.Step < time.Second || len(tr.Clouds) == 0 {
			t.Fatalf("accepted an invalid trace: %+v", tr)
		}
		// A short, small run of whatever parsed must not panic either.
		jobs := 0
		for _, j := range tr.Jobs {
			jobs += j.Count * (1 + int(min(tr.Duration, j.Until)/max(j.Every, time.Second)))
		}
		if tr.Duration/tr.Step <= 120 && len(tr.Clouds) <= 20 && jobs <= 10000 {
			if _, err := Run(tr, Options{NoDrain: true}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
