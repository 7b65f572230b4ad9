package htcondor_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/hub/htcondor/condorfake"
	"github.com/canopy-grid/canopy/hub/planner"
)

// withJobAttrs returns the recorded queue with attributes set on the job
// ads by id ("5.1"), as condor_submit's +Attr lines put them there.
func withJobAttrs(t *testing.T, r condorfake.Recording, set map[string]map[string]any) condorfake.Recording {
	t.Helper()
	var ads []map[string]any
	if err := json.Unmarshal(r.Stdout, &ads); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, ad := range ads {
		id, _ := json.Marshal([]any{ad["ClusterId"], ad["ProcId"]})
		for k, attrs := range set {
			if string(id) != k {
				continue
			}
			seen++
			for name, v := range attrs {
				ad[name] = v
			}
		}
	}
	if seen != len(set) {
		t.Fatalf("set attributes on %d jobs, want %d", seen, len(set))
	}
	out, err := json.Marshal(ads)
	if err != nil {
		t.Fatal(err)
	}
	r.Stdout = out
	r.Name += " (with job attributes)"
	return r
}

// TestPollJobAttributes: +VMInstanceType, +VMKeepAlive and +VMMaxLifetime
// are part of the shapes the planner gets (Flavor, KeepAlive,
// MaxLifetime), so that jobs asking differently are never merged into one
// shape and their VMs are booted and retired as they ask.
func TestPollJobAttributes(t *testing.T) {
	// The recorded idle queue: 2.0 (ubuntu22, 2 cpus), 4.0 (centos7, 8
	// cpus), 5.0 and 5.1 (centos7, 1 cpu, one shape).
	small := func(idle int, mod func(*planner.Shape)) planner.Shape {
		sh := planner.Shape{Group: "alice", VMType: "centos7", Cpus: 1, MemoryMiB: 128, DiskKiB: 10240, Idle: idle}
		mod(&sh)
		return sh
	}
	rest := []planner.Shape{
		{Group: "alice", VMType: "centos7", Cpus: 8, MemoryMiB: 65536, DiskKiB: 104857600, Idle: 1},
		{Group: "alice", VMType: "ubuntu22", Cpus: 2, MemoryMiB: 2048, DiskKiB: 4194304, Idle: 1},
	}
	none := func(*planner.Shape) {}
	tests := []struct {
		name string
		set  map[string]map[string]any
		want []planner.Shape
	}{
		{name: "no attributes: one shape", want: append([]planner.Shape{small(2, none)}, rest...)},
		{name: "same attributes: still one shape",
			set: map[string]map[string]any{
				"[5,0]": {"VMInstanceType": "c2m4", "VMKeepAlive": 5, "VMMaxLifetime": "2h"},
				"[5,1]": {"VMInstanceType": "c2m4", "VMKeepAlive": 5, "VMMaxLifetime": "2h"},
			},
			want: append([]planner.Shape{small(2, func(sh *planner.Shape) {
				sh.Flavor, sh.KeepAlive, sh.MaxLifetime = "c2m4", 5*time.Minute, 2*time.Hour
			})}, rest...)},
		{name: "a flavor apart",
			set:  map[string]map[string]any{"[5,1]": {"VMInstanceType": "c4m8"}},
			want: append([]planner.Shape{small(1, none), small(1, func(sh *planner.Shape) { sh.Flavor = "c4m8" })}, rest...)},
		{name: "a max lifetime apart (minutes)",
			set:  map[string]map[string]any{"[5,0]": {"VMMaxLifetime": 90}},
			want: append([]planner.Shape{small(1, none), small(1, func(sh *planner.Shape) { sh.MaxLifetime = 90 * time.Minute })}, rest...)},
		{name: "a keep-alive apart (a duration string)",
			set:  map[string]map[string]any{"[5,0]": {"VMKeepAlive": "45s"}},
			want: append([]planner.Shape{small(1, none), small(1, func(sh *planner.Shape) { sh.KeepAlive = 45 * time.Second })}, rest...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := rec(t, "11_condor_q-json_idle-only")
			if tt.set != nil {
				q = withJobAttrs(t, q, tt.set)
			}
			src, _ := newSource(t, testConfig(), answer(q), answer(rec(t, "20_condor_status-json_partitionable+4dynamic")))
			d, err := src.Poll(context.Background(), now, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Shapes, tt.want) {
				t.Errorf("shapes:\n got %+v\nwant %+v", d.Shapes, tt.want)
			}
			var infos []htcondor.ShapeInfo
			for _, sh := range src.Status().Shapes {
				if sh.Flavor != "" || sh.MaxLifetime != 0 || sh.KeepAlive != 0 {
					infos = append(infos, sh)
				}
			}
			wantInfos := 0
			for _, sh := range tt.want {
				if sh.Flavor != "" || sh.MaxLifetime != 0 || sh.KeepAlive != 0 {
					wantInfos++
				}
			}
			if len(infos) != wantInfos {
				t.Errorf("status shapes with job attributes: %+v, want %d", infos, wantInfos)
			}
		})
	}
}
