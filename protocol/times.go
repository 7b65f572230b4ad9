package protocol

import (
	"fmt"
	"time"

	"github.com/canopy-grid/canopy/images"
)

// Times on the wire are RFC 3339 text (the encoder's choice), but the
// decoder also takes CBOR epoch numbers, as RFC 8949 allows. Those decode
// into the local zone, and can name years that no RFC 3339 text (and no
// JSON the hub serves) can hold: a VM created in the year 33658 would break
// every later encoding of it. So every decoded time is checked to lie in
// the years 0 to 9999 and moved to UTC, which also makes a decoded message
// encode and decode to itself.

// normalizer is implemented by messages that carry times.
type normalizer interface {
	normalizeTimes() error
}

// normTime checks that *t can be written as RFC 3339 text and moves it to
// UTC.
func normTime(name string, t *time.Time) error {
	if t.IsZero() {
		*t = time.Time{}
		return nil
	}
	if y := t.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("%s is in the year %d, want 0 to 9999", name, y)
	}
	*t = t.UTC()
	return nil
}

func (h *Heartbeat) normalizeTimes() error { return normTime("heartbeat sent_at", &h.SentAt) }

func (l *SquidList) normalizeTimes() error { return normTime("squid list at", &l.At) }

func (inv *Inventory) normalizeTimes() error {
	if err := normTime("inventory taken_at", &inv.TakenAt); err != nil {
		return err
	}
	if err := normVMTimes(inv.VMs); err != nil {
		return fmt.Errorf("inventory %w", err)
	}
	if err := normImageTimes(inv.Images); err != nil {
		return fmt.Errorf("inventory %w", err)
	}
	if inv.Storage != nil {
		return inv.Storage.normalizeTimes()
	}
	return nil
}

func (d *InventoryDelta) normalizeTimes() error {
	if err := normTime("inventory delta taken_at", &d.TakenAt); err != nil {
		return err
	}
	if err := normVMTimes(d.Changed); err != nil {
		return fmt.Errorf("inventory delta %w", err)
	}
	if err := normImageTimes(d.Images); err != nil {
		return fmt.Errorf("inventory delta %w", err)
	}
	if d.Storage != nil {
		return d.Storage.normalizeTimes()
	}
	return nil
}

func normImageTimes(ims []images.Image) error {
	for i := range ims {
		if err := normTime("created_at", &ims[i].CreatedAt); err != nil {
			return fmt.Errorf("image %d: %w", i, err)
		}
	}
	return nil
}

func (p *ImageProgress) normalizeTimes() error { return normTime("image progress at", &p.At) }

func normVMTimes(vms []VM) error {
	for i := range vms {
		v := &vms[i]
		for _, f := range []struct {
			name string
			t    *time.Time
		}{{"created_at", &v.CreatedAt}, {"ready_at", &v.ReadyAt}, {"last_seen", &v.LastSeen}} {
			if err := normTime(f.name, f.t); err != nil {
				return fmt.Errorf("VM %d: %w", i, err)
			}
		}
		if v.Jobs != nil {
			if err := normTime("jobs at", &v.Jobs.At); err != nil {
				return fmt.Errorf("VM %d: %w", i, err)
			}
		}
	}
	return nil
}

func (r *StorageReport) normalizeTimes() error {
	if err := normTime("storage taken_at", &r.TakenAt); err != nil {
		return err
	}
	for i := range r.GeoReps {
		g := &r.GeoReps[i]
		if err := normTime("storage geo-replication checkpoint_time", &g.CheckpointTime); err != nil {
			return err
		}
		for j := range g.Workers {
			w := &g.Workers[j]
			if err := normTime("storage geo-replication worker last_synced", &w.LastSynced); err != nil {
				return err
			}
			if err := normTime("storage geo-replication worker checkpoint_completed_at", &w.CheckpointCompletedAt); err != nil {
				return err
			}
		}
	}
	return nil
}
