package planner

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol"
	"pgregory.net/rapid"
)

var (
	propSites  = []string{"c0", "c1", "c2", "c3", "c4"}
	propGroups = []string{"g0", "g1", "g2"}
	propTypes  = []string{"default", "big"}
	propImages = []string{"", "img-a"}
	propStates = []VMState{VMBooting, VMStarting, VMIdle, VMBusy, VMRetiring, VMError, "weird"}
)

func genDur(t *rapid.T, label string, maxMin int) time.Duration {
	return time.Duration(rapid.IntRange(0, maxMin).Draw(t, label)) * time.Minute
}

// genSnapshot draws a random snapshot: a few clouds with random limits,
// states and failures, groups with caps, shapes and VMs in every state.
func genSnapshot(t *rapid.T) Snapshot {
	s := Snapshot{Now: t0, Config: DefaultConfig()}
	s.Config.MaxBootsPerCloud = rapid.IntRange(0, 12).Draw(t, "maxBoots")
	s.Config.IdleThrottleMin = rapid.SampledFrom([]int{-1, 0, 2, 10}).Draw(t, "throttle")
	s.Config.Fairness = rapid.SampledFrom([]Fairness{FairRotate, FairShare}).Draw(t, "fairness")
	s.Config.OverQuotaDeadline = rapid.SampledFrom([]time.Duration{0, time.Hour}).Draw(t, "oqDeadline")
	s.Config.MaxLifetime = rapid.SampledFrom([]time.Duration{0, 10 * time.Hour}).Draw(t, "maxLifetime")
	s.Config.RetireOrder = rapid.SampledFrom([]RetireOrder{RetireYoungest, RetireOldest}).Draw(t, "order")
	s.Config.UnknownDeadline = rapid.SampledFrom([]time.Duration{0, -1, 2 * time.Hour}).Draw(t, "unknownDeadline")

	nClouds := rapid.IntRange(1, len(propSites)).Draw(t, "nClouds")
	all := testFlavors()
	for i := range nClouds {
		c := Cloud{Site: propSites[i], Priority: rapid.IntRange(0, 3).Draw(t, "prio"),
			Connected: rapid.Float64Range(0, 1).Draw(t, "conn") < 0.9,
			Paused:    rapid.Float64Range(0, 1).Draw(t, "paused") < 0.1,
			Disabled:  rapid.Float64Range(0, 1).Draw(t, "disabled") < 0.1,
			Endpoint:  rapid.SampledFrom([]string{"", "", "ep1"}).Draw(t, "endpoint"),
		}
		c.MaxInFlight = rapid.IntRange(0, 6).Draw(t, "maxInFlight")
		for _, f := range all {
			if rapid.Bool().Draw(t, "flavor") {
				c.Flavors = append(c.Flavors, f)
			}
		}
		c.Limits = noLimits
		if rapid.Bool().Draw(t, "limited") {
			c.Limits = protocol.Limits{
				MaxCores: rapid.IntRange(-1, 60).Draw(t, "maxCores"), MaxRAMMiB: rapid.IntRange(-1, 120000).Draw(t, "maxRAM"),
				MaxInstances: rapid.IntRange(-1, 30).Draw(t, "maxInst"),
				UsedCores:    rapid.IntRange(0, 40).Draw(t, "usedCores"), UsedRAMMiB: rapid.IntRange(0, 80000).Draw(t, "usedRAM"),
				UsedInstances: rapid.IntRange(0, 20).Draw(t, "usedInst"),
			}
		}
		if rapid.Bool().Draw(t, "capped") {
			c.Caps = Caps{Cores: rapid.IntRange(0, 50).Draw(t, "capCores"), RAMMiB: rapid.IntRange(0, 100000).Draw(t, "capRAM"),
				VMs: rapid.IntRange(0, 25).Draw(t, "capVMs")}
		}
		if rapid.Bool().Draw(t, "soft") {
			c.SoftQuota = Caps{Cores: rapid.IntRange(0, 50).Draw(t, "softCores"), VMs: rapid.IntRange(0, 25).Draw(t, "softVMs")}
			c.Foreign = Usage{Cores: rapid.IntRange(0, 20).Draw(t, "fCores"), VMs: rapid.IntRange(0, 10).Draw(t, "fVMs")}
		}
		if rapid.Float64Range(0, 1).Draw(t, "unlisted") < 0.2 {
			c.Unlisted = rapid.IntRange(1, 4).Draw(t, "nUnlisted")
			c.UnlistedSince = t0.Add(-genDur(t, "unlistedAgo", 30))
		}
		if rapid.Float64Range(0, 1).Draw(t, "oq") < 0.3 {
			c.OverQuotaSince = t0.Add(-genDur(t, "oqAgo", 180))
		}
		c.KeepAlive = rapid.SampledFrom([]time.Duration{0, 0, time.Minute, time.Hour}).Draw(t, "cloudKeep")
		s.Clouds = append(s.Clouds, c)
	}

	for _, name := range propGroups {
		if !rapid.Bool().Draw(t, "hasGroup") {
			continue
		}
		g := Group{Name: name, Share: rapid.IntRange(0, 4).Draw(t, "share"), Paused: rapid.Float64Range(0, 1).Draw(t, "gpaused") < 0.1}
		if rapid.Bool().Draw(t, "gcaps") {
			g.Caps = Caps{Cores: rapid.IntRange(0, 40).Draw(t, "gCores"), VMs: rapid.IntRange(0, 20).Draw(t, "gVMs")}
		}
		if rapid.Bool().Draw(t, "gcloudcaps") {
			g.CloudCaps = map[string]Caps{rapid.SampledFrom(propSites).Draw(t, "gccSite"): {VMs: rapid.IntRange(0, 8).Draw(t, "gccVMs")}}
		}
		if rapid.Float64Range(0, 1).Draw(t, "gclouds") < 0.2 {
			g.Clouds = []string{rapid.SampledFrom(append(propSites, "eu")).Draw(t, "gcloud")}
		}
		if rapid.Float64Range(0, 1).Draw(t, "goq") < 0.3 {
			g.OverQuotaSince = t0.Add(-genDur(t, "goqAgo", 180))
		}
		s.Groups = append(s.Groups, g)
	}
	genTree(t, &s)
	s.Aliases = map[string][]string{"eu": {"c1", "c3"}}
	if rapid.Bool().Draw(t, "vmtypes") {
		s.VMTypes = []VMType{{Name: "big", JobsPerVM: rapid.IntRange(0, 4).Draw(t, "typePack")}}
	}

	nShapes := rapid.IntRange(0, 8).Draw(t, "nShapes")
	for range nShapes {
		sh := Shape{Group: rapid.SampledFrom(propGroups).Draw(t, "sgroup"), VMType: rapid.SampledFrom(propTypes).Draw(t, "stype"),
			Cpus: rapid.IntRange(0, 9).Draw(t, "scpus"), MemoryMiB: rapid.IntRange(0, 20000).Draw(t, "smem"),
			Image: rapid.SampledFrom(propImages).Draw(t, "simage"),
			Idle:  rapid.SampledFrom([]int{0, 1, 3, 10, 50, 300000}).Draw(t, "sidle"), Running: rapid.IntRange(0, 20).Draw(t, "srun"),
			JobsPerVM: rapid.IntRange(0, 3).Draw(t, "spack"),
		}
		if rapid.Float64Range(0, 1).Draw(t, "sclouds") < 0.3 {
			sh.Clouds = rapid.SliceOfNDistinct(rapid.SampledFrom(append(propSites, "eu")), 1, 3, func(s string) string { return s }).Draw(t, "sitelist")
		}
		s.Shapes = append(s.Shapes, sh)
	}

	nVMs := rapid.IntRange(0, 40).Draw(t, "nVMs")
	for i := range nVMs {
		vm := VM{ID: fmt.Sprintf("id-%d", i), Name: fmt.Sprintf("vm-%d", i),
			Site:  rapid.SampledFrom(append(propSites[:nClouds:nClouds], "gone")).Draw(t, "vsite"),
			Group: rapid.SampledFrom(propGroups).Draw(t, "vgroup"), VMType: rapid.SampledFrom(propTypes).Draw(t, "vtype"),
			State: rapid.SampledFrom(propStates).Draw(t, "vstate"),
			Cpus:  rapid.SampledFrom([]int{0, 1, 2, 4, 8}).Draw(t, "vcpus"),
			Held:  rapid.Float64Range(0, 1).Draw(t, "held") < 0.1,
		}
		vm.MemoryMiB = vm.Cpus * rapid.SampledFrom([]int{1024, 2048, 4096}).Draw(t, "vmemper")
		if rapid.Float64Range(0, 1).Draw(t, "pending") < 0.15 {
			vm.ID = ""
		}
		vm.CreatedAt = t0.Add(-genDur(t, "age", 20*60))
		if vm.State == VMBusy || rapid.Float64Range(0, 1).Draw(t, "oddRunning") < 0.05 {
			vm.RunningJobs = rapid.IntRange(0, 8).Draw(t, "vrun")
			vm.FreeCpus = rapid.IntRange(0, vm.Cpus).Draw(t, "vfree")
			vm.FreeMemoryMiB = vm.FreeCpus * 2048
		}
		if vm.State == VMIdle {
			vm.IdleSince = t0.Add(-genDur(t, "idleFor", 60))
		}
		if vm.State == VMIdle || vm.State == VMBusy {
			if rapid.Bool().Draw(t, "registered") {
				vm.RegisteredAt = vm.CreatedAt.Add(genDur(t, "regAfter", 30))
				vm.JobsStarted = rapid.IntRange(0, 3).Draw(t, "started")
			}
		}
		if vm.State == VMError {
			vm.ErrorSince = t0.Add(-genDur(t, "errFor", 10))
		}
		if vm.State == VMRetiring && rapid.Bool().Draw(t, "retSince") {
			vm.RetiringSince = t0.Add(-genDur(t, "retFor", 26*60))
		}
		vm.KeepAlive = rapid.SampledFrom([]time.Duration{0, 0, 30 * time.Minute}).Draw(t, "vkeep")
		vm.Evidence = rapid.SampledFrom([]Evidence{"", "", EvidenceRegistered, EvidenceUnregistered, EvidenceUnknown, EvidenceUnknown}).Draw(t, "evidence")
		if vm.Evidence == EvidenceUnknown {
			vm.Why = "cloud not reporting"
			vm.UnknownFor = genDur(t, "unknownFor", 30*60)
		}
		if vm.Evidence != "" {
			vm.Unregistered = genDur(t, "unregistered", 3*60)
		}
		s.VMs = append(s.VMs, vm)
	}

	nFail := rapid.IntRange(0, 5).Draw(t, "nFail")
	for range nFail {
		s.Failures = append(s.Failures, Failure{Site: rapid.SampledFrom(propSites).Draw(t, "fsite"),
			Image: rapid.SampledFrom(propImages).Draw(t, "fimage"), At: t0.Add(-genDur(t, "fago", 90)),
			Reason: rapid.SampledFrom([]string{"quota", "no valid host"}).Draw(t, "freason")})
	}
	return s
}

func TestPropertyLimits(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		p := Decide(s)
		checkLimits(t, s, p)
	})
}

// checkLimits verifies, independently of the planner, that the plan's
// boots fit every limit that was not already exceeded, and that a cloud
// already over a limit gets no boots.
func checkLimits(t *rapid.T, s Snapshot, p Plan) {
	type use struct{ cores, ram, vms int }
	booted := map[string]use{}
	bootedGroupSite := map[[2]string]use{}
	flavorOf := func(site, name string) protocol.Flavor {
		for _, c := range s.Clouds {
			if c.Site == site {
				for _, f := range c.Flavors {
					if f.Name == name {
						return f
					}
				}
			}
		}
		t.Fatalf("boot of unknown flavor %s on %s", name, site)
		return protocol.Flavor{}
	}
	for _, b := range p.Boots {
		if b.Count <= 0 {
			t.Fatalf("boot with count %d: %+v", b.Count, b)
		}
		f := flavorOf(b.Site, b.Flavor)
		add := func(u use) use { return use{u.cores + b.Count*f.VCPUs, u.ram + b.Count*f.RAMMiB, u.vms + b.Count} }
		booted[b.Site] = add(booted[b.Site])
		k := [2]string{b.Group, b.Site}
		bootedGroupSite[k] = add(bootedGroupSite[k])
	}
	canopy := map[string]use{}
	pending := map[string]use{}
	groupSite := map[[2]string]use{}
	inFlight := map[string]int{}
	endpoint := func(site string) string {
		for _, c := range s.Clouds {
			if c.Site == site && c.Endpoint != "" {
				return c.Endpoint
			}
		}
		return "site:" + site
	}
	for _, vm := range s.VMs {
		u := use{vm.Cpus, vm.MemoryMiB, 1}
		add := func(m map[string]use, k string) {
			o := m[k]
			m[k] = use{o.cores + u.cores, o.ram + u.ram, o.vms + u.vms}
		}
		add(canopy, vm.Site)
		k := [2]string{vm.Group, vm.Site}
		o := groupSite[k]
		groupSite[k] = use{o.cores + u.cores, o.ram + u.ram, o.vms + u.vms}
		if vm.ID == "" {
			add(pending, vm.Site)
		}
		if vm.State == VMBooting || vm.State == VMStarting {
			inFlight[endpoint(vm.Site)]++
		}
	}
	within := func(what string, before, boots, limit int) {
		if boots > 0 && before+boots > limit {
			t.Fatalf("%s: %d in use + %d booted > limit %d", what, before, boots, limit)
		}
	}
	epBoots := map[string]int{}
	epMax := map[string]int{}
	for _, c := range s.Clouds {
		b := booted[c.Site]
		u := canopy[c.Site]
		if c.Limits.MaxCores >= 0 {
			within(c.Site+" project cores", c.Limits.UsedCores+pending[c.Site].cores, b.cores, c.Limits.MaxCores)
		}
		if c.Limits.MaxRAMMiB >= 0 {
			within(c.Site+" project ram", c.Limits.UsedRAMMiB+pending[c.Site].ram, b.ram, c.Limits.MaxRAMMiB)
		}
		if c.Limits.MaxInstances >= 0 {
			within(c.Site+" project vms", c.Limits.UsedInstances+pending[c.Site].vms, b.vms, c.Limits.MaxInstances)
		}
		if c.Caps.Cores > 0 {
			within(c.Site+" cap cores", u.cores, b.cores, c.Caps.Cores)
		}
		if c.Caps.RAMMiB > 0 {
			within(c.Site+" cap ram", u.ram, b.ram, c.Caps.RAMMiB)
		}
		if c.Caps.VMs > 0 {
			within(c.Site+" cap vms", u.vms, b.vms, c.Caps.VMs)
		}
		if c.SoftQuota.Cores > 0 {
			within(c.Site+" soft cores", u.cores+c.Foreign.Cores, b.cores, c.SoftQuota.Cores)
		}
		if c.SoftQuota.VMs > 0 {
			within(c.Site+" soft vms", u.vms+c.Foreign.VMs, b.vms, c.SoftQuota.VMs)
		}
		ep := endpoint(c.Site)
		epBoots[ep] += b.vms
		if c.MaxInFlight > 0 && (epMax[ep] == 0 || c.MaxInFlight < epMax[ep]) {
			epMax[ep] = c.MaxInFlight
		}
	}
	for ep, m := range epMax {
		if m == 0 {
			epMax[ep] = s.Config.MaxBootsPerCloud
		}
	}
	for ep := range epBoots {
		if _, ok := epMax[ep]; !ok {
			epMax[ep] = s.Config.MaxBootsPerCloud
		}
	}
	for ep, n := range epBoots {
		if m := epMax[ep]; m > 0 {
			within(ep+" in flight", inFlight[ep], n, m)
		}
	}
	checkTreeLimits(t, s, p)
	for _, g := range s.Groups {
		for site, caps := range g.CloudCaps {
			k := [2]string{g.Name, site}
			if caps.VMs > 0 {
				within(g.Name+" on "+site+" vms", groupSite[k].vms, bootedGroupSite[k].vms, caps.VMs)
			}
		}
	}
}

func TestPropertyNoBootsOnBlockedClouds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		p := Decide(s)
		cfg := s.Config.withDefaults()
		blocked := map[string]string{}
		for _, c := range s.Clouds {
			switch {
			case !c.Connected:
				blocked[c.Site] = "disconnected"
			case c.Paused:
				blocked[c.Site] = "paused"
			case c.Disabled:
				blocked[c.Site] = "disabled"
			case c.Unlisted >= cfg.FreezeMinUnlisted && !c.UnlistedSince.IsZero() && s.Now.Sub(c.UnlistedSince) >= cfg.FreezeAfter:
				blocked[c.Site] = "frozen"
			}
		}
		// Backoff: count failures in the window per site and per image.
		type key struct{ site, image string }
		n := map[key]int{}
		last := map[key]time.Time{}
		for _, f := range s.Failures {
			if f.At.Before(s.Now.Add(-cfg.FailureWindow)) {
				continue
			}
			k := key{f.Site, f.Image}
			n[k]++
			if f.At.After(last[k]) {
				last[k] = f.At
			}
		}
		backingOff := func(k key) bool {
			return n[k] > 0 && last[k].Add(cfg.Backoff(n[k])).After(s.Now)
		}
		for _, b := range p.Boots {
			if why, ok := blocked[b.Site]; ok {
				t.Fatalf("boot on %s cloud %s: %+v", why, b.Site, b)
			}
			if backingOff(key{b.Site, ""}) {
				t.Fatalf("boot on backing-off cloud %s: %+v", b.Site, b)
			}
			if b.Image != "" && backingOff(key{b.Site, b.Image}) {
				t.Fatalf("boot of backing-off image %s on %s", b.Image, b.Site)
			}
			// The group may use the cloud, and some shape of it may.
			for _, g := range s.Groups {
				if g.Name == b.Group && len(g.Clouds) > 0 && !siteIn(s, g.Clouds, b.Site) {
					t.Fatalf("boot for group %s on %s outside its clouds %v", b.Group, b.Site, g.Clouds)
				}
				if g.Name == b.Group && g.Paused {
					t.Fatalf("boot for paused group %s", g.Name)
				}
			}
			ok := false
			for _, sh := range s.Shapes {
				if sh.Group == b.Group && sh.VMType == b.VMType && sh.Image == b.Image && sh.Idle > 0 &&
					(len(sh.Clouds) == 0 || siteIn(s, sh.Clouds, b.Site)) {
					ok = true
				}
			}
			if !ok {
				t.Fatalf("boot %+v matches no idle shape allowed there", b)
			}
		}
	})
}

func siteIn(s Snapshot, list []string, site string) bool {
	for _, name := range list {
		if name == site || slices.Contains(s.Aliases[name], site) {
			return true
		}
	}
	return false
}

func TestPropertyRetirements(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		p := Decide(s)
		cfg := s.Config.withDefaults()
		byID := map[string]VM{}
		for _, vm := range s.VMs {
			if vm.ID != "" {
				byID[vm.Site+"/"+vm.ID] = vm
			}
		}
		cloud := func(site string) (Cloud, bool) {
			for _, c := range s.Clouds {
				if c.Site == site {
					return c, true
				}
			}
			return Cloud{}, false
		}
		seen := map[string]bool{}
		for _, r := range p.Retires {
			k := r.Site + "/" + r.VMID
			vm, ok := byID[k]
			if !ok {
				t.Fatalf("retire of unknown VM %s", k)
			}
			if seen[k] {
				t.Fatalf("VM %s acted on twice", k)
			}
			seen[k] = true
			if vm.Held {
				t.Fatalf("held VM %s retired", k)
			}
			if vm.RunningJobs == 0 && vm.State != VMBusy {
				continue
			}
			c, _ := cloud(vm.Site)
			switch r.Rule {
			case RuleMaxLifetime:
				lt := cfg.MaxLifetime
				if c.MaxLifetime > 0 {
					lt = c.MaxLifetime
				}
				if lt <= 0 || s.Now.Sub(vm.CreatedAt) < lt {
					t.Fatalf("busy VM %s retired for max lifetime %s at age %s", k, lt, s.Now.Sub(vm.CreatedAt))
				}
			case RuleDisabled:
				if !c.Disabled {
					t.Fatalf("busy VM %s retired for a cloud that is not disabled", k)
				}
			case RuleOverQuota:
				if !overQuotaDeadlinePassed(s, c, vm) {
					t.Fatalf("busy VM %s retired for quota before the deadline: %s", k, r.Reason)
				}
			case RuleUnknownDeadline:
				if !unknownDeadlinePassed(s, vm) {
					t.Fatalf("busy VM %s retired by the unknown deadline, unknown for %s: %s", k, vm.UnknownFor, r.Reason)
				}
			default:
				t.Fatalf("busy VM %s retired by rule %s: %s", k, r.Rule, r.Reason)
			}
		}
		for _, d := range p.Deletes {
			k := d.Site + "/" + d.VMID
			vm, ok := byID[k]
			if !ok {
				t.Fatalf("delete of unknown VM %s", k)
			}
			if seen[k] {
				t.Fatalf("VM %s acted on twice", k)
			}
			seen[k] = true
			if vm.Held {
				t.Fatalf("held VM %s deleted", k)
			}
			if vm.RunningJobs > 0 || vm.State == VMBusy || vm.State == VMIdle {
				switch {
				case d.Rule == RuleRetireTimeout && vm.State == VMRetiring:
				case d.Rule == RuleErrorDelay && vm.State == VMError:
				default:
					t.Fatalf("VM %s in state %s with %d jobs deleted by %s", k, vm.State, vm.RunningJobs, d.Rule)
				}
			}
		}
	})
}

func TestPropertyShortfall(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		p := Decide(s)
		bootedVMs := map[[2]string]int{}
		for _, b := range p.Boots {
			bootedVMs[[2]string{b.Group, b.VMType}] += b.Count
		}
		shapeVMs := map[[2]string]int{}
		for _, st := range p.Shapes {
			if st.Covered+st.Shortfall != st.Shape.Idle || st.Covered < 0 || st.Shortfall < 0 {
				t.Fatalf("shape %+v: covered %d + shortfall %d != idle", st.Shape, st.Covered, st.Shortfall)
			}
			// Never boot for more than the shortfall, and every VM gets a job.
			if st.BootedJobs > st.Shortfall || st.BootedVMs > st.BootedJobs || st.Waiting != st.Shortfall-st.BootedJobs {
				t.Fatalf("shape %+v: shortfall %d, booted %d VMs for %d jobs, waiting %d", st.Shape, st.Shortfall, st.BootedVMs, st.BootedJobs, st.Waiting)
			}
			if st.BootedVMs > 0 {
				shapeVMs[[2]string{st.Shape.Group, st.Shape.VMType}] += st.BootedVMs
			}
		}
		if !reflect.DeepEqual(bootedVMs, shapeVMs) {
			t.Fatalf("boots %v disagree with shapes %v", bootedVMs, shapeVMs)
		}
		// What the planner calls covered must exist: per bucket, the cores
		// and memory of the covered jobs fit in the capacity VMs.
		type res struct{ cores, mem int }
		capacity := map[[2]string]res{}
		retired := map[string]bool{}
		for _, r := range p.Retires {
			retired[r.Site+"/"+r.VMID] = true
		}
		for _, d := range p.Deletes {
			retired[d.Site+"/"+d.VMID] = true
		}
		for _, vm := range s.VMs {
			if vm.ID != "" && retired[vm.Site+"/"+vm.ID] {
				continue
			}
			c, m, _, ok := freeOf(&vm)
			if !ok {
				continue
			}
			k := [2]string{vm.Group, vm.VMType}
			capacity[k] = res{capacity[k].cores + c, capacity[k].mem + m}
		}
		covered := map[[2]string]res{}
		for _, st := range p.Shapes {
			k := [2]string{st.Shape.Group, st.Shape.VMType}
			covered[k] = res{covered[k].cores + st.Covered*st.Shape.Cpus, covered[k].mem + st.Covered*st.Shape.MemoryMiB}
		}
		for k, c := range covered {
			if c.cores > capacity[k].cores || c.mem > capacity[k].mem {
				t.Fatalf("bucket %v: covered %+v exceeds capacity %+v", k, c, capacity[k])
			}
		}
	})
}

// TestPropertyCoveredDemandBootsNothing builds snapshots where one shape per
// group and VM type has idle VMs enough for all its jobs: nothing may boot
// for it.
func TestPropertyCoveredDemandBootsNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		// One shape per bucket, with a request that fits 1-core VMs.
		seen := map[[2]string]bool{}
		var shapes []Shape
		for _, sh := range s.Shapes {
			k := [2]string{sh.Group, sh.VMType}
			if seen[k] {
				continue
			}
			seen[k] = true
			sh.Idle = min(sh.Idle, 50)
			sh.Cpus = rapid.IntRange(0, 1).Draw(t, "cpus")
			sh.MemoryMiB = rapid.IntRange(0, 2048).Draw(t, "mem")
			sh.Clouds = nil
			shapes = append(shapes, sh)
		}
		s.Shapes = shapes
		// Leave other VMs out of these buckets, then add idle VMs that
		// cover each shape, with demand that keeps them past keep-alive.
		var vms []VM
		for _, vm := range s.VMs {
			if !seen[[2]string{vm.Group, vm.VMType}] {
				vms = append(vms, vm)
			}
		}
		for i, sh := range shapes {
			for j := range sh.Idle {
				vm := testVM(fmt.Sprintf("cover-%d-%d", i, j), s.Clouds[0].Site, sh.Group, VMStarting, 1)
				vm.VMType = sh.VMType
				vm.CreatedAt = t0
				vms = append(vms, vm)
			}
		}
		s.VMs = vms
		// The covering VMs' cloud and groups are within every limit, so
		// nothing sheds them.
		s.Clouds[0].Disabled = false
		s.Clouds[0].Limits = noLimits
		s.Clouds[0].Caps = Caps{}
		s.Clouds[0].SoftQuota = Caps{}
		for i := range s.Groups {
			s.Groups[i].Caps = Caps{}
			s.Groups[i].CloudCaps = nil
		}
		p := Decide(s)
		if len(p.Boots) > 0 {
			t.Fatalf("boots for covered demand: %+v", p.Boots)
		}
		for _, st := range p.Shapes {
			if st.Shortfall != 0 {
				t.Fatalf("shape %+v: shortfall %d though covered", st.Shape, st.Shortfall)
			}
		}
	})
}

func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		p1 := Decide(s)
		p2 := Decide(s)
		if !reflect.DeepEqual(p1, p2) {
			t.Fatalf("same snapshot, different plans:\n%+v\n%+v", p1, p2)
		}
		sh := s
		sh.Shapes = rapid.Permutation(s.Shapes).Draw(t, "shapes")
		for i := range sh.Shapes {
			sh.Shapes[i].Clouds = rapid.Permutation(sh.Shapes[i].Clouds).Draw(t, "shapeClouds")
		}
		sh.Clouds = rapid.Permutation(s.Clouds).Draw(t, "clouds")
		for i := range sh.Clouds {
			sh.Clouds[i].Flavors = rapid.Permutation(sh.Clouds[i].Flavors).Draw(t, "flavors")
		}
		sh.VMs = rapid.Permutation(s.VMs).Draw(t, "vms")
		sh.Groups = rapid.Permutation(s.Groups).Draw(t, "groups")
		sh.Failures = rapid.Permutation(s.Failures).Draw(t, "failures")
		sh.VMTypes = rapid.Permutation(s.VMTypes).Draw(t, "vmtypes")
		// Split a shape's counts in two: the same demand.
		if len(sh.Shapes) > 0 && sh.Shapes[0].Idle > 1 {
			a := sh.Shapes[0]
			b := a
			a.Idle /= 2
			b.Idle -= a.Idle
			b.Running = 0
			sh.Shapes = append([]Shape{a}, append(sh.Shapes[1:], b)...)
		}
		p3 := Decide(sh)
		if !reflect.DeepEqual(p1, p3) {
			t.Fatalf("shuffled snapshot, different plan:\n%+v\n%+v", p1, p3)
		}
	})
}

// overQuotaDeadlinePassed reports whether the VM's cloud or group has been
// over its quota for longer than Config.OverQuotaDeadline.
func overQuotaDeadlinePassed(s Snapshot, c Cloud, vm VM) bool {
	cfg := s.Config.withDefaults()
	if cfg.OverQuotaDeadline <= 0 {
		return false
	}
	passed := func(since time.Time) bool { return !since.IsZero() && s.Now.Sub(since) >= cfg.OverQuotaDeadline }
	if passed(c.OverQuotaSince) {
		return true
	}
	// The VM's group or one of its ancestors (whose quota, or pool of
	// subgroups, the VM counts towards).
	for _, name := range ancestry(s, vm.Group) {
		for _, g := range s.Groups {
			if g.Name == name && passed(g.OverQuotaSince) {
				return true
			}
		}
	}
	return false
}

// unknownDeadlinePassed reports whether the VM's evidence has been unknown
// for longer than Config.UnknownDeadline.
func unknownDeadlinePassed(s Snapshot, vm VM) bool {
	dl := s.Config.withDefaults().UnknownDeadline
	return vm.Evidence == EvidenceUnknown && dl > 0 && vm.UnknownFor >= dl
}

// TestPropertyUnknownIsNotIdle: a VM whose evidence is unknown is retired
// or deleted only by a deadline an admin set: its retire deadline (delete),
// its maximum lifetime, its cloud's or group's over-quota deadline, or the
// unknown deadline (graceful retirements). And only deletions a deadline
// allows say so.
func TestPropertyUnknownIsNotIdle(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		p := Decide(s)
		cfg := s.Config.withDefaults()
		byID := map[string]VM{}
		for _, vm := range s.VMs {
			if vm.ID != "" {
				byID[vm.Site+"/"+vm.ID] = vm
			}
		}
		cloud := func(site string) Cloud {
			for _, c := range s.Clouds {
				if c.Site == site {
					return c
				}
			}
			return Cloud{}
		}
		for _, r := range p.Retires {
			vm := byID[r.Site+"/"+r.VMID]
			if vm.Evidence != EvidenceUnknown {
				continue
			}
			c := cloud(vm.Site)
			switch r.Rule {
			case RuleMaxLifetime:
				lt := cfg.MaxLifetime
				if c.MaxLifetime > 0 {
					lt = c.MaxLifetime
				}
				if lt <= 0 || s.Now.Sub(vm.CreatedAt) < lt {
					t.Fatalf("unknown VM %s retired for max lifetime %s at age %s", vm.ID, lt, s.Now.Sub(vm.CreatedAt))
				}
			case RuleOverQuota:
				if !overQuotaDeadlinePassed(s, c, vm) {
					t.Fatalf("unknown VM %s retired for quota before the deadline: %s", vm.ID, r.Reason)
				}
			case RuleUnknownDeadline:
				if !unknownDeadlinePassed(s, vm) {
					t.Fatalf("unknown VM %s retired by the unknown deadline, unknown for %s", vm.ID, vm.UnknownFor)
				}
			default:
				t.Fatalf("unknown VM %s (%s) retired by %s: %s", vm.ID, vm.State, r.Rule, r.Reason)
			}
		}
		for _, d := range p.Deletes {
			vm := byID[d.Site+"/"+d.VMID]
			if d.Deadline != (d.Rule == RuleRetireTimeout) {
				t.Fatalf("delete of %s by %s says deadline=%v", d.VMID, d.Rule, d.Deadline)
			}
			if vm.Evidence != EvidenceUnknown {
				continue
			}
			if d.Rule != RuleRetireTimeout || vm.State != VMRetiring || vm.RetiringSince.IsZero() ||
				s.Now.Sub(vm.RetiringSince) < cfg.RetireDeadline+cfg.ErrorDelay {
				t.Fatalf("unknown VM %s (%s) deleted by %s: %s", vm.ID, vm.State, d.Rule, d.Reason)
			}
		}
	})
}

// TestPropertyLiveness: idle jobs that fit a connected, enabled, unpaused
// cloud with room and boots in flight to spare, of a group that is not
// paused, capped or throttled, get a boot. The snapshot is random; one
// cloud, one shape and its group are made so.
func TestPropertyLiveness(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		if len(s.Shapes) == 0 {
			s.Shapes = append(s.Shapes, testShape(propGroups[0], 1, 1))
		}
		si := rapid.IntRange(0, len(s.Shapes)-1).Draw(t, "liveShape")
		sh := &s.Shapes[si]
		sh.Idle = max(1, sh.Idle)
		sh.Cpus = rapid.IntRange(0, 8).Draw(t, "liveCpus")
		sh.MemoryMiB = rapid.IntRange(0, 16384).Draw(t, "liveMem")
		sh.JobsPerVM = 1
		g := sh.Group
		// The group holds no VMs (nothing covers its jobs, nothing
		// throttles it) and has no caps, restrictions or pause.
		s.VMs = slices.DeleteFunc(slices.Clone(s.VMs), func(vm VM) bool { return vm.Group == g })
		for i := range s.Groups {
			if s.Groups[i].Name == g {
				s.Groups[i] = Group{Name: g, Share: s.Groups[i].Share}
			}
		}
		// One cloud that takes boots, with room for them.
		ci := rapid.IntRange(0, len(s.Clouds)-1).Draw(t, "liveCloud")
		c := &s.Clouds[ci]
		c.Connected, c.Paused, c.Disabled = true, false, false
		c.Flavors = testFlavors()
		c.Limits, c.Caps, c.SoftQuota, c.Foreign = noLimits, Caps{}, Caps{}, Usage{}
		c.Unlisted, c.UnlistedSince = 0, time.Time{}
		c.Endpoint = "live-endpoint"
		inFlight := 0
		for _, vm := range s.VMs {
			if vm.Site == c.Site && (vm.State == VMBooting || vm.State == VMStarting) {
				inFlight++
			}
		}
		// Room in flight for every group's turn before this one's.
		c.MaxInFlight = inFlight + len(propGroups)
		s.Failures = slices.DeleteFunc(slices.Clone(s.Failures), func(f Failure) bool { return f.Site == c.Site })
		if len(sh.Clouds) > 0 {
			sh.Clouds = append(slices.Clone(sh.Clouds), c.Site)
		}

		p := Decide(s)
		booted := 0
		for _, b := range p.Boots {
			if b.Group == g {
				booted += b.Count
			}
		}
		if booted == 0 {
			t.Fatalf("no boot for %d idle %s jobs of %d cpus, %d MiB that fit cloud %s; notes:\n%s",
				sh.Idle, g, sh.Cpus, sh.MemoryMiB, c.Site, notesText(p))
		}
	})
}

// TestPropertyNoChurn: a VM is not retired for being idle while idle jobs
// it fits remain without a VM (some shape of its group and VM type that
// may run on its cloud has a shortfall).
func TestPropertyNoChurn(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		p := Decide(s)
		byID := map[string]VM{}
		for _, vm := range s.VMs {
			if vm.ID != "" {
				byID[vm.Site+"/"+vm.ID] = vm
			}
		}
		for _, r := range p.Retires {
			if r.Rule != RuleKeepAlive {
				continue
			}
			vm := byID[r.Site+"/"+r.VMID]
			for _, st := range p.Shapes {
				sh := st.Shape
				fits := (vm.Cpus > 0 || vm.MemoryMiB > 0) && sh.Cpus <= vm.Cpus && sh.MemoryMiB <= vm.MemoryMiB
				if st.Shortfall > 0 && fits && sh.Group == vm.Group && sh.VMType == vm.VMType &&
					(len(sh.Clouds) == 0 || siteIn(s, sh.Clouds, vm.Site)) {
					t.Fatalf("VM %s (%d cpus, %d MiB) retired idle while %d jobs of %d cpus, %d MiB it fits wait: %s",
						vm.ID, vm.Cpus, vm.MemoryMiB, st.Shortfall, sh.Cpus, sh.MemoryMiB, r.Reason)
				}
			}
		}
	})
}
