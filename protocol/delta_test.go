package protocol

import (
	"testing"
	"time"
)

func testInv(seq uint64, vms ...VM) Inventory {
	return Inventory{Seq: seq, Flavors: []Flavor{{Name: "c2", VCPUs: 2, RAMMiB: 4096}},
		Limits: Limits{MaxCores: 100}, VMs: vms, TakenAt: time.Unix(int64(seq), 0).UTC()}
}

// TestDeltaRoundTrip: whatever changes between two inventories, the hub's
// copy after the delta equals the agent's, and the checksum agrees.
func TestDeltaRoundTrip(t *testing.T) {
	a := VM{ID: "a", Name: "vm-a", State: VMActive}
	b := VM{ID: "b", Name: "vm-b", State: VMBooting}
	c := VM{ID: "c", Name: "vm-c", State: VMActive, Jobs: &VMJobs{Running: 2}}
	steps := []Inventory{
		testInv(1, a, b),
		testInv(2, a, b), // nothing changed
		testInv(3, a, VM{ID: "b", Name: "vm-b", State: VMActive, Ready: true}, c), // changed and added
		testInv(4, c), // removed
	}
	steps[3].Limits.MaxCores = 50
	for i := range steps {
		steps[i].APIMillis = 10 * (i + 1) // the cloud API's time, carried in every delta
	}
	var df Differ
	df.Full(steps[0])
	hub := steps[0]
	for i, next := range steps[1:] {
		d, empty := df.Delta(next, true)
		df.Sent(next)
		if empty != (i == 0) {
			t.Fatalf("step %d: empty %v", i+1, empty)
		}
		got, err := ApplyDelta(hub, d)
		if err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
		if VMChecksum(got.VMs) != VMChecksum(next.VMs) || got.Limits != next.Limits || got.Seq != next.Seq || got.APIMillis != next.APIMillis {
			t.Fatalf("step %d: hub copy %+v, agent %+v", i+1, got, next)
		}
		hub = got
	}
}

// TestMissedDeltaRefused: a delta on another base, or one whose result
// does not match its checksum, changes nothing and says why.
func TestMissedDeltaRefused(t *testing.T) {
	inv := testInv(5, VM{ID: "a", Name: "vm-a"})
	if _, err := ApplyDelta(inv, InventoryDelta{Seq: 7, Base: 6}); err == nil {
		t.Fatal("a delta on another base applied")
	}
	d := InventoryDelta{Seq: 6, Base: 5, Changed: []VM{{ID: "b", Name: "vm-b"}}, Checksum: VMChecksum([]VM{{ID: "a"}})}
	got, err := ApplyDelta(inv, d)
	if err == nil || got.Seq != 5 || len(got.VMs) != 1 {
		t.Fatalf("checksum mismatch applied: %+v %v", got, err)
	}
}

func TestDeltaFrameValidation(t *testing.T) {
	for _, d := range []InventoryDelta{{Seq: 3, Base: 3}, {Seq: 4, Base: 3, Removed: []string{""}}, {Seq: 4, Base: 3, Changed: []VM{{}}}} {
		b, err := Encode(nil, Version, d)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Decode(b); err == nil {
			t.Errorf("delta %+v accepted", d)
		}
	}
	b, _ := Encode(nil, Version, InventoryDelta{Seq: 4, Base: 3, Removed: []string{"x"}})
	if _, m, err := Decode(b); err != nil || m.(InventoryDelta).Removed[0] != "x" {
		t.Fatalf("good delta: %v", err)
	}
}

// TestUnsentDeltaIsNotABase: a delta the agent decides not to send (empty)
// must not become the base of the next one, or the hub would miss it.
func TestUnsentDeltaIsNotABase(t *testing.T) {
	var df Differ
	df.Full(testInv(1, VM{ID: "a"}))
	if _, empty := df.Delta(testInv(2, VM{ID: "a"}), false); !empty {
		t.Fatal("nothing changed, delta not empty")
	}
	d, _ := df.Delta(testInv(3, VM{ID: "a"}, VM{ID: "b"}), false)
	if d.Base != 1 {
		t.Fatalf("delta based on %d, the last one sent is 1", d.Base)
	}
}
