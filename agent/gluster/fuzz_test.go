package gluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for the parsers. Their seed corpus, testdata/fuzz/<target>/,
// holds every captured output the target's parser reads (written by
// go test -update from the fixture manifests); plain go test runs them.
//
//	go test -fuzz FuzzParseHeal ./agent/gluster/

// fuzzTargets maps a fuzz target to the manifest parsers whose fixtures
// seed it.
var fuzzTargets = map[string][]string{
	"FuzzParseVolumeInfo":   {"volinfo", "vollist"},
	"FuzzParseVolumeStatus": {"volstatus"},
	"FuzzParseHeal":         {"heal", "check"},
	"FuzzParsePeerStatus":   {"peers"},
	"FuzzParseGeoRepStatus": {"georep", "georepconfig"},
}

// TestFuzzSeeds writes (under -update) or checks the seed corpora.
func TestFuzzSeeds(t *testing.T) {
	for target, parsers := range fuzzTargets {
		dir := filepath.Join("testdata/fuzz", target)
		n := 0
		for _, d := range fixtureDirs {
			for _, c := range loadManifest(t, d) {
				if !contains(parsers, c.parser) {
					continue
				}
				n++
				if !*update {
					continue
				}
				b, err := os.ReadFile(filepath.Join(c.dir, c.file))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
				if err := os.WriteFile(filepath.Join(dir, c.file), []byte(seed), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("%s: %v (go test -update writes it)", target, err)
		}
		if len(ents) < n {
			t.Errorf("%s: %d seeds, want %d (go test -update writes them)", target, len(ents), n)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkCounts fails on counts below -1 (the only "unknown" value).
func checkCounts(t *testing.T, what string, ns ...int64) {
	t.Helper()
	for _, n := range ns {
		if n < -1 {
			t.Fatalf("%s: count %d", what, n)
		}
	}
}

func FuzzParseVolumeInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		vols, err := ParseVolumeInfo(b)
		if err != nil {
			return
		}
		for _, v := range vols {
			if v.Name == "" || len(v.Bricks) > maxBricks {
				t.Fatalf("bad volume %+v", v)
			}
		}
		// Whatever parsed must assess without panicking.
		Assess(Snapshot{Volumes: vols, Status: []VolumeStatus{}, Daemons: []VolumeStatus{}}, Thresholds{})
		_, _ = ParseVolumeList(b)
	})
}

func FuzzParseVolumeStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseVolumeStatus(b)
		if err != nil {
			return
		}
		var vols []Volume
		for _, vs := range st {
			if vs.Name == "" {
				t.Fatal("volume status without name")
			}
			v := Volume{Name: vs.Name, State: "Started", ReplicaCount: 3}
			for _, p := range vs.Bricks {
				v.Bricks = append(v.Bricks, VolumeBrick{Name: p.Name(), HostUUID: p.PeerID})
			}
			vols = append(vols, v)
		}
		Assess(Snapshot{Volumes: vols, Status: st, Daemons: st}, Thresholds{})
	})
}

func FuzzParseHeal(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		hb, err := ParseHeal(b)
		if err != nil {
			return
		}
		v := Volume{Name: "v", State: "Started", ReplicaCount: 2}
		for _, h := range hb {
			checkCounts(t, h.Name, h.Total, h.Pending, h.SplitBrain, h.PossiblyHealing, h.Entries)
			if len(h.Files) > maxHealFiles {
				t.Fatalf("%d files kept", len(h.Files))
			}
			v.Bricks = append(v.Bricks, VolumeBrick{Name: h.Name})
		}
		r := Assess(Snapshot{Volumes: []Volume{v}, Heal: map[string][]HealBrick{"v": hb}, SplitBrain: map[string][]HealBrick{"v": hb}}, Thresholds{})
		if len(r.Volumes[0].SplitBrainFiles) > maxSplitBrainFiles {
			t.Fatalf("%d split-brain files reported", len(r.Volumes[0].SplitBrainFiles))
		}
	})
}

func FuzzParsePeerStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := ParsePeerStatus(b)
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.UUID == "" && p.Hostname == "" {
				t.Fatal("peer without identity")
			}
		}
	})
}

func FuzzParseGeoRepStatus(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseGeoRepConfig(b)
		pairs, err := ParseGeoRepStatus(b, time.UTC)
		if err != nil {
			return
		}
		for _, p := range pairs {
			checkCounts(t, p.PrimaryBrick, p.Entry, p.Data, p.Meta, p.Failures)
			if p.Secondary == "" || p.Status == "" || strings.HasPrefix(p.Secondary, "ssh://") {
				t.Fatalf("bad pair %+v", p)
			}
		}
		r := Assess(Snapshot{TakenAt: time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC), GeoRep: pairs}, Thresholds{})
		for _, g := range r.GeoReps {
			if g.Status == "" || len(g.Workers) == 0 {
				t.Fatalf("bad session %+v", g)
			}
		}
	})
}
