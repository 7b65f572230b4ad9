package storagemetrics

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/canopy-grid/canopy/protocol"
)

// report loads a report the collector produced from recorded gluster
// outputs (the scenario golden files of package agent/gluster, read as
// data: the report is the protocol.StorageReport the agent sends).
func report(t *testing.T, scenario string) protocol.StorageReport {
	t.Helper()
	b, err := os.ReadFile("../../agent/gluster/testdata/golden/scenarios/" + scenario + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var r protocol.StorageReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestExporter(t *testing.T) {
	tests := []struct {
		name     string
		scenario string
		metrics  []string
		want     string
	}{
		{
			name:     "brick down: volume partial, one worker faulty",
			scenario: "brick-down",
			metrics:  []string{"canopy_gluster_volume_status", "canopy_gluster_bricks_online", "canopy_gluster_bricks", "canopy_gluster_site_status", "canopy_gluster_georep_status"},
			want: `
# HELP canopy_gluster_bricks_online Bricks of the volume whose process is online.
# TYPE canopy_gluster_bricks_online gauge
canopy_gluster_bricks_online{site="s1",volume="geoslave"} 1
canopy_gluster_bricks_online{site="s1",volume="repvol"} 2
# HELP canopy_gluster_bricks Bricks of the volume.
# TYPE canopy_gluster_bricks gauge
canopy_gluster_bricks{site="s1",volume="geoslave"} 1
canopy_gluster_bricks{site="s1",volume="repvol"} 3
# HELP canopy_gluster_georep_status Health of a geo-replication session (0 up, 1 partial, 2 degraded, 3 down, -1 unknown).
# TYPE canopy_gluster_georep_status gauge
canopy_gluster_georep_status{secondary="vm::geoslave",site="s1",volume="repvol"} 2
# HELP canopy_gluster_site_status Overall GlusterFS status of the site (0 up, 1 partial, 2 degraded, 3 down, -1 unknown).
# TYPE canopy_gluster_site_status gauge
canopy_gluster_site_status{site="s1"} 2
# HELP canopy_gluster_volume_status Health of a volume (0 up, 1 partial, 2 degraded, 3 down, -1 unknown).
# TYPE canopy_gluster_volume_status gauge
canopy_gluster_volume_status{site="s1",volume="geoslave"} 0
canopy_gluster_volume_status{site="s1",volume="repvol"} 1
`,
		},
		{
			name:     "pending heals while a brick is down",
			scenario: "pending-brick-down",
			metrics:  []string{"canopy_gluster_heal_pending_entries", "canopy_gluster_split_brain_entries"},
			want: `
# HELP canopy_gluster_heal_pending_entries Entries pending heal (per replica set the highest brick count, summed).
# TYPE canopy_gluster_heal_pending_entries gauge
canopy_gluster_heal_pending_entries{site="s1",volume="geoslave"} 0
canopy_gluster_heal_pending_entries{site="s1",volume="repvol"} 24
# HELP canopy_gluster_split_brain_entries Entries in split-brain.
# TYPE canopy_gluster_split_brain_entries gauge
canopy_gluster_split_brain_entries{site="s1",volume="geoslave"} 0
canopy_gluster_split_brain_entries{site="s1",volume="repvol"} 0
`,
		},
		{
			name:     "split-brain counted, brick status unknown so no brick gauges",
			scenario: "split-brain",
			metrics:  []string{"canopy_gluster_split_brain_entries", "canopy_gluster_bricks_online", "canopy_gluster_quorum_lost"},
			want: `
# HELP canopy_gluster_quorum_lost 1 if a replica set of the volume lost client quorum (writes fail).
# TYPE canopy_gluster_quorum_lost gauge
canopy_gluster_quorum_lost{site="s1",volume="r2vol"} 0
# HELP canopy_gluster_split_brain_entries Entries in split-brain.
# TYPE canopy_gluster_split_brain_entries gauge
canopy_gluster_split_brain_entries{site="s1",volume="r2vol"} 1
`,
		},
		{
			name:     "all workers faulty: state set and no lag",
			scenario: "secondary-stopped-faulty",
			metrics:  []string{"canopy_gluster_georep_lag_seconds", "canopy_gluster_georep_worker_status"},
			want:     workerHeader + workerSet("vm:/srv/gl/b1/repvol", "Faulty") + workerSet("vm:/srv/gl/b2/repvol", "Faulty") + workerSet("vm:/srv/gl/b3/repvol", "Faulty"),
		},
		{
			name:     "checkpoint completed, lag exported",
			scenario: "checkpoint-completed",
			metrics:  []string{"canopy_gluster_georep_lag_seconds", "canopy_gluster_georep_checkpoint_completed"},
			want: `
# HELP canopy_gluster_georep_checkpoint_completed 1 if the session's checkpoint is completed, 0 if not; absent when no checkpoint is set.
# TYPE canopy_gluster_georep_checkpoint_completed gauge
canopy_gluster_georep_checkpoint_completed{secondary="vm::geoslave",site="s1",volume="repvol"} 1
# HELP canopy_gluster_georep_lag_seconds Seconds since the session's Active workers last synced a change (largest); absent when none has.
# TYPE canopy_gluster_georep_lag_seconds gauge
canopy_gluster_georep_lag_seconds{secondary="vm::geoslave",site="s1",volume="repvol"} 224
`,
		},
		{
			name:     "glusterd down",
			scenario: "glusterd-down",
			metrics:  []string{"canopy_gluster_glusterd_up", "canopy_gluster_site_status", "canopy_gluster_collect_errors", "canopy_gluster_volume_status"},
			want: `
# HELP canopy_gluster_collect_errors Gluster commands that failed in the last collection cycle.
# TYPE canopy_gluster_collect_errors gauge
canopy_gluster_collect_errors{site="s1"} 5
# HELP canopy_gluster_glusterd_up 1 if the site's glusterd answered the agent's last collection.
# TYPE canopy_gluster_glusterd_up gauge
canopy_gluster_glusterd_up{site="s1"} 0
# HELP canopy_gluster_site_status Overall GlusterFS status of the site (0 up, 1 partial, 2 degraded, 3 down, -1 unknown).
# TYPE canopy_gluster_site_status gauge
canopy_gluster_site_status{site="s1"} -1
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := NewExporter()
			e.Update("s1", report(t, tc.scenario))
			if err := testutil.CollectAndCompare(e, strings.NewReader(tc.want), tc.metrics...); err != nil {
				t.Error(err)
			}
		})
	}
}

const workerHeader = "# HELP canopy_gluster_georep_worker_status Geo-replication worker state set: 1 for the worker's current status.\n# TYPE canopy_gluster_georep_worker_status gauge\n"

func workerSet(brick, current string) string {
	var b strings.Builder
	for _, s := range WorkerStatuses {
		v := "0"
		if s == current {
			v = "1"
		}
		b.WriteString(`canopy_gluster_georep_worker_status{brick="` + brick + `",secondary="vm::geoslave",site="s1",status="` + s + `",volume="repvol"} ` + v + "\n")
	}
	return b.String()
}

// TestExporterSitesAndLint registers the exporter, checks that sites are
// kept apart and forgotten, and lints the metric names and help.
func TestExporterSitesAndLint(t *testing.T) {
	e := NewExporter()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(e); err != nil {
		t.Fatal(err)
	}
	e.Update("a", report(t, "healthy"))
	e.Update("b", report(t, "two-bricks-down"))
	want := `
# HELP canopy_gluster_site_status Overall GlusterFS status of the site (0 up, 1 partial, 2 degraded, 3 down, -1 unknown).
# TYPE canopy_gluster_site_status gauge
canopy_gluster_site_status{site="a"} 0
canopy_gluster_site_status{site="b"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "canopy_gluster_site_status"); err != nil {
		t.Error(err)
	}
	e.Forget("a")
	if n := testutil.CollectAndCount(e, "canopy_gluster_site_status"); n != 1 {
		t.Errorf("after Forget: %d site series, want 1", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}
