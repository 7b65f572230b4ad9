package planner

import (
	"math"
	"testing"

	"pgregory.net/rapid"
)

// testHS06 is, independently of the planner, the HS06 of cpus cores of a
// flavor on a site: the site's rating for the flavor, else its default,
// else 1, times the cores, rounded.
func testHS06(s Snapshot, site, flavor string, cpus int) int {
	rate := 1.0
	for _, c := range s.Clouds {
		if c.Site != site {
			continue
		}
		if r := c.HS06PerCore[flavor]; r > 0 {
			rate = r
		} else if c.HS06Default > 0 {
			rate = c.HS06Default
		}
	}
	return int(math.Round(float64(max(0, cpus)) * math.Round(rate*1000) / 1000))
}

// genRatings rates some of the clouds' flavors.
func genRatings(t *rapid.T, s *Snapshot) {
	for i := range s.Clouds {
		c := &s.Clouds[i]
		if rapid.Bool().Draw(t, "rated") {
			c.HS06Default = rapid.SampledFrom([]float64{0, 8, 10.5}).Draw(t, "hs06Default")
			c.HS06PerCore = map[string]float64{}
			for _, f := range c.Flavors {
				if rapid.Bool().Draw(t, "rateFlavor") {
					c.HS06PerCore[f.Name] = rapid.SampledFrom([]float64{-1, 6, 9.75, 12, 15}).Draw(t, "hs06")
				}
			}
		}
	}
}

// TestHS06 covers the HS06 rules one by one.
func TestHS06(t *testing.T) {
	rated := func(site string, prio int, def float64, perFlavor map[string]float64) Cloud {
		c := testCloud(site, prio)
		c.HS06Default, c.HS06PerCore = def, perFlavor
		return c
	}
	needs := func(sh Shape, min float64) Shape { sh.MinHS06PerCore = min; return sh }
	tests := []struct {
		name   string
		clouds []Cloud
		groups []Group
		shapes []Shape
		vms    []VM
		cfg    func(*Config)
		boots  string
		notes  []string
	}{{
		name:   "no ratings: one unit per core",
		clouds: []Cloud{testCloud("west", 0)},
		groups: []Group{{Name: "atlas", Caps: Caps{HS06: 10}}},
		shapes: []Shape{testShape("atlas", 2, 20)},
		boots:  "west/atlas/c2m4×5",
		notes:  []string{"group atlas at its HS06 cap"},
	}, {
		name:   "a quota in HS06 counts rated cores",
		clouds: []Cloud{rated("west", 0, 10, map[string]float64{"c8m16": 12.5})},
		groups: []Group{{Name: "atlas", Caps: Caps{HS06: 250}}},
		// 8-core VMs of 100 HS06 each: two fit in 250.
		shapes: []Shape{testShape("atlas", 8, 20)},
		boots:  "west/atlas/c8m16×2",
	}, {
		name:   "HS06 of running VMs counts against the quota",
		clouds: []Cloud{rated("west", 0, 10, nil)},
		groups: []Group{{Name: "atlas", Caps: Caps{HS06: 100}}},
		shapes: []Shape{testShape("atlas", 2, 20)},
		vms:    []VM{testVM("b1", "west", "atlas", VMBusy, 4), withFlavor(testVM("b2", "west", "atlas", VMBusy, 2), "c2m4")},
		// 40 + 20 used, 40 left: two 2-core VMs of 20.
		boots: "west/atlas/c2m4×2",
	}, {
		name:   "a job's minimum rating passes over slower clouds",
		clouds: []Cloud{rated("west", 0, 8, nil), rated("east", 1, 12, nil)},
		shapes: []Shape{needs(testShape("atlas", 1, 3), 10)},
		boots:  "east/atlas/c1m2×3",
	}, {
		name:   "a job's minimum rating picks a bigger, faster flavor",
		clouds: []Cloud{rated("west", 0, 8, map[string]float64{"c4m8": 11})},
		shapes: []Shape{needs(testShape("atlas", 1, 8), 10)},
		boots:  "west/atlas/c4m8×2",
	}, {
		name:   "no flavor rated high enough",
		clouds: []Cloud{rated("west", 0, 8, nil)},
		shapes: []Shape{needs(testShape("atlas", 1, 3), 10)},
		boots:  "",
		notes:  []string{"no flavor on west fits the jobs"},
	}, {
		name:   "slower idle VMs do not cover demanding jobs, and do cover the others",
		clouds: []Cloud{rated("west", 0, 8, nil), rated("east", 1, 12, nil)},
		shapes: []Shape{needs(testShape("atlas", 1, 2), 10), testShape("atlas", 1, 2)},
		vms:    []VM{testVM("w1", "west", "atlas", VMIdle, 1), testVM("w2", "west", "atlas", VMIdle, 1)},
		boots:  "east/atlas/c1m2×2",
	}, {
		name:   "fair share in HS06",
		clouds: []Cloud{rated("west", 0, 1, map[string]float64{"c1m2": 20})},
		// a holds 2 cores of 20 HS06 each (40), b 4 cores of 1 (4): in
		// cores b holds more and a gets the one boot; in HS06 b does.
		shapes: []Shape{testShape("a", 1, 5), testShape("b", 1, 5)},
		vms: []VM{withFlavor(testVM("a1", "west", "a", VMBusy, 1), "c1m2"), withFlavor(testVM("a2", "west", "a", VMBusy, 1), "c1m2"),
			testVM("b1", "west", "b", VMBusy, 4)},
		cfg:   func(c *Config) { c.Fairness, c.ShareIn, c.MaxBootsPerCloud = FairShare, ShareHS06, 1 },
		boots: "west/b/c1m2×1",
	}, {
		name:   "fair share in cores",
		clouds: []Cloud{rated("west", 0, 1, map[string]float64{"c1m2": 20})},
		shapes: []Shape{testShape("a", 1, 5), testShape("b", 1, 5)},
		vms: []VM{withFlavor(testVM("a1", "west", "a", VMBusy, 1), "c1m2"), withFlavor(testVM("a2", "west", "a", VMBusy, 1), "c1m2"),
			testVM("b1", "west", "b", VMBusy, 4)},
		cfg:   func(c *Config) { c.Fairness, c.MaxBootsPerCloud = FairShare, 1 },
		boots: "west/a/c1m2×1",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snap(tc.clouds, tc.shapes, tc.vms)
			s.Groups = tc.groups
			s.Config.IdleThrottleMin = -1
			if tc.cfg != nil {
				tc.cfg(&s.Config)
			}
			checkPlan(t, Decide(s), tc.boots, "", tc.notes...)
		})
	}
}

func withFlavor(vm VM, flavor string) VM {
	vm.Flavor = flavor
	return vm
}

// TestPropertyHS06: every boot's flavor is rated at least the minimum of
// the group's jobs (all of a group's shapes ask the same here), and HS06
// quotas hold (checkTreeLimits).
func TestPropertyHS06(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genTreeSnapshot(t)
		minOf := map[string]float64{}
		for i := range s.Shapes {
			g := s.Shapes[i].Group
			if _, ok := minOf[g]; !ok {
				minOf[g] = rapid.SampledFrom([]float64{0, 9, 11, 14}).Draw(t, "min")
			}
			s.Shapes[i].MinHS06PerCore = minOf[g]
		}
		p := Decide(s)
		checkTreeLimits(t, s, p)
		for _, b := range p.Boots {
			if got := float64(testHS06(s, b.Site, b.Flavor, 1000)) / 1000; got < minOf[b.Group] {
				t.Fatalf("boot %s/%s rated %v per core for jobs that ask at least %v", b.Site, b.Flavor, got, minOf[b.Group])
			}
		}
	})
}

// TestBootAdvertisesRating: a boot carries its flavor's rating when the
// site rates its flavors, for the VMs to advertise, and none otherwise.
func TestBootAdvertisesRating(t *testing.T) {
	tests := []struct {
		name  string
		cloud Cloud
		want  float64
	}{
		{"unrated site", testCloud("west", 0), 0},
		{"rated flavor", func() Cloud { c := testCloud("west", 0); c.HS06PerCore = map[string]float64{"c1m2": 9.5}; return c }(), 9.5},
		{"site default", func() Cloud { c := testCloud("west", 0); c.HS06Default = 12; return c }(), 12},
		{"another flavor rated: 1 for this one", func() Cloud { c := testCloud("west", 0); c.HS06PerCore = map[string]float64{"c8m16": 20}; return c }(), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(snap([]Cloud{tc.cloud}, []Shape{testShape("atlas", 1, 1)}, nil))
			if len(p.Boots) != 1 || p.Boots[0].HS06PerCore != tc.want {
				t.Fatalf("boots %+v, want one rated %v", p.Boots, tc.want)
			}
		})
	}
}
