package protocol

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/images"
)

// TestDecodeRefusesBadNumbers: every message kind that carries numbers
// refuses non-finite floats and negative counts, sizes and durations where
// they make no sense; the error names the field.
func TestDecodeRefusesBadNumbers(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	ptr := func(f float64) *float64 { return &f }
	inv := func(mutate func(*Inventory)) Inventory {
		i := sampleInventory(1)
		mutate(&i)
		return i
	}
	squids := func(p SquidProxy) SquidList {
		if p.Address == "" {
			p.Address = "10.0.0.1:3128"
		}
		return SquidList{Upstream: "cvmfs", Proxies: []SquidProxy{p}}
	}
	withSquid := func(s SquidInfo) Inventory {
		return inv(func(i *Inventory) { i.Squids = []SquidInfo{s} })
	}
	withVolume := func(v VolumeHealth) Inventory {
		return inv(func(i *Inventory) { i.Storage = &StorageReport{Status: StorageUp, Volumes: []VolumeHealth{v}} })
	}
	withGeoRep := func(g GeoRepHealth) Inventory {
		return inv(func(i *Inventory) { i.Storage = &StorageReport{Status: StorageUp, GeoReps: []GeoRepHealth{g}} })
	}
	cases := []struct {
		name string
		m    Message
		want string
	}{
		{"squid list NaN load", squids(SquidProxy{Load: nan}), "load is NaN"},
		{"squid list +Inf cost", squids(SquidProxy{Cost: inf}), "cost is +Inf"},
		{"squid list -Inf distance", squids(SquidProxy{DistanceKm: -inf}), "distance_km is -Inf"},
		{"squid list negative load", squids(SquidProxy{Load: -1}), "load is -1"},
		{"squid list negative distance", squids(SquidProxy{DistanceKm: -2}), "distance_km is -2, want -1 (unknown) or >= 0"},
		{"squid list proxy without address", SquidList{Upstream: "cvmfs", Proxies: []SquidProxy{{}}}, "address of 0 bytes"},
		{"squid list proxy address too long", squids(SquidProxy{Address: strings.Repeat("a", 301)}), "address of 301 bytes, want 1 to 300"},
		{"squid list without upstream", SquidList{}, "upstream kind"},
		{"inventory squid NaN load", withSquid(SquidInfo{Name: "s", Load: nan}), "squid load is NaN"},
		{"inventory squid Inf max load", withSquid(SquidInfo{Name: "s", MaxLoad: inf}), "squid max_load is +Inf"},
		{"inventory squid NaN latitude", withSquid(SquidInfo{Name: "s", Latitude: ptr(nan), Longitude: ptr(0)}), "squid latitude is NaN"},
		{"inventory squid Inf longitude", withSquid(SquidInfo{Name: "s", Latitude: ptr(0), Longitude: ptr(-inf)}), "squid longitude is -Inf"},
		{"inventory too many squids", inv(func(i *Inventory) { i.Squids = make([]SquidInfo, 1001) }), "1001 squids"},
		{"inventory negative flavor cpus", inv(func(i *Inventory) { i.Flavors[0].VCPUs = -2 }), "flavor vcpus is -2"},
		{"inventory negative flavor ram", inv(func(i *Inventory) { i.Flavors[0].RAMMiB = -1 }), "flavor ram_mib is -1"},
		{"inventory negative image size", inv(func(i *Inventory) { i.Images[0].SizeBytes = -1 }), "size_bytes is -1"},
		{"inventory negative policy keep alive", inv(func(i *Inventory) { i.Policy = &SitePolicy{KeepAlive: -time.Second} }), "keep_alive is -1s"},
		{"inventory negative policy cores", inv(func(i *Inventory) { i.Policy = &SitePolicy{CoresSoftMax: -1} }), "cores_soft_max is -1"},
		{"storage negative cycle", inv(func(i *Inventory) { i.Storage = &StorageReport{CycleMillis: -1} }), "cycle_ms is -1"},
		{"storage negative replica count", withVolume(VolumeHealth{Name: "v", ReplicaCount: -1}), "replica is -1"},
		{"storage negative bricks online", withVolume(VolumeHealth{Name: "v", BricksOnline: -1}), "bricks_online is -1"},
		{"storage heal pending below unknown", withVolume(VolumeHealth{Name: "v", HealPending: -2}), "heal_pending is -2, want >= -1"},
		{"storage brick split brain below unknown", withVolume(VolumeHealth{Name: "v", Bricks: []BrickHealth{{SplitBrain: -7}}}), "split_brain is -7"},
		{"storage negative brick set", withVolume(VolumeHealth{Name: "v", Bricks: []BrickHealth{{Set: -1}}}), "set is -1"},
		{"storage georep lag below unknown", withGeoRep(GeoRepHealth{PrimaryVolume: "v", LagSeconds: -2}), "lag_s is -2"},
		{"storage georep worker failures below unknown", withGeoRep(GeoRepHealth{PrimaryVolume: "v", Workers: []GeoRepWorker{{Failures: -9}}}), "failures is -9"},
		{"welcome negative heartbeat", Welcome{Version: 1, HeartbeatEvery: -time.Second}, "heartbeat_every is -1s"},
		{"welcome negative inventory", Welcome{Version: 1, InventoryEvery: -time.Second}, "inventory_every is -1s"},
		{"delta negative flavor disk", InventoryDelta{Seq: 2, Base: 1, Flavors: []Flavor{{DiskGiB: -1}}}, "inventory delta 2 flavor 0: flavor disk_gib is -1"},
		{"delta negative image size", InventoryDelta{Seq: 2, Base: 1, Images: []images.Image{{SizeBytes: -1}}}, "size_bytes is -1"},
		{"delta storage below unknown", InventoryDelta{Seq: 2, Base: 1, Storage: &StorageReport{Volumes: []VolumeHealth{{SplitBrain: -2}}}}, "split_brain is -2"},
		{"delta negative policy keep alive", InventoryDelta{Seq: 2, Base: 1, Policy: &SitePolicy{KeepAlive: -time.Minute}}, "keep_alive is -1m0s"},
		{"delta not after its base", InventoryDelta{Seq: 1, Base: 1}, "does not follow its base"},
		{"retire negative deadline", Command{ID: "c", Op: CmdRetire, Retire: &RetireCommand{VMIDs: []string{"x"}, Deadline: -time.Hour}}, "deadline -1h0m0s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := Encode(nil, Version, c.m)
			if err != nil {
				t.Fatal(err)
			}
			_, m, err := Decode(b)
			if err == nil {
				t.Fatalf("decoded %#v", m)
			}
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Code != CodeMalformed {
				t.Fatalf("error %v is not a malformed FrameError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// TestDecodeKeepsDocumentedSentinels: -1 for unknown entry counts, lags
// and distances, negative maxima for unlimited, and zero periods and
// deadlines still decode; so do numbers a working peer may pass on from
// elsewhere (squids whose finite numbers the squid registry refuses, a
// cloud's negative usage, a VM's own job counts): refusing them would cost
// the site its whole inventory.
func TestDecodeKeepsDocumentedSentinels(t *testing.T) {
	lat, lon := -33.9, 151.2
	i := sampleInventory(1)
	i.Limits = Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: -1, UsedCores: -2} // old Nova could count below zero
	i.VMs[0].Jobs = &VMJobs{Running: -1}                                            // a VM's own report: the agent's to check
	bad := 95.0
	i.Squids = []SquidInfo{{Name: "s", Load: 10, MaxLoad: 100, Latitude: &lat, Longitude: &lon},
		{Name: "r", Load: -1, Latitude: &bad, Longitude: &lon}}
	i.Storage = &StorageReport{Status: StorageUnknown,
		Volumes: []VolumeHealth{{Name: "v", HealPending: -1, PossiblyHealing: -1, SplitBrain: -1,
			Bricks: []BrickHealth{{Name: "h:/b", HealPending: -1, SplitBrain: -1, PossiblyHealing: -1}}}},
		GeoReps: []GeoRepHealth{{PrimaryVolume: "v", LagSeconds: -1,
			Workers: []GeoRepWorker{{LagSeconds: -1, Entry: -1, Data: -1, Meta: -1, Failures: -1}}}}}
	delta := InventoryDelta{Seq: 8, Base: 7, Changed: i.VMs, Limits: &i.Limits, Storage: i.Storage}
	for _, m := range []Message{i, delta, Resync{Reason: "checksum"}, Welcome{Version: 1},
		Command{ID: "c", Op: CmdRetire, Retire: &RetireCommand{VMIDs: []string{"x"}}},
		SquidList{Upstream: "cvmfs", Proxies: []SquidProxy{{Address: "a:1", DistanceKm: -1},
			{Name: strings.Repeat("n", 253), Address: "[" + strings.Repeat("a", 253) + "]:65535"}}}} {
		b, err := Encode(nil, Version, m)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Decode(b); err != nil {
			t.Errorf("%s: %v", m.Kind(), err)
		}
	}
}
