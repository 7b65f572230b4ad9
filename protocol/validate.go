package protocol

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/canopy-grid/canopy/images"
)

// This file holds the checks every decoded message passes (DecodeBody calls
// Message.Validate) on top of what the CBOR decoder enforces: sizes,
// required fields, and numbers that make sense. A float must be finite: NaN
// compares false with everything and would poison every ranking and sort it
// reaches, and ±Inf turns sums and ratios into NaN. Counts, sizes and
// durations must not be negative, except where a field documents -1 (or
// any negative value) as "unknown" or "unlimited".
//
// A refused message ends the session (the peer reconnects and sends it
// again), so a check here must never refuse what a working peer can send:
// what a cloud, a config or a single VM could get wrong is checked where it
// enters (the drivers, the config validation, the check-in handler) or left
// to the consumer.

// Limits on string sizes inside messages, on top of the frame limit.
const (
	maxNameLen = 255
	maxTextLen = 4096
	// maxAddrLen bounds a squid's name and address: a 253-byte host name,
	// IPv6 brackets and a port fit.
	maxAddrLen = 300
	// maxSquids bounds the squids in a SquidList or an Inventory.
	maxSquids = 1000
)

// finite reports whether f is a number other than NaN, +Inf and -Inf.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// checkFloat refuses a non-finite f, and a negative one unless negOK.
func checkFloat(name string, f float64, negOK bool) error {
	if !finite(f) {
		return fmt.Errorf("%s is %v, want a finite number", name, f)
	}
	if !negOK && f < 0 {
		return fmt.Errorf("%s is %v, want >= 0", name, f)
	}
	return nil
}

// checkCount refuses a count below floor (0, or -1 where -1 means unknown).
func checkCount(name string, n, floor int64) error {
	if n < floor {
		return fmt.Errorf("%s is %d, want >= %d", name, n, floor)
	}
	return nil
}

// checkDuration refuses a negative duration.
func checkDuration(name string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s is %s, want >= 0", name, d)
	}
	return nil
}

// Validate checks a Hello.
func (h Hello) Validate() error {
	if len(h.Versions) == 0 || len(h.Versions) > 16 {
		return fmt.Errorf("hello offers %d versions, want 1 to 16", len(h.Versions))
	}
	if h.Site == "" || len(h.Site) > maxNameLen {
		return errors.New("hello needs a site name of 1 to 255 bytes")
	}
	if len(h.Epoch) > maxNameLen {
		return fmt.Errorf("hello has an epoch of %d bytes", len(h.Epoch))
	}
	return nil
}

// Validate checks a Welcome: the periods it asks for are not negative
// (zero leaves the agent's default).
func (w Welcome) Validate() error {
	if err := checkDuration("welcome heartbeat_every", w.HeartbeatEvery); err != nil {
		return err
	}
	return checkDuration("welcome inventory_every", w.InventoryEvery)
}

// Validate checks an Inventory and everything in it.
func (inv Inventory) Validate() error {
	if err := validateParts("inventory", inv.Flavors, &inv.Limits, inv.VMs, inv.Images, inv.Storage, inv.Policy); err != nil {
		return err
	}
	if len(inv.Squids) > maxSquids {
		return fmt.Errorf("inventory lists %d squids, limit %d", len(inv.Squids), maxSquids)
	}
	for i, s := range inv.Squids {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("inventory squid %d: %w", i, err)
		}
	}
	return nil
}

// Validate checks an InventoryDelta: it follows its base, names its VMs,
// and what it carries passes the checks of a full Inventory.
func (d InventoryDelta) Validate() error {
	if d.Seq <= d.Base {
		return fmt.Errorf("inventory delta %d does not follow its base %d", d.Seq, d.Base)
	}
	for _, id := range d.Removed {
		if id == "" || len(id) > maxNameLen {
			return fmt.Errorf("inventory delta %d removes a VM id of %d bytes", d.Seq, len(id))
		}
	}
	for _, vm := range d.Changed {
		if vm.ID == "" || len(vm.ID) > maxNameLen {
			return fmt.Errorf("inventory delta %d changes a VM id of %d bytes", d.Seq, len(vm.ID))
		}
	}
	return validateParts(fmt.Sprintf("inventory delta %d", d.Seq), d.Flavors, d.Limits, d.Changed, d.Images, d.Storage, d.Policy)
}

// Validate checks a Resync's reason text size.
func (r Resync) Validate() error {
	if len(r.Reason) > maxTextLen {
		return fmt.Errorf("resync reason is %d bytes, limit %d", len(r.Reason), maxTextLen)
	}
	return nil
}

// validateParts checks what a full inventory and a delta both carry
// (nil: absent from a delta).
func validateParts(what string, flavors []Flavor, limits *Limits, vms []VM, ims []images.Image, storage *StorageReport, policy *SitePolicy) error {
	for i, f := range flavors {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("%s flavor %d: %w", what, i, err)
		}
	}
	if limits != nil {
		if err := limits.Validate(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	for i, vm := range vms {
		if err := vm.Validate(); err != nil {
			return fmt.Errorf("%s VM %d: %w", what, i, err)
		}
	}
	for i, im := range ims {
		if err := im.Validate(); err != nil {
			return fmt.Errorf("%s image %d: %w", what, i, err)
		}
	}
	if storage != nil {
		if err := storage.Validate(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if policy != nil {
		if err := policy.Validate(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// Validate checks a Flavor's sizes.
func (f Flavor) Validate() error {
	for _, c := range []struct {
		name string
		n    int
	}{{"vcpus", f.VCPUs}, {"ram_mib", f.RAMMiB}, {"disk_gib", f.DiskGiB}} {
		if err := checkCount("flavor "+c.name, int64(c.n), 0); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks Limits. Nothing is refused: maxima may be negative
// (unlimited), and usage is the cloud's own count, which older Nova
// releases could drive below zero; refusing it would cost the site its
// whole inventory.
func (l Limits) Validate() error { return nil }

// Validate checks a VM. Its job counts are not refused here: they are the
// VM's own report, and one VM must not be able to cost its site the whole
// inventory; the agent checks them when the VM checks in.
func (v VM) Validate() error { return nil }

// Validate checks a SitePolicy.
func (p SitePolicy) Validate() error {
	if err := checkDuration("policy keep_alive", p.KeepAlive); err != nil {
		return err
	}
	return checkCount("policy cores_soft_max", int64(p.CoresSoftMax), 0)
}

// Validate checks a SquidInfo's numbers are finite. Their ranges, and the
// rest (host, port, kinds, access), are the squid registry's to judge
// (squidreg.Registration.Normalize): a squid it refuses is logged and
// left out, while a message refused here would cost the agent its whole
// inventory.
func (s SquidInfo) Validate() error {
	for _, f := range []struct {
		name string
		v    *float64
	}{{"load", &s.Load}, {"max_load", &s.MaxLoad}, {"latitude", s.Latitude}, {"longitude", s.Longitude}} {
		if f.v == nil {
			continue
		}
		if err := checkFloat("squid "+f.name, *f.v, true); err != nil {
			return fmt.Errorf("%w (squid %.64q)", err, s.Name)
		}
	}
	return nil
}

// Validate checks a Command: exactly its own body, names within bounds,
// no negative deadline.
func (c Command) Validate() error {
	if c.ID == "" || len(c.ID) > maxNameLen {
		return errors.New("command needs an id of 1 to 255 bytes")
	}
	set := 0
	for _, p := range []bool{c.Boot != nil, c.Retire != nil, c.Delete != nil, c.ImageCopy != nil, c.ImageDelete != nil} {
		if p {
			set++
		}
	}
	ok := set == 1 &&
		(c.Op == CmdBoot && c.Boot != nil ||
			c.Op == CmdRetire && c.Retire != nil ||
			c.Op == CmdDelete && c.Delete != nil ||
			c.Op == CmdImageCopy && c.ImageCopy != nil ||
			c.Op == CmdImageDelete && c.ImageDelete != nil)
	if !ok {
		return fmt.Errorf("command %q of kind %q must carry exactly its own body", c.ID, c.Op)
	}
	if c.ImageCopy != nil {
		if err := c.ImageCopy.Validate(); err != nil {
			return fmt.Errorf("command %q: %w", c.ID, err)
		}
	}
	if c.ImageDelete != nil {
		if err := c.ImageDelete.Validate(); err != nil {
			return fmt.Errorf("command %q: %w", c.ID, err)
		}
	}
	if len(c.Epoch) > maxNameLen {
		return fmt.Errorf("command %q has an epoch of %d bytes", c.ID, len(c.Epoch))
	}
	if c.Delete != nil && c.Delete.Override != "" && c.Delete.Override != DeleteDeadline {
		return fmt.Errorf("delete command %q has override %.40q, want empty or %q", c.ID, c.Delete.Override, DeleteDeadline)
	}
	if c.Retire != nil && c.Retire.Deadline < 0 {
		return fmt.Errorf("retire command %q has deadline %s, want >= 0", c.ID, c.Retire.Deadline)
	}
	if c.Boot != nil {
		if len(c.Boot.Names) == 0 {
			return fmt.Errorf("boot command %q names no servers", c.ID)
		}
		for _, n := range c.Boot.Names {
			if n == "" || len(n) > maxNameLen {
				return fmt.Errorf("boot command %q has a server name of %d bytes", c.ID, len(n))
			}
		}
		if err := checkDuration(fmt.Sprintf("boot command %q keep_alive", c.ID), c.Boot.KeepAlive); err != nil {
			return err
		}
		if err := checkDuration(fmt.Sprintf("boot command %q max_lifetime", c.ID), c.Boot.MaxLifetime); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a Result.
func (r Result) Validate() error {
	if r.CommandID == "" {
		return errors.New("result names no command")
	}
	if len(r.Refused) > 100000 {
		return fmt.Errorf("result refuses %d servers, limit 100000", len(r.Refused))
	}
	for _, f := range r.Refused {
		if f.VMID == "" || len(f.VMID) > maxNameLen || len(f.Reason) > maxTextLen {
			return errors.New("result refusal needs a VM id of 1 to 255 bytes and a reason of at most 4096")
		}
	}
	if len(r.Error) > maxTextLen {
		return fmt.Errorf("result error text is %d bytes, limit %d", len(r.Error), maxTextLen)
	}
	return nil
}

// Validate checks a Heartbeat (nothing in it can be wrong).
func (Heartbeat) Validate() error { return nil }

// Validate checks an Error frame's text size.
func (e Error) Validate() error {
	if len(e.Message) > maxTextLen {
		return fmt.Errorf("error text is %d bytes, limit %d", len(e.Message), maxTextLen)
	}
	return nil
}

// Validate checks a SquidList: an upstream kind, at most 1000 proxies, each
// valid.
func (l SquidList) Validate() error {
	if l.Upstream == "" || len(l.Upstream) > maxNameLen {
		return fmt.Errorf("squid list needs an upstream kind of 1 to 255 bytes, has %d bytes", len(l.Upstream))
	}
	if len(l.Proxies) > maxSquids {
		return fmt.Errorf("squid list for %.40q has %d proxies, limit %d", l.Upstream, len(l.Proxies), maxSquids)
	}
	for i, p := range l.Proxies {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("squid list for %.40q, proxy %d: %w", l.Upstream, i, err)
		}
	}
	return nil
}

// Validate checks a SquidProxy: an address, and ranking figures that are
// finite and not negative (distance -1: unknown).
func (p SquidProxy) Validate() error {
	if p.Address == "" || len(p.Address) > maxAddrLen {
		return fmt.Errorf("address of %d bytes, want 1 to %d", len(p.Address), maxAddrLen)
	}
	if len(p.Name) > maxAddrLen {
		return fmt.Errorf("name of %d bytes, limit %d", len(p.Name), maxAddrLen)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"cost", p.Cost}, {"load", p.Load}} {
		if err := checkFloat(f.name, f.v, false); err != nil {
			return err
		}
	}
	if err := checkFloat("distance_km", p.DistanceKm, true); err != nil {
		return err
	}
	if p.DistanceKm < 0 && p.DistanceKm != -1 {
		return fmt.Errorf("distance_km is %v, want -1 (unknown) or >= 0", p.DistanceKm)
	}
	return nil
}

// Validate checks a StorageReport's counts: sizes and counts are not
// negative, entry counts and lags are -1 (unknown) or more.
func (r StorageReport) Validate() error {
	if err := checkCount("storage cycle_ms", r.CycleMillis, 0); err != nil {
		return err
	}
	for i, v := range r.Volumes {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("storage volume %d: %w", i, err)
		}
	}
	for i, g := range r.GeoReps {
		if err := g.Validate(); err != nil {
			return fmt.Errorf("storage geo-replication %d: %w", i, err)
		}
	}
	return nil
}

// Validate checks a VolumeHealth's counts.
func (v VolumeHealth) Validate() error {
	for _, c := range []struct {
		name     string
		n, floor int64
	}{
		{"replica", int64(v.ReplicaCount), 0}, {"arbiter", int64(v.ArbiterCount), 0},
		{"disperse", int64(v.DisperseCount), 0}, {"redundancy", int64(v.RedundancyCount), 0},
		{"bricks_online", int64(v.BricksOnline), 0}, {"bricks_total", int64(v.BricksTotal), 0},
		{"shd_online", int64(v.SelfHealOnline), 0}, {"shd_total", int64(v.SelfHealTotal), 0},
		{"heal_pending", v.HealPending, -1}, {"possibly_healing", v.PossiblyHealing, -1},
		{"split_brain", v.SplitBrain, -1},
	} {
		if err := checkCount(c.name, c.n, c.floor); err != nil {
			return fmt.Errorf("volume %.64q: %w", v.Name, err)
		}
	}
	for i, b := range v.Bricks {
		if err := b.Validate(); err != nil {
			return fmt.Errorf("volume %.64q brick %d: %w", v.Name, i, err)
		}
	}
	return nil
}

// Validate checks a BrickHealth's counts.
func (b BrickHealth) Validate() error {
	for _, c := range []struct {
		name     string
		n, floor int64
	}{
		{"set", int64(b.Set), 0}, {"heal_pending", b.HealPending, -1},
		{"split_brain", b.SplitBrain, -1}, {"possibly_healing", b.PossiblyHealing, -1},
	} {
		if err := checkCount(c.name, c.n, c.floor); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a GeoRepHealth's lag and its workers' counts.
func (g GeoRepHealth) Validate() error {
	if err := checkCount("lag_s", g.LagSeconds, -1); err != nil {
		return fmt.Errorf("session %.64q: %w", g.PrimaryVolume, err)
	}
	for i, w := range g.Workers {
		for _, c := range []struct {
			name string
			n    int64
		}{{"lag_s", w.LagSeconds}, {"entry", w.Entry}, {"data", w.Data}, {"meta", w.Meta}, {"failures", w.Failures}} {
			if err := checkCount(c.name, c.n, -1); err != nil {
				return fmt.Errorf("session %.64q worker %d: %w", g.PrimaryVolume, i, err)
			}
		}
	}
	return nil
}
