package snapshot

import (
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/intent"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
)

// TestJobAttributesReachVMs: the jobs' keep-alive and maximum lifetime
// stay with a VM from the boot in flight (the hub's intent) to the
// server the cloud lists (its metadata, read back by the agent), so the
// planner retires it by them for its whole life.
func TestJobAttributesReachVMs(t *testing.T) {
	w := newWorld("west")
	tx := w.intent.Begin()
	tx.PutPending(intent.PendingBoot{Name: "canopy-west-p1-0-0", Site: "west", Group: "atlas", VMType: "el9", Flavor: "c4",
		Cpus: 4, MemoryMiB: 8192, KeepAlive: 7 * time.Minute, MaxLifetime: 3 * time.Hour, OrderedAt: t0})
	w.set("west",
		vmW("listed", func(v *protocol.VM) { v.KeepAlive, v.MaxLifetime = 5*time.Minute, 2*time.Hour }),
		vmW("plain"),
	)
	w.pool(map[string]int{"listed": 1, "plain": 0})
	s, _ := NewBuilder().Build(w.input())
	tests := []struct {
		name, id    string
		keep, limit time.Duration
	}{
		{name: "listed server's metadata", id: "listed", keep: 5 * time.Minute, limit: 2 * time.Hour},
		{name: "server without requests", id: "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm, ok := find(s, tt.id)
			if !ok {
				t.Fatalf("VM %s missing", tt.id)
			}
			if vm.KeepAlive != tt.keep || vm.MaxLifetime != tt.limit {
				t.Errorf("VM %s keep-alive %s max lifetime %s, want %s %s", tt.id, vm.KeepAlive, vm.MaxLifetime, tt.keep, tt.limit)
			}
		})
	}
	t.Run("boot in flight", func(t *testing.T) {
		var got *planner.VM
		for i := range s.VMs {
			if s.VMs[i].Name == "canopy-west-p1-0-0" {
				got = &s.VMs[i]
			}
		}
		if got == nil || got.KeepAlive != 7*time.Minute || got.MaxLifetime != 3*time.Hour {
			t.Fatalf("pending VM = %+v, want keep-alive 7m max lifetime 3h", got)
		}
	})
}
