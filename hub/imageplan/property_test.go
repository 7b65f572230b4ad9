package imageplan

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/canopy-grid/canopy/images"
)

// genInput draws a small world: a few sites, images drawn from a few names
// and contents, some Canopy's, some in use, some wants, copies under way,
// failures and quotas.
func genInput(t *rapid.T) Input {
	names := []string{"el8", "el9", "deb12"}
	contents := []byte{'a', 'b', 'c'}
	sites := []string{"s0", "s1", "s2", "s3"}
	in := Input{Now: t0, HubID: hub, Sites: map[string]Site{}, Failures: map[string]Failure{},
		Config: Config{MaxPerDest: rapid.IntRange(1, 3).Draw(t, "maxDest"), MaxPerSource: rapid.IntRange(1, 3).Draw(t, "maxSrc"),
			BackoffMin: time.Minute}}
	n := 0
	for _, s := range sites {
		st := Site{Fresh: rapid.IntRange(0, 4).Draw(t, s+"fresh") > 0, InUse: map[string]int{}}
		if rapid.Bool().Draw(t, s+"quota") {
			st.QuotaBytes = int64(rapid.IntRange(1, 40).Draw(t, s+"q"))
		}
		for i := range rapid.IntRange(0, 4).Draw(t, s+"n") {
			n++
			id := fmt.Sprintf("%s-i%d", s, n)
			im := img(id, rapid.SampledFrom(names).Draw(t, id+"name"), rapid.SampledFrom(contents).Draw(t, id+"c"),
				int64(rapid.IntRange(0, 20).Draw(t, id+"size")), rapid.SampledFrom([]string{"", hub, "other"}).Draw(t, id+"hub"))
			im.Status = rapid.SampledFrom([]images.Status{images.StatusActive, images.StatusActive, images.StatusQueued}).Draw(t, id+"st")
			im.Hidden = rapid.IntRange(0, 5).Draw(t, id+"hidden") == 0
			if rapid.Bool().Draw(t, id+"used") {
				st.InUse[id] = 1 + i
			}
			st.Images = append(st.Images, im)
		}
		in.Sites[s] = st
	}
	for _, name := range names {
		if !rapid.Bool().Draw(t, name+"wanted") {
			continue
		}
		w := Want{Ref: ref(name, rapid.SampledFrom(contents).Draw(t, name+"wc")), Seen: map[string]time.Time{}}
		for _, s := range sites {
			if rapid.Bool().Draw(t, name+s) {
				w.Sites = append(w.Sites, s)
				if rapid.IntRange(0, 3).Draw(t, name+s+"seen") == 0 {
					w.Seen[s] = t0
				}
			}
		}
		in.Wants = append(in.Wants, w)
	}
	for i := range rapid.IntRange(0, 3).Draw(t, "inflight") {
		in.InFlight = append(in.InFlight, Transfer{ID: fmt.Sprint("t", i), Ref: ref(rapid.SampledFrom(names).Draw(t, "tn"), 'a'),
			Dest: rapid.SampledFrom(sites).Draw(t, "td"), Source: rapid.SampledFrom(sites).Draw(t, "ts"), Total: int64(rapid.IntRange(0, 20).Draw(t, "tt"))})
	}
	for _, w := range in.Wants {
		for _, s := range w.Sites {
			if rapid.IntRange(0, 3).Draw(t, "fail"+s) == 0 {
				in.Failures[FailureKey(s, w.Ref)] = Failure{Count: rapid.IntRange(1, 4).Draw(t, "fc"),
					LastAt: t0.Add(-time.Duration(rapid.IntRange(0, 20).Draw(t, "fa")) * time.Minute)}
			}
		}
	}
	return in
}

// TestPropertiesDecide: whatever the world, the plan keeps the rules.
func TestPropertiesDecide(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t)
		p := Decide(in)
		cfg := in.Config.WithDefaults()

		// Deletions: Canopy's own, active, visible, fresh site, not in use,
		// not wanted there, not a copy's source.
		for _, d := range p.Deletes {
			s := in.Sites[d.Site]
			if !s.Fresh || d.Image.Hub != hub || s.InUse[d.Image.ID] > 0 || d.Image.Hidden || d.Image.Status != images.StatusActive {
				t.Fatalf("deletes %s:%s (hub %q, in use %d, fresh %v)", d.Site, d.Image.ID, d.Image.Hub, s.InUse[d.Image.ID], s.Fresh)
			}
			for _, w := range in.Wants {
				for _, ws := range w.Sites {
					if ws == d.Site && w.Ref.Name == d.Image.Name && w.Ref.Matches(d.Image) {
						t.Fatalf("deletes wanted %s in %s", d.Image.Name, d.Site)
					}
				}
			}
			for _, tr := range in.InFlight {
				if tr.Source == d.Site && tr.Ref.Name == d.Image.Name && tr.Ref.Matches(d.Image) {
					t.Fatalf("deletes the source of copy %s", tr.ID)
				}
			}
		}
		// Copies: bounded per destination and source, counting those under way.
		dest, src := map[string]int{}, map[string]int{}
		for _, tr := range in.InFlight {
			dest[tr.Dest]++
			src[tr.Source]++
		}
		for _, c := range p.Copies {
			dest[c.Dest]++
			src[c.Source]++
			if dest[c.Dest] > cfg.MaxPerDest || src[c.Source] > cfg.MaxPerSource {
				t.Fatalf("copy %s>%s over limits: dest %d/%d, source %d/%d", c.Source, c.Dest, dest[c.Dest], cfg.MaxPerDest, src[c.Source], cfg.MaxPerSource)
			}
			// The source holds the bytes, both ends are fresh, the
			// destination does not hold it, and no copy of it is under way.
			if !in.Sites[c.Source].Fresh || !in.Sites[c.Dest].Fresh || !c.Ref.Matches(c.Image) || c.Source == c.Dest {
				t.Fatalf("bad copy %+v", c)
			}
			if _, ok := holds(in.Sites[c.Dest], c.Ref); ok {
				t.Fatalf("copies %s into %s which holds it", c.Ref, c.Dest)
			}
			for _, tr := range in.InFlight {
				if tr.Dest == c.Dest && FailureKey(tr.Dest, tr.Ref) == FailureKey(c.Dest, c.Ref) {
					t.Fatalf("copies %s into %s twice", c.Ref, c.Dest)
				}
			}
			if f, ok := in.Failures[FailureKey(c.Dest, c.Ref)]; ok && in.Now.Before(f.LastAt.Add(cfg.Backoff(f.Count))) {
				t.Fatalf("copies %s into %s during its backoff", c.Ref, c.Dest)
			}
		}
		// Quota: Canopy's bytes + copies under way + new copies within the quota.
		for name, s := range in.Sites {
			if s.QuotaBytes == 0 {
				continue
			}
			var newBytes, total int64
			for _, c := range p.Copies {
				if c.Dest == name {
					newBytes += c.Image.SizeBytes
				}
			}
			if newBytes == 0 {
				continue
			}
			for _, im := range s.Images {
				if im.Hub == hub {
					total += im.SizeBytes
				}
			}
			for _, tr := range in.InFlight {
				if tr.Dest == name {
					total += tr.Total
				}
			}
			if total+newBytes > s.QuotaBytes {
				t.Fatalf("site %s: %d + %d new bytes over quota %d", name, total, newBytes, s.QuotaBytes)
			}
		}
		// Every wanted cell appears exactly once.
		want := 0
		for _, w := range in.Wants {
			want += len(w.Sites)
		}
		if len(p.Cells) != want {
			t.Fatalf("%d cells, want %d", len(p.Cells), want)
		}
		// Decide is deterministic.
		if q := Decide(in); fmt.Sprint(q) != fmt.Sprint(p) {
			t.Fatal("Decide is not deterministic")
		}
	})
}
