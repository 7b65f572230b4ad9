package gluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// synthVolume builds a started volume of n bricks on host h with the given
// layout, and a snapshot in which the bricks marked online are online.
func synthVolume(name, typ string, replica, arbiter, disperse, redundancy int, online []bool, opts map[string]string) (Volume, VolumeStatus) {
	v := Volume{Name: name, State: "Started", Type: typ, ReplicaCount: replica, ArbiterCount: arbiter,
		DisperseCount: disperse, RedundancyCount: redundancy, BrickCount: len(online), Options: opts}
	vs := VolumeStatus{Name: name}
	size := setSize(v)
	for i, on := range online {
		path := fmt.Sprintf("/b%d/%s", i, name)
		arb := arbiter > 0 && i%size == size-1
		v.Bricks = append(v.Bricks, VolumeBrick{Name: "h:" + path, HostUUID: "u", Arbiter: arb})
		pid := 100 + i
		if !on {
			pid = -1
		}
		vs.Bricks = append(vs.Bricks, ProcessStatus{Hostname: "h", Path: path, PeerID: "u", Online: on, PID: pid})
	}
	return v, vs
}

func healOf(v Volume, pending []int64) []HealBrick {
	var hb []HealBrick
	for i, b := range v.Bricks {
		h := HealBrick{Name: b.Name, Status: "Connected", Connected: true, Pending: pending[i], Total: pending[i]}
		if pending[i] < 0 {
			h = HealBrick{Name: b.Name, Status: "Transport endpoint is not connected", Total: -1, Pending: -1, SplitBrain: -1, PossiblyHealing: -1}
		}
		hb = append(hb, h)
	}
	return hb
}

func TestAssessVolume(t *testing.T) {
	up, dn := true, false
	tests := []struct {
		name       string
		typ        string
		replica    int
		arbiter    int
		disperse   int
		redundancy int
		online     []bool
		opts       map[string]string
		pending    []int64 // nil: no heal info
		th         Thresholds
		want       protocol.StorageStatus
		quorumLost bool
		reason     string // a substring of one reason
		healTotal  int64
	}{
		{name: "distribute, all up", typ: "Distribute", replica: 1, online: []bool{up, up}, want: protocol.StorageUp},
		{name: "distribute, one brick down: its files are gone", typ: "Distribute", replica: 1, online: []bool{up, dn},
			want: protocol.StorageDegraded, reason: "brick h:/b1/v offline: its files are unavailable"},
		{name: "distribute, all down", typ: "Distribute", replica: 1, online: []bool{dn, dn}, want: protocol.StorageDown, reason: "no brick online"},
		{name: "replica 2, default quorum none, one down", typ: "Replicate", replica: 2, online: []bool{dn, up}, pending: []int64{-1, 3},
			want: protocol.StoragePartial, reason: "brick h:/b0/v offline", healTotal: 3},
		{name: "replica 2, quorum auto, first brick down", typ: "Replicate", replica: 2, online: []bool{dn, up},
			opts: map[string]string{"cluster.quorum-type": "auto"}, pending: []int64{-1, 0},
			want: protocol.StorageDegraded, quorumLost: true, reason: "client quorum lost in replica set 0 (1 of 2 bricks online, quorum-type auto)"},
		{name: "replica 2, quorum auto, second brick down keeps quorum", typ: "Replicate", replica: 2, online: []bool{up, dn},
			opts: map[string]string{"cluster.quorum-type": "auto"}, pending: []int64{0, -1},
			want: protocol.StoragePartial},
		{name: "replica 3, fixed quorum 3, one down", typ: "Replicate", replica: 3, online: []bool{up, up, dn},
			opts: map[string]string{"cluster.quorum-type": "fixed", "cluster.quorum-count": "3"}, pending: []int64{0, 0, -1},
			want: protocol.StorageDegraded, quorumLost: true},
		{name: "arbiter alone holds no data", typ: "Replicate", replica: 3, arbiter: 1, online: []bool{dn, dn, up}, pending: []int64{-1, -1, 0},
			want: protocol.StorageDegraded, reason: "replica set 0 has no data brick online"},
		{name: "2x3 distributed-replicate: pending counted once per set", typ: "Distributed-Replicate", replica: 3,
			online: []bool{up, up, up, up, up, up}, pending: []int64{5, 3, 0, 0, 2, 2},
			want: protocol.StoragePartial, reason: "7 entries pending heal", healTotal: 7},
		{name: "one pending entry", typ: "Replicate", replica: 3, online: []bool{up, up, up}, pending: []int64{1, 0, 1},
			want: protocol.StoragePartial, reason: "1 entry pending heal", healTotal: 1},
		{name: "pending over the degraded threshold", typ: "Replicate", replica: 3, online: []bool{up, up, up}, pending: []int64{24, 0, 24},
			th: Thresholds{HealPendingDegraded: 10}, want: protocol.StorageDegraded, reason: "24 entries pending heal", healTotal: 24},
		{name: "pending check turned off", typ: "Replicate", replica: 3, online: []bool{up, up, up}, pending: []int64{24, 0, 24},
			th: Thresholds{HealPendingPartial: -1, HealPendingDegraded: -1}, want: protocol.StorageUp, healTotal: 24},
		{name: "disperse 4+2, two down: redundancy spent", typ: "Disperse", disperse: 6, redundancy: 2,
			online: []bool{up, up, up, up, dn, dn}, pending: []int64{0, 0, 0, 0, -1, -1}, want: protocol.StoragePartial},
		{name: "disperse 4+2, three down: data gone", typ: "Disperse", disperse: 6, redundancy: 2,
			online: []bool{up, up, up, dn, dn, dn}, pending: []int64{0, 0, 0, -1, -1, -1},
			want: protocol.StorageDegraded, reason: "disperse set 0 has 3 of 6 bricks online, needs 4"},
		{name: "replicated but no heal answer from any brick", typ: "Replicate", replica: 3, online: []bool{up, up, up}, pending: []int64{-1, -1, -1},
			want: protocol.StorageUnknown, reason: "no brick could report pending heals", healTotal: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, vs := synthVolume("v", tc.typ, tc.replica, tc.arbiter, tc.disperse, tc.redundancy, tc.online, tc.opts)
			s := Snapshot{Volumes: []Volume{v}, Status: []VolumeStatus{vs}, Daemons: []VolumeStatus{vs}}
			if tc.pending != nil {
				s.Heal = map[string][]HealBrick{"v": healOf(v, tc.pending)}
			}
			r := Assess(s, tc.th)
			if len(r.Volumes) != 1 {
				t.Fatalf("%d volumes", len(r.Volumes))
			}
			vh := r.Volumes[0]
			if vh.Status != tc.want {
				t.Errorf("status %s, want %s (reasons %q)", vh.Status, tc.want, vh.Reasons)
			}
			if vh.QuorumLost != tc.quorumLost {
				t.Errorf("quorum lost %v, want %v", vh.QuorumLost, tc.quorumLost)
			}
			if tc.reason != "" && !slices.ContainsFunc(vh.Reasons, func(s string) bool { return strings.Contains(s, tc.reason) }) {
				t.Errorf("reasons %q lack %q", vh.Reasons, tc.reason)
			}
			if tc.pending != nil && vh.HealPending != tc.healTotal {
				t.Errorf("heal pending %d, want %d", vh.HealPending, tc.healTotal)
			}
			if r.Status != Worse(protocol.StorageUp, vh.Status) {
				t.Errorf("site %s, volume %s", r.Status, vh.Status)
			}
		})
	}
}

func TestAssessVolumeStates(t *testing.T) {
	v, vs := synthVolume("v", "Replicate", 3, 0, 0, 0, []bool{true, true, true}, nil)
	created := v
	created.State = "Created"
	tests := []struct {
		name   string
		s      Snapshot
		want   protocol.StorageStatus
		reason string
	}{
		{"never started", Snapshot{Volumes: []Volume{created}}, protocol.StorageDown, "volume is Created"},
		{"status command failed", Snapshot{Volumes: []Volume{v}, StatusErr: errors.New("timed out after 30s"), Daemons: []VolumeStatus{vs},
			Heal: map[string][]HealBrick{"v": healOf(v, []int64{0, 0, 0})}}, protocol.StorageUnknown, "brick status unavailable: timed out after 30s"},
		{"heal failed but a brick is known down", Snapshot{Volumes: []Volume{v}, Status: []VolumeStatus{{Name: "v", Bricks: []ProcessStatus{vs.Bricks[0], vs.Bricks[1]}}},
			Daemons: []VolumeStatus{vs}, HealErr: map[string]error{"v": errors.New("exit 1: boom")}}, protocol.StoragePartial, "heal info unavailable: exit 1: boom"},
		{"started volume missing from status", Snapshot{Volumes: []Volume{v}, Status: []VolumeStatus{}, Daemons: []VolumeStatus{vs},
			Heal: map[string][]HealBrick{"v": healOf(v, []int64{0, 0, 0})}}, protocol.StorageUnknown, "missing from volume status"},
		{"volume info failed", Snapshot{VolumesErr: errors.New("malformed XML")}, protocol.StorageUnknown, "volume list unavailable"},
		{"peer disconnected", Snapshot{Volumes: []Volume{v}, Status: []VolumeStatus{vs}, Daemons: []VolumeStatus{vs},
			Heal:  map[string][]HealBrick{"v": healOf(v, []int64{0, 0, 0})},
			Peers: []Peer{{UUID: "p", Hostname: "peer2", State: "Peer in Cluster"}}}, protocol.StoragePartial, "peer peer2 (Peer in Cluster) disconnected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Assess(tc.s, Thresholds{})
			if r.Status != tc.want {
				t.Errorf("site %s, want %s (reasons %q)", r.Status, tc.want, r.Reasons)
			}
			if !slices.ContainsFunc(r.Reasons, func(s string) bool { return strings.Contains(s, tc.reason) }) {
				t.Errorf("reasons %q lack %q", r.Reasons, tc.reason)
			}
		})
	}
}

func TestAssessGeoRep(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	w := func(status string, synced time.Duration, cp string, cpAge time.Duration) GeoRepPair {
		p := GeoRepPair{PrimaryVolume: "pv", Secondary: "h::sv", Status: status, CheckpointCompleted: cp}
		if synced >= 0 {
			p.LastSynced = now.Add(-synced)
		}
		if cp != "" {
			p.CheckpointTime = now.Add(-cpAge)
		}
		return p
	}
	tests := []struct {
		name    string
		workers []GeoRepPair
		th      Thresholds
		want    protocol.StorageStatus
		reason  string
		lag     int64
		cpDone  bool
	}{
		{"active and passive", []GeoRepPair{w("Active", time.Minute, "", 0), w("Passive", -1, "", 0)}, Thresholds{}, protocol.StorageUp, "", 60, false},
		{"lag over the partial threshold", []GeoRepPair{w("Active", 2*time.Hour, "", 0)}, Thresholds{}, protocol.StoragePartial, "last synced 2h0m0s ago, more than 30m0s", 7200, false},
		{"lag over the degraded threshold", []GeoRepPair{w("Active", 2*time.Hour, "", 0)}, Thresholds{GeoRepLagDegraded: time.Hour}, protocol.StorageDegraded, "more than 1h0m0s", 7200, false},
		{"lag check off", []GeoRepPair{w("Active", 2*time.Hour, "", 0)}, Thresholds{GeoRepLagPartial: -1}, protocol.StorageUp, "", 7200, false},
		{"passive worker lag ignored", []GeoRepPair{w("Active", time.Minute, "", 0), w("Passive", 5*time.Hour, "", 0)}, Thresholds{}, protocol.StorageUp, "", 60, false},
		{"checkpoint overdue", []GeoRepPair{w("Active", time.Minute, "No", 2*time.Hour)}, Thresholds{}, protocol.StoragePartial, "not completed after 2h0m0s", 60, false},
		{"checkpoint completed", []GeoRepPair{w("Active", time.Minute, "Yes", 2*time.Hour), w("Active", time.Minute, "Yes", 2*time.Hour)}, Thresholds{}, protocol.StorageUp, "", 60, true},
		{"checkpoint half done", []GeoRepPair{w("Active", time.Minute, "Yes", time.Minute), w("Active", time.Minute, "No", time.Minute)}, Thresholds{}, protocol.StorageUp, "", 60, false},
		{"one faulty", []GeoRepPair{w("Active", time.Minute, "", 0), w("Faulty", -1, "", 0)}, Thresholds{}, protocol.StorageDegraded, "1 of 2 workers Faulty", 60, false},
		{"created", []GeoRepPair{w("Created", -1, "", 0)}, Thresholds{}, protocol.StorageDown, "no worker syncing (1 Created)", -1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Assess(Snapshot{TakenAt: now, GeoRep: tc.workers}, tc.th)
			if len(r.GeoReps) != 1 {
				t.Fatalf("%d sessions", len(r.GeoReps))
			}
			g := r.GeoReps[0]
			if g.Status != tc.want {
				t.Errorf("status %s, want %s (%q)", g.Status, tc.want, g.Reasons)
			}
			if tc.reason != "" && !slices.ContainsFunc(g.Reasons, func(s string) bool { return strings.Contains(s, tc.reason) }) {
				t.Errorf("reasons %q lack %q", g.Reasons, tc.reason)
			}
			if g.LagSeconds != tc.lag {
				t.Errorf("lag %d, want %d", g.LagSeconds, tc.lag)
			}
			if g.CheckpointCompleted != tc.cpDone {
				t.Errorf("checkpoint completed %v, want %v", g.CheckpointCompleted, tc.cpDone)
			}
		})
	}
}

func TestWorse(t *testing.T) {
	order := []protocol.StorageStatus{protocol.StorageUp, protocol.StorageUnknown, protocol.StoragePartial, protocol.StorageDegraded, protocol.StorageDown}
	for i, a := range order {
		for j, b := range order {
			want := a
			if j > i {
				want = b
			}
			if got := Worse(a, b); got != want {
				t.Errorf("Worse(%s, %s) = %s, want %s", a, b, got, want)
			}
		}
	}
}
