package htcondor

import (
	"bufio"
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/classad"
)

func testSource(t testing.TB) *Source {
	t.Helper()
	s, err := New(Config{
		VMTypes:   []VMTypeConfig{{Name: "centos7"}, {Name: "ubuntu22"}},
		MachineAd: map[string]string{"FileSystemDomain": `"localpool"`, "Start": `(TARGET.VMType =?= MY.VMType) || (TARGET.VMType =?= undefined)`},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recordedJobAds reads the recorded queue and keeps, per job id, the
// attributes a Source reads (as the shape is worked out from them).
func recordedJobAds(t testing.TB, s *Source) map[string]*classad.Ad {
	t.Helper()
	data, err := os.ReadFile("testdata/recorded/10_condor_q-json_all-states.out")
	if err != nil {
		t.Fatal(err)
	}
	q := s.newQueue()
	st := newAdStream(bytes.NewReader(data), 0)
	out := map[string]*classad.Ad{}
	for {
		attrs, err := st.next()
		if err != nil {
			break
		}
		clear(q.slots)
		for i, a := range attrs {
			if j, ok := q.proj.index[strings.ToLower(string(a.name))]; ok {
				q.slots[j] = i + 1
			}
		}
		q.picked = q.picked[:0]
		for j, shaping := range q.proj.shaping {
			if k := q.slots[j]; shaping && k > 0 {
				q.picked = append(q.picked, attrs[k-1])
			}
		}
		ad, err := s.exprs.buildAd(q.picked)
		if err != nil {
			t.Fatal(err)
		}
		out[q.jobID(attrs)] = ad
	}
	return out
}

// TestMatchGolden checks VM-type machine ads against HTCondor's own
// matchmaker: recorded/61_match_analyze-summary_per-flavor.out says, for
// three VM flavors (61_match_flavor_slotads.ads), which recorded jobs match
// (the "Available" column). The ads Canopy builds for the same VM types and
// sizes must decide the same.
func TestMatchGolden(t *testing.T) {
	s := testSource(t)
	jobs := recordedJobAds(t, s)
	flavors := map[string]struct {
		vmType string
		sz     size
	}{
		"flavor-centos7-m1.medium": {"centos7", size{4, 4096, 41943040}},
		"flavor-ubuntu22-m1.large": {"ubuntu22", size{2, 4096, 41943040}},
		"flavor-centos7-xxl":       {"centos7", size{16, 131072, 524288000}},
	}
	f, err := os.Open("testdata/recorded/61_match_analyze-summary_per-flavor.out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var flavor string
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[0] == "###" {
			flavor = fields[2]
			continue
		}
		if len(fields) < 8 {
			continue
		}
		fl, ok := flavors[flavor]
		if !ok {
			t.Fatalf("unknown flavor %q", flavor)
		}
		job := jobs[fields[0]]
		if job == nil {
			t.Fatalf("no recorded job %s", fields[0])
		}
		want := fields[6] != "0" // Available
		group, _ := job.Eval("Owner").Str()
		machine := s.typeByName[fl.vmType].machineAd(s.cfg.Attributes, group, fl.sz)
		if got := classad.Match(job, machine); got != want {
			t.Errorf("job %s on %s: match %v, HTCondor says %v", fields[0], flavor, got, want)
		}
		n++
	}
	if n != 15 {
		t.Fatalf("compared %d job/flavor pairs, want 15", n)
	}
}

// TestShapeOf works out shapes from the recorded job 2.0 with the
// attributes users write added, the Canopy ones and cloudscheduler's.
func TestShapeOf(t *testing.T) {
	s := testSource(t)
	base := recordedJobAds(t, s)["2.0"] // ubuntu22, 2 cpus, 2048 MiB, 4 GiB
	tests := []struct {
		name   string
		set    map[string]string // attribute -> ClassAd expression
		del    []string
		want   shapeKey
		reason string
	}{
		{name: "as recorded", want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304}},
		{name: "CanopyGroup wins over Owner", set: map[string]string{"CanopyGroup": `"atlas"`},
			want: shapeKey{group: "atlas", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304}},
		{name: "AccountingGroup loses its user", set: map[string]string{"AccountingGroup": `"group_cms.alice"`},
			want: shapeKey{group: "group_cms", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304}},
		{name: "Canopy attributes", set: map[string]string{"TargetClouds": `"west, east"`, "VMKeepAlive": "30", "VMMaxLifetime": `"12h"`, "VMImage": `"ubuntu-22.04"`},
			want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304, clouds: "east,west",
				keepAlive: 30 * time.Minute, maxLifetime: 12 * time.Hour, image: "ubuntu-22.04"}},
		{name: "cloudscheduler sizes", set: map[string]string{"VMCPUCores": "4", "VMMem": "8000", "VMStorage": "20", "VMAMI": `"ami-123"`, "VMInstanceType": `"m1.large"`},
			want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 4, memMiB: 8000, diskKiB: 20 * 1048576, image: "ami-123", flavor: "m1.large"}},
		{name: "cloudscheduler job per core", set: map[string]string{"VMCPUCores": "8", "VMJobPerCore": "true"},
			want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304, jobsPerVM: 4}},
		{name: "VM type from Requirements", del: []string{"VMType"},
			want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304}},
		{name: "RequestMemory expression", set: map[string]string{"RequestMemory": "ifthenelse(MemoryUsage =!= undefined, MemoryUsage, (ImageSize + 1023) / 1024)", "ImageSize": "3000000"},
			want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 2, memMiB: 2930, diskKiB: 4194304}},
		{name: "RequestMemory undefined", set: map[string]string{"RequestMemory": "MemoryUsage"}, reason: "RequestMemory is undefined"},
		{name: "unknown VM type", set: map[string]string{"VMType": `"windows"`}, reason: `VM type "windows" is not configured`},
		{name: "Requirements reject the type", set: map[string]string{"VMType": `"centos7"`}, reason: "its Requirements reject VM type centos7"},
		{name: "no VM type fits", del: []string{"VMType"}, set: map[string]string{"Requirements": `TARGET.VMType == "sl7"`}, reason: "matches none of the VM types"},
		{name: "bad group", set: map[string]string{"CanopyGroup": `"a b"`}, reason: "not a group name"},
		{name: "bad keep-alive", set: map[string]string{"VMKeepAlive": `"soon"`}, reason: "not a duration"},
		{name: "minimum HS06 rating", set: map[string]string{"RequestHS06PerCore": "10.5"},
			want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304, minHS06: 10.5}},
		{name: "preemptible", set: map[string]string{"Preemptible": "True"},
			want: shapeKey{group: "alice", vmType: "ubuntu22", cpus: 2, memMiB: 2048, diskKiB: 4194304, preemptible: true}},
		{name: "HS06 rating not a number", set: map[string]string{"RequestHS06PerCore": `"fast"`}, reason: "RequestHS06PerCore is not an HS06 rating"},
		{name: "HS06 rating not positive", set: map[string]string{"RequestHS06PerCore": "0"}, reason: "RequestHS06PerCore is not an HS06 rating"},
		{name: "HS06 rating absurd", set: map[string]string{"RequestHS06PerCore": "1e9"}, reason: "RequestHS06PerCore is not an HS06 rating"},
		{name: "bad clouds", set: map[string]string{"TargetClouds": `{"a", 1}`}, reason: "not a list of names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := base.Clone()
			for k, v := range tt.set {
				if err := job.SetExpr(k, v); err != nil {
					t.Fatal(err)
				}
			}
			for _, k := range tt.del {
				job.Delete(k)
			}
			key, reason := s.shapeOf(job)
			if tt.reason != "" {
				if !strings.Contains(reason, tt.reason) {
					t.Errorf("reason %q, want %q", reason, tt.reason)
				}
				return
			}
			if reason != "" || key != tt.want {
				t.Errorf("got %+v (%q), want %+v", key, reason, tt.want)
			}
		})
	}
}
