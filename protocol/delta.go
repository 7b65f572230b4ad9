package protocol

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/canopy-grid/canopy/images"
)

// InventoryDelta is what changed in a cloud since the inventory (full or
// delta) numbered Base. An agent sends a full Inventory after every
// (re)connect and when the hub asks (Resync), and deltas otherwise: on
// change, and at least every inventory interval (then often empty, to say
// nothing changed). The receiver applies a delta only on top of the
// inventory numbered Base; anything else is a missed delta, answered with
// a Resync.
type InventoryDelta struct {
	Seq  uint64 `cbor:"seq"`
	Base uint64 `cbor:"base"`
	// Changed are VMs added or changed; Removed the ids of VMs gone.
	Changed []VM     `cbor:"changed,omitempty"`
	Removed []string `cbor:"removed,omitempty"`
	// Flavors, Limits, Images, Storage and Policy are set only when they
	// changed (nil: unchanged).
	Flavors []Flavor       `cbor:"flavors,omitempty"`
	Limits  *Limits        `cbor:"limits,omitempty"`
	Images  []images.Image `cbor:"images,omitempty"`
	Storage *StorageReport `cbor:"storage,omitempty"`
	Policy  *SitePolicy    `cbor:"policy,omitempty"`
	// Running replaces Inventory.Running (commands still being carried out).
	Running []string `cbor:"running,omitempty"`
	// Checksum, when not zero, is VMChecksum of the VMs after the delta:
	// a receiver whose result differs asks for a full inventory.
	Checksum uint64    `cbor:"checksum,omitempty"`
	TakenAt  time.Time `cbor:"taken_at"`
	// APIMillis is Inventory.APIMillis, carried in every delta.
	APIMillis int `cbor:"api_ms,omitempty"`
}

// Resync asks an agent for a full inventory (the hub missed a delta, or
// its copy does not match the agent's checksum).
type Resync struct {
	Reason string `cbor:"reason"`
}

// Kind implements Message.
func (InventoryDelta) Kind() Kind { return KindInventoryDelta }

// Kind implements Message.
func (Resync) Kind() Kind { return KindResync }

// VMChecksum is a checksum of a set of VMs, independent of their order:
// agent and hub compare theirs to find a missed delta.
func VMChecksum(vms []VM) uint64 {
	sorted := slices.Clone(vms)
	slices.SortFunc(sorted, func(a, b VM) int { return cmp.Compare(a.ID, b.ID) })
	d := xxhash.New()
	var n [8]byte
	for i := range sorted {
		b, err := encMode.Marshal(&sorted[i])
		if err != nil {
			// A VM always encodes; a failure would be a programming error,
			// and the checksum then simply never matches (resync).
			return 0
		}
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		_, _ = d.Write(n[:])
		_, _ = d.Write(b)
	}
	return d.Sum64() | 1 // never zero: zero means "no checksum"
}

// ApplyDelta returns inv with d applied. It fails, changing nothing, when
// d does not follow inv (d.Base != inv.Seq) or when the result does not
// match d's checksum: the caller then asks for a full inventory.
func ApplyDelta(inv Inventory, d InventoryDelta) (Inventory, error) {
	if d.Base != inv.Seq {
		return inv, fmt.Errorf("delta %d applies to inventory %d, have %d", d.Seq, d.Base, inv.Seq)
	}
	byID := make(map[string]VM, len(inv.VMs)+len(d.Changed))
	for _, vm := range inv.VMs {
		byID[vm.ID] = vm
	}
	for _, id := range d.Removed {
		delete(byID, id)
	}
	for _, vm := range d.Changed {
		byID[vm.ID] = vm
	}
	out := inv
	out.Seq, out.TakenAt = d.Seq, d.TakenAt
	if d.APIMillis != 0 {
		out.APIMillis = d.APIMillis
	}
	out.VMs = make([]VM, 0, len(byID))
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		out.VMs = append(out.VMs, byID[id])
	}
	if d.Flavors != nil {
		out.Flavors = d.Flavors
	}
	if d.Limits != nil {
		out.Limits = *d.Limits
	}
	if d.Images != nil {
		out.Images = d.Images
	}
	if d.Storage != nil {
		out.Storage = d.Storage
	}
	if d.Policy != nil {
		out.Policy = d.Policy
	}
	out.Running = d.Running
	if d.Checksum != 0 {
		if got := VMChecksum(out.VMs); got != d.Checksum {
			return inv, fmt.Errorf("after delta %d the VM checksum is %x, the agent's is %x", d.Seq, got, d.Checksum)
		}
	}
	return out, nil
}

// Differ computes the deltas an agent sends: it remembers the last
// inventory it described and returns what changed since.
type Differ struct {
	last    Inventory
	vms     map[string]VM
	started bool
}

// Full records inv as sent in full (after a (re)connect or a Resync).
func (df *Differ) Full(inv Inventory) {
	df.last, df.started = inv, true
	df.vms = make(map[string]VM, len(inv.VMs))
	for _, vm := range inv.VMs {
		df.vms[vm.ID] = vm
	}
}

// Started reports whether a full inventory was recorded.
func (df *Differ) Started() bool { return df.started }

// Delta returns the delta from the last inventory sent to inv (numbered
// inv.Seq). With checksum, the delta carries the VM checksum. empty
// reports whether nothing changed. The caller records what it sent with
// Sent: a delta not sent must not become the base of the next one.
func (df *Differ) Delta(inv Inventory, checksum bool) (d InventoryDelta, empty bool) {
	d = InventoryDelta{Seq: inv.Seq, Base: df.last.Seq, TakenAt: inv.TakenAt, Running: inv.Running, APIMillis: inv.APIMillis}
	seen := make(map[string]bool, len(inv.VMs))
	for _, vm := range inv.VMs {
		seen[vm.ID] = true
		if old, ok := df.vms[vm.ID]; !ok || !sameVM(old, vm) {
			d.Changed = append(d.Changed, vm)
		}
	}
	for id := range df.vms {
		if !seen[id] {
			d.Removed = append(d.Removed, id)
		}
	}
	slices.Sort(d.Removed)
	if !slices.Equal(inv.Flavors, df.last.Flavors) {
		d.Flavors = inv.Flavors
		if d.Flavors == nil {
			d.Flavors = []Flavor{}
		}
	}
	if inv.Limits != df.last.Limits {
		l := inv.Limits
		d.Limits = &l
	}
	if !slices.EqualFunc(inv.Images, df.last.Images, imageEqual) {
		d.Images = inv.Images
		if d.Images == nil {
			d.Images = []images.Image{}
		}
	}
	if inv.Storage != nil && !storageEqual(inv.Storage, df.last.Storage) {
		d.Storage = inv.Storage
	}
	if inv.Policy != nil && (df.last.Policy == nil || *inv.Policy != *df.last.Policy) {
		d.Policy = inv.Policy
	}
	empty = len(d.Changed) == 0 && len(d.Removed) == 0 && d.Flavors == nil && d.Limits == nil && d.Images == nil &&
		d.Storage == nil && d.Policy == nil && slices.Equal(inv.Running, df.last.Running)
	if checksum {
		d.Checksum = VMChecksum(inv.VMs)
	}
	return d, empty
}

// Sent records inv as the last inventory described to the receiver (by a
// delta or in full): the base of the next delta.
func (df *Differ) Sent(inv Inventory) { df.Full(inv) }

func sameVM(a, b VM) bool {
	ab, err1 := encMode.Marshal(&a)
	bb, err2 := encMode.Marshal(&b)
	return err1 == nil && err2 == nil && string(ab) == string(bb)
}

func imageEqual(a, b images.Image) bool {
	ab, err1 := encMode.Marshal(&a)
	bb, err2 := encMode.Marshal(&b)
	return err1 == nil && err2 == nil && string(ab) == string(bb)
}

func storageEqual(a, b *StorageReport) bool {
	if b == nil {
		return false
	}
	ab, err1 := encMode.Marshal(a)
	bb, err2 := encMode.Marshal(b)
	return err1 == nil && err2 == nil && string(ab) == string(bb)
}
