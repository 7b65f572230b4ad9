package hub

import (
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/deploy/config"
)

// TestValidateDurations: durations that cannot be negative (or zero) are
// refused with an error naming the key; those that take a negative value
// for "off" are kept.
func TestValidateDurations(t *testing.T) {
	const base = "tls_dir: /x\nstate_file: /x/hub.db\ndemand: {source: trace, trace: {file: t.yaml}}\n"
	tests := []struct {
		name, yaml string
		want       string // "" means valid
	}{
		{"defaults", "", ""},
		{"negative plan_every", "plan_every: -1s\n", "plan_every -1s is below 100ms"},
		{"negative heartbeat_every", "heartbeat_every: -5s\n", "heartbeat_every is -5s, want a positive duration"},
		{"negative inventory_every", "inventory_every: -30s\n", "inventory_every is -30s"},
		{"negative demand_max_age", "demand_max_age: -1m\n", "demand_max_age is -1m0s"},
		{"negative boot_list_timeout", "boot_list_timeout: -1s\n", "boot_list_timeout is -1s"},
		{"negative startup_grace", "startup_grace: -1s\n", "startup_grace is -1s"},
		{"negative events_max_age", "events_max_age: -1h\n", "events_max_age is -1h0m0s"},
		{"negative keep_alive", "planner: {keep_alive: -1m}\n", "planner.keep_alive is -1m0s, want 0 (the default) or more"},
		{"negative error_delay", "planner: {error_delay: -1s}\n", "planner.error_delay is -1s"},
		{"negative retire_deadline", "planner: {retire_deadline: -1s}\n", "planner.retire_deadline is -1s"},
		{"negative min_keep_alive", "planner: {min_keep_alive: -1s}\n", "planner.min_keep_alive is -1s"},
		{"negative max_lifetime", "planner: {max_lifetime: -1s}\n", "planner.max_lifetime is -1s"},
		{"negative backoff_base", "planner: {backoff_base: -1s}\n", "planner.backoff_base is -1s"},
		{"negative backoff_max", "planner: {backoff_max: -1s}\n", "planner.backoff_max is -1s"},
		{"negative failure_window", "planner: {failure_window: -1s}\n", "planner.failure_window is -1s"},
		{"negative freeze_after", "planner: {freeze_after: -1s}\n", "planner.freeze_after is -1s"},
		{"negative over_quota_deadline", "planner: {over_quota_deadline: -1s}\n", "planner.over_quota_deadline is -1s"},
		{"negative idle_throttle_percent", "planner: {idle_throttle_percent: -10}\n", "planner.idle_throttle_percent -10 is negative"},
		{"come_alive off", "planner: {come_alive: -1s}\n", ""},
		{"job_alive off", "planner: {job_alive: -1s}\n", ""},
		{"unknown_deadline off", "planner: {unknown_deadline: -1s}\n", ""},
		{"idle throttle off", "planner: {idle_throttle_min: -1}\n", ""},
		{"negative group keep_alive", "groups: {atlas: {keep_alive: -1s}}\n", "groups.atlas.keep_alive is -1s"},
		{"group tree", "groups: {atlas: {caps: {cores: 10}}, prod: {parent: atlas, borrow: false}}\n", ""},
		{"unknown parent", "groups: {prod: {parent: atlas}}\n", `groups.prod.parent "atlas" names no configured group`},
		{"self parent", "groups: {prod: {parent: prod}}\n", `groups.prod.parent "prod" makes a cycle`},
		{"parent cycle", "groups: {a: {parent: b}, b: {parent: a}}\n", `groups.a.parent "b" makes a cycle`},
		{"hs06 ratings", "sites: {west: {hs06_default: 10.5, hs06_per_core: {c8: 12}}}\ngroups: {atlas: {caps: {hs06: 1000}}}\nplanner: {share_in: hs06}\n", ""},
		{"negative hs06 rating", "sites: {west: {hs06_per_core: {c8: -3}}}\n", "sites.west.hs06_per_core.c8 -3: want a rating above 0"},
		{"huge hs06 default", "sites: {west: {hs06_default: 1e9}}\n", "sites.west.hs06_default 1e+09: want a rating above 0"},
		{"preemptible", "sites: {spot: {preemptible: true}, west: {preemptible_flavors: [c8.spot]}}\ngroups: {sim: {preemptible: true}}\n", ""},
		{"negative hold_max", "planner: {hold_max: -1h}\n", "planner.hold_max is -1h0m0s"},
		{"bad share_in", "planner: {share_in: furlongs}\n", `planner.share_in "furlongs": want cores or hs06`},
		{"borrow on a top group", "groups: {atlas: {borrow: true}}\n", "groups.atlas.borrow is set but the group has no parent"},
		{"negative site keep_alive", "sites: {west: {keep_alive: -1s}}\n", "sites.west.keep_alive is -1s"},
		{"negative site max_lifetime", "sites: {west: {max_lifetime: -2s}}\n", "sites.west.max_lifetime is -2s"},
		{"admin listener", "admin_listen: 0.0.0.0:8443\n", ""},
		{"bad admin listener", "admin_listen: nowhere\n", `admin_listen "nowhere"`},
		{"admin on http with a listener", "admin_listen: :8443\nadmin_on_http: true\n", "drop admin_on_http"},
		{"negative time_scale", "demand: {source: trace, trace: {file: t.yaml, time_scale: -2}}\n", "demand.trace.time_scale -2 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := base
			if strings.HasPrefix(tt.yaml, "demand:") {
				src = strings.Replace(base, "demand: {source: trace, trace: {file: t.yaml}}\n", "", 1)
			}
			var cfg Config
			if err := config.Decode("hub.yaml", []byte(src+tt.yaml), &cfg); err != nil {
				t.Fatal(err)
			}
			err := cfg.WithDefaults().Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// TestPlannerGroup: the tree keys reach the planner; borrow defaults to
// true and only an explicit false forbids borrowing.
func TestPlannerGroup(t *testing.T) {
	tests := []struct {
		yaml         string
		parent       string
		wantNoBorrow bool
	}{
		{"{parent: atlas}", "atlas", false},
		{"{parent: atlas, borrow: true}", "atlas", false},
		{"{parent: atlas, borrow: false}", "atlas", true},
		{"{}", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			var g GroupConfig
			if err := config.Decode("hub.yaml", []byte(tt.yaml), &g); err != nil {
				t.Fatal(err)
			}
			pg := g.PlannerGroup("prod")
			if pg.Name != "prod" || pg.Parent != tt.parent || pg.NoBorrow != tt.wantNoBorrow {
				t.Fatalf("planner group = %+v, want parent %q, NoBorrow %v", pg, tt.parent, tt.wantNoBorrow)
			}
		})
	}
}

// TestPlannerGroupPreemptible: a group's preemptible default reaches the
// planner.
func TestPlannerGroupPreemptible(t *testing.T) {
	for _, want := range []bool{false, true} {
		if got := (GroupConfig{Preemptible: want}).PlannerGroup("sim").Preemptible; got != want {
			t.Errorf("preemptible %v became %v", want, got)
		}
	}
}
