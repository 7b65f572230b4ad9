package imageplan

import (
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/images"
)

const hub = "hub-1"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func digest(c byte) string { return strings.Repeat(string([]byte{c}), 128) }

func ref(name string, c byte) images.Ref {
	return images.Ref{Name: name, Algo: "sha512", Hex: digest(c)}
}

func img(id, name string, c byte, size int64, owner string) images.Image {
	return images.Image{ID: id, Name: name, SizeBytes: size, Status: images.StatusActive, Hub: owner,
		Checksums: []images.Checksum{{Algorithm: "sha512", Hex: digest(c)}}}
}

func site(ims ...images.Image) Site { return Site{Fresh: true, Images: ims} }

func cellOf(p Plan, name, s string) Cell {
	for _, c := range p.Cells {
		if c.Ref.Name == name && c.Site == s {
			return c
		}
	}
	return Cell{}
}

func TestDecide(t *testing.T) {
	el9 := ref("el9", 'a')
	cases := []struct {
		name        string
		in          Input
		wantCopies  []string // "source>dest name"
		wantDeletes []string // "site:id"
		wantKept    []string
		cells       map[string]CellState // "name@site"
		reason      string               // substring of some cell reason
		conflicts   []ConflictKind
	}{
		{
			name:       "missing in east: copied from west",
			in:         Input{Wants: []Want{{Ref: el9, Sites: []string{"west", "east"}}}, Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 100, "")), "east": site()}},
			wantCopies: []string{"west>east el9"},
			cells:      map[string]CellState{"el9@west": CellPresent, "el9@east": CellStarting},
		},
		{
			name:  "stale destination: nothing",
			in:    Input{Wants: []Want{{Ref: el9, Sites: []string{"east"}}}, Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 100, "")), "east": {}}},
			cells: map[string]CellState{"el9@east": CellUnknown},
		},
		{
			name:  "no source anywhere",
			in:    Input{Wants: []Want{{Ref: el9, Sites: []string{"east"}}}, Sites: map[string]Site{"west": site(img("w1", "el9", 'b', 100, "")), "east": site()}},
			cells: map[string]CellState{"el9@east": CellNoSource},
		},
		{
			name: "copy under way: not started again",
			in: Input{Wants: []Want{{Ref: el9, Sites: []string{"east"}}}, Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 100, "")), "east": site()},
				InFlight: []Transfer{{ID: "c1", Ref: el9, Dest: "east", Source: "west", Total: 100}}},
			cells: map[string]CellState{"el9@east": CellCopying},
		},
		{
			name: "per-destination limit: one starts, one queues",
			in: Input{Config: Config{MaxPerDest: 1, MaxPerSource: 5},
				Wants: []Want{{Ref: el9, Sites: []string{"east"}}, {Ref: ref("el8", 'b'), Sites: []string{"east"}}},
				Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 100, ""), img("w2", "el8", 'b', 100, "")), "east": site()}},
			wantCopies: []string{"west>east el8"},
			cells:      map[string]CellState{"el8@east": CellStarting, "el9@east": CellQueued},
			reason:     "max_per_dest 1",
		},
		{
			name: "per-source limit counts copies under way",
			in: Input{Config: Config{MaxPerDest: 5, MaxPerSource: 1},
				Wants:    []Want{{Ref: el9, Sites: []string{"east", "north"}}},
				Sites:    map[string]Site{"west": site(img("w1", "el9", 'a', 100, "")), "east": site(), "north": site()},
				InFlight: []Transfer{{ID: "x", Ref: ref("other", 'c'), Dest: "south", Source: "west"}}},
			cells:  map[string]CellState{"el9@east": CellQueued, "el9@north": CellQueued},
			reason: "max_per_source 1",
		},
		{
			name: "backoff after failures",
			in: Input{Now: t0, Config: Config{BackoffMin: time.Minute},
				Wants:    []Want{{Ref: el9, Sites: []string{"east"}}},
				Sites:    map[string]Site{"west": site(img("w1", "el9", 'a', 100, "")), "east": site()},
				Failures: map[string]Failure{FailureKey("east", el9): {Count: 3, LastAt: t0.Add(-3 * time.Minute), Error: "digest mismatch"}}},
			cells:  map[string]CellState{"el9@east": CellBackoff},
			reason: "3 failed copies",
		},
		{
			name: "backoff over: retried",
			in: Input{Now: t0, Config: Config{BackoffMin: time.Minute},
				Wants:    []Want{{Ref: el9, Sites: []string{"east"}}},
				Sites:    map[string]Site{"west": site(img("w1", "el9", 'a', 100, "")), "east": site()},
				Failures: map[string]Failure{FailureKey("east", el9): {Count: 2, LastAt: t0.Add(-2 * time.Minute)}}},
			wantCopies: []string{"west>east el9"},
		},
		{
			name: "capacity quota refuses with the numbers",
			in: Input{HubID: hub, Wants: []Want{{Ref: el9, Sites: []string{"east"}}},
				Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 600, "")),
					"east": {Fresh: true, QuotaBytes: 1000, Images: []images.Image{img("e1", "old", 'c', 500, hub), img("e2", "foreign", 'd', 5000, "")}}}},
			cells:  map[string]CellState{"el9@east": CellRefused},
			reason: "site east: copying image el9 (600 bytes) would bring Canopy's images to 1100 bytes, over the site's quota of 1000 bytes (500 held, 0 being copied)",
			// "old" is Canopy's and unwanted: deleted (the quota frees next cycle).
			wantDeletes: []string{"east:e1"},
		},
		{
			name: "unwanted Canopy images deleted, foreign and in-use kept",
			in: Input{HubID: hub, Sites: map[string]Site{"east": {Fresh: true, InUse: map[string]int{"e2": 3},
				Images: []images.Image{img("e1", "a", 'a', 1, hub), img("e2", "b", 'b', 1, hub), img("e3", "c", 'c', 1, ""), img("e4", "d", 'd', 1, "other-hub")}}}},
			wantDeletes: []string{"east:e1"},
			wantKept:    []string{"east:e2"},
		},
		{
			name: "a copy's source is not deleted",
			in: Input{HubID: hub, Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, hub)), "east": site()},
				InFlight: []Transfer{{ID: "c", Ref: el9, Dest: "east", Source: "west"}}},
			wantKept: []string{"west:w1"},
		},
		{
			name:        "stale site: nothing deleted",
			in:          Input{HubID: hub, Sites: map[string]Site{"east": {Images: []images.Image{img("e1", "a", 'a', 1, hub)}}}},
			wantDeletes: nil,
		},
		{
			name: "same name other contents in the destination: conflict, no copy",
			in: Input{Wants: []Want{{Ref: el9, Sites: []string{"east"}}},
				Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, "")), "east": site(img("e1", "el9", 'b', 1, ""))}},
			cells:     map[string]CellState{"el9@east": CellConflict},
			conflicts: []ConflictKind{ConflictNameContents},
		},
		{
			name:      "same contents under two names",
			in:        Input{Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, "")), "east": site(img("e1", "centos9", 'a', 1, ""))}},
			conflicts: []ConflictKind{ConflictContentsNames},
		},
		{
			name: "duplicates in one site block the copy there",
			in: Input{Wants: []Want{{Ref: el9, Sites: []string{"west", "east"}}},
				Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, "")), "east": site(img("e1", "x", 'c', 1, ""), img("e2", "el9x", 'd', 1, ""), img("e3", "el9x", 'd', 1, ""))}},
			wantCopies: []string{"west>east el9"},
			conflicts:  []ConflictKind{ConflictDuplicate},
		},
		{
			name: "wanted image deleted by hand: shown, not copied again",
			in: Input{Wants: []Want{{Ref: el9, Sites: []string{"west", "east"}, Seen: map[string]time.Time{"west": t0, "east": t0}}},
				Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, "")), "east": site()}},
			cells:     map[string]CellState{"el9@east": CellConflict, "el9@west": CellPresent},
			conflicts: []ConflictKind{ConflictDeletedByHand},
			reason:    "no longer does",
		},
		{
			name: "a hidden image (being verified) is not present",
			in: Input{Wants: []Want{{Ref: el9, Sites: []string{"east"}}},
				Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, "")), "east": site(func() images.Image {
					im := img("e1", "el9", 'a', 1, hub)
					im.Hidden = true
					return im
				}())}},
			wantCopies: []string{"west>east el9"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(tc.in)
			var copies, dels, kept []string
			for _, c := range p.Copies {
				copies = append(copies, c.Source+">"+c.Dest+" "+c.Ref.Name)
			}
			for _, d := range p.Deletes {
				dels = append(dels, d.Site+":"+d.Image.ID)
			}
			for _, k := range p.Kept {
				kept = append(kept, k.Site+":"+k.Image.ID)
			}
			if strings.Join(copies, ",") != strings.Join(tc.wantCopies, ",") {
				t.Errorf("copies %v, want %v", copies, tc.wantCopies)
			}
			if strings.Join(dels, ",") != strings.Join(tc.wantDeletes, ",") {
				t.Errorf("deletes %v, want %v", dels, tc.wantDeletes)
			}
			if strings.Join(kept, ",") != strings.Join(tc.wantKept, ",") {
				t.Errorf("kept %v, want %v", kept, tc.wantKept)
			}
			for k, st := range tc.cells {
				name, s, _ := strings.Cut(k, "@")
				if got := cellOf(p, name, s); got.State != st {
					t.Errorf("cell %s is %s (%s), want %s", k, got.State, got.Reason, st)
				}
			}
			if tc.reason != "" {
				found := false
				for _, c := range p.Cells {
					found = found || strings.Contains(c.Reason, tc.reason)
				}
				if !found {
					t.Errorf("no cell reason contains %q: %+v", tc.reason, p.Cells)
				}
			}
			var kinds []ConflictKind
			for _, c := range p.Conflicts {
				kinds = append(kinds, c.Kind)
			}
			for _, k := range tc.conflicts {
				found := false
				for _, g := range kinds {
					found = found || g == k
				}
				if !found {
					t.Errorf("conflicts %v, want %s among them", kinds, k)
				}
			}
			if len(tc.conflicts) == 0 && len(kinds) > 0 {
				t.Errorf("unexpected conflicts %+v", p.Conflicts)
			}
		})
	}
}

func TestBackoffDoubles(t *testing.T) {
	c := Config{BackoffMin: time.Minute, BackoffMax: 10 * time.Minute}.WithDefaults()
	want := []time.Duration{time.Minute, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for n, w := range want {
		if got := c.Backoff(n); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, w)
		}
	}
}

func TestSeenReported(t *testing.T) {
	el9 := ref("el9", 'a')
	p := Decide(Input{Wants: []Want{{Ref: el9, Sites: []string{"west"}}}, Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, ""))}})
	if len(p.Seen) != 1 || p.Seen[0].Site != "west" || p.Seen[0].ImageID != "w1" {
		t.Fatalf("Seen %+v", p.Seen)
	}
	p = Decide(Input{Wants: []Want{{Ref: el9, Sites: []string{"west"}, Seen: map[string]time.Time{"west": t0}}}, Sites: map[string]Site{"west": site(img("w1", "el9", 'a', 1, ""))}})
	if len(p.Seen) != 0 {
		t.Fatalf("Seen again %+v", p.Seen)
	}
}
