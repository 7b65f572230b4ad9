package gluster

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// Thresholds tune the health model. In Config a zero field takes its
// default (DefaultThresholds) and a negative one turns the check off.
type Thresholds struct {
	// HealPendingPartial: a volume with at least this many entries pending
	// heal is partial. Default 1: a replica is not in sync while anything
	// is pending. (Busy volumes show short-lived entries; alert rules wait
	// with "for:" rather than raise this.)
	HealPendingPartial int64 `json:"heal_pending_partial" yaml:"heal_pending_partial"`
	// HealPendingDegraded: at least this many pending entries make a volume
	// degraded: self-heal will take long enough for a second failure to
	// lose data. Default 10000.
	HealPendingDegraded int64 `json:"heal_pending_degraded" yaml:"heal_pending_degraded"`
	// SplitBrainDegraded: at least this many entries in split-brain make a
	// volume degraded. Default 1: split-brain files fail with EIO.
	SplitBrainDegraded int64 `json:"split_brain_degraded" yaml:"split_brain_degraded"`
	// GeoRepLagPartial: a geo-replication session whose Active workers
	// last synced longer ago than this is partial. Default 30m. Gluster's
	// last-synced time only moves when there is something to sync, so an
	// idle primary also ages it; see CheckpointOverdue for a test that
	// does not have that blind spot.
	GeoRepLagPartial time.Duration `json:"georep_lag_partial" yaml:"georep_lag_partial"`
	// GeoRepLagDegraded: lag beyond this makes the session degraded.
	// Default off (negative), for the reason above.
	GeoRepLagDegraded time.Duration `json:"georep_lag_degraded" yaml:"georep_lag_degraded"`
	// CheckpointOverdue: a checkpoint set longer ago than this and not
	// completed makes the session partial. Default 1h.
	CheckpointOverdue time.Duration `json:"checkpoint_overdue" yaml:"checkpoint_overdue"`
}

// DefaultThresholds returns the documented defaults.
func DefaultThresholds() Thresholds {
	return Thresholds{
		HealPendingPartial:  1,
		HealPendingDegraded: 10000,
		SplitBrainDegraded:  1,
		GeoRepLagPartial:    30 * time.Minute,
		GeoRepLagDegraded:   -1,
		CheckpointOverdue:   time.Hour,
	}
}

// withDefaults fills zero fields from DefaultThresholds.
func (t Thresholds) withDefaults() Thresholds {
	d := DefaultThresholds()
	if t.HealPendingPartial == 0 {
		t.HealPendingPartial = d.HealPendingPartial
	}
	if t.HealPendingDegraded == 0 {
		t.HealPendingDegraded = d.HealPendingDegraded
	}
	if t.SplitBrainDegraded == 0 {
		t.SplitBrainDegraded = d.SplitBrainDegraded
	}
	if t.GeoRepLagPartial == 0 {
		t.GeoRepLagPartial = d.GeoRepLagPartial
	}
	if t.GeoRepLagDegraded == 0 {
		t.GeoRepLagDegraded = d.GeoRepLagDegraded
	}
	if t.CheckpointOverdue == 0 {
		t.CheckpointOverdue = d.CheckpointOverdue
	}
	return t
}

// Snapshot is what one collection cycle read from gluster, parsed, with
// the error of each command that failed. Assess turns it into a report.
type Snapshot struct {
	TakenAt time.Time
	// Volumes from "volume info".
	Volumes    []Volume
	VolumesErr error
	// Status from "volume status all detail" (bricks, sizes).
	Status    []VolumeStatus
	StatusErr error
	// Daemons from "volume status all" (the detail form leaves out the
	// self-heal daemons).
	Daemons    []VolumeStatus
	DaemonsErr error
	// Heal from "heal VOL info summary", by volume.
	Heal    map[string][]HealBrick
	HealErr map[string]error
	// SplitBrain from "heal VOL info split-brain", by volume; run only for
	// volumes whose summary counts split-brain entries.
	SplitBrain    map[string][]HealBrick
	SplitBrainErr map[string]error
	// Peers from "peer status".
	Peers    []Peer
	PeersErr error
	// GeoRep from "volume geo-replication status detail".
	GeoRep    []GeoRepPair
	GeoRepErr error
	// Errors are failures not tied to one of the fields above.
	Errors []string
}

// rank orders statuses from best to worst; unknown sits between up and
// partial, so that a known problem outranks it.
func rank(s protocol.StorageStatus) int {
	switch s {
	case protocol.StorageUp:
		return 0
	case protocol.StorageUnknown:
		return 1
	case protocol.StoragePartial:
		return 2
	case protocol.StorageDegraded:
		return 3
	case protocol.StorageDown:
		return 4
	}
	return 1
}

// Worse returns the worse of two statuses (down > degraded > partial >
// unknown > up).
func Worse(a, b protocol.StorageStatus) protocol.StorageStatus {
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// verdict accumulates a status and the reasons for it.
type verdict struct {
	status  protocol.StorageStatus
	reasons []string
	unknown bool
}

func newVerdict() verdict { return verdict{status: protocol.StorageUp} }

func (v *verdict) add(s protocol.StorageStatus, format string, args ...any) {
	v.status = Worse(v.status, s)
	v.reasons = append(v.reasons, fmt.Sprintf(format, args...))
}

// unknownf records something the agent could not read: the status becomes
// unknown unless a real problem is known.
func (v *verdict) unknownf(format string, args ...any) {
	v.unknown = true
	v.reasons = append(v.reasons, fmt.Sprintf(format, args...))
}

func (v *verdict) final() protocol.StorageStatus {
	if v.status == protocol.StorageUp && v.unknown {
		return protocol.StorageUnknown
	}
	return v.status
}

// Assess builds the health model from a snapshot.
func Assess(s Snapshot, th Thresholds) protocol.StorageReport {
	th = th.withDefaults()
	r := protocol.StorageReport{
		TakenAt:    s.TakenAt,
		GlusterdUp: true,
		Volumes:    []protocol.VolumeHealth{},
		GeoReps:    []protocol.GeoRepHealth{},
		Peers:      []protocol.PeerHealth{},
		Errors:     append([]string(nil), s.Errors...),
	}
	site := newVerdict()
	if errors.Is(s.VolumesErr, ErrGlusterdDown) {
		r.GlusterdUp = false
		r.Status = protocol.StorageUnknown
		r.Reasons = []string{"glusterd is not reachable"}
		return r
	}
	if s.VolumesErr != nil {
		site.unknownf("volume list unavailable: %v", s.VolumesErr)
	}
	for _, v := range s.Volumes {
		vh := assessVolume(v, s, th)
		r.Volumes = append(r.Volumes, vh)
		site.status = Worse(site.status, vh.Status)
		if vh.Status == protocol.StorageUnknown {
			site.unknown = true
		}
		for _, why := range vh.Reasons {
			site.reasons = append(site.reasons, "volume "+v.Name+": "+why)
		}
	}
	if s.PeersErr != nil {
		site.unknownf("peer status unavailable: %v", s.PeersErr)
	}
	for _, p := range s.Peers {
		r.Peers = append(r.Peers, protocol.PeerHealth{UUID: p.UUID, Hostname: p.Hostname, Connected: p.Connected, State: p.State})
		if !p.Connected {
			site.add(protocol.StoragePartial, "peer %s (%s) disconnected", p.Hostname, p.State)
		}
	}
	if s.GeoRepErr != nil {
		site.unknownf("geo-replication status unavailable: %v", s.GeoRepErr)
	}
	for _, g := range assessGeoReps(s.GeoRep, s.TakenAt, th) {
		r.GeoReps = append(r.GeoReps, g)
		site.status = Worse(site.status, g.Status)
		for _, why := range g.Reasons {
			site.reasons = append(site.reasons, "geo-replication "+g.PrimaryVolume+" -> "+g.Secondary+": "+why)
		}
	}
	r.Status = site.final()
	r.Reasons = site.reasons
	return r
}

// hasHeal is true for volume types that self-heal (replicate, disperse).
func hasHeal(v Volume) bool { return v.ReplicaCount > 1 || v.DisperseCount > 0 }

// setSize is the number of bricks in one replica or disperse set.
func setSize(v Volume) int {
	switch {
	case v.DisperseCount > 0:
		return v.DisperseCount
	case v.ReplicaCount > 1:
		return v.ReplicaCount
	}
	return 1
}

// quorumType is the client quorum AFR applies: the volume option, else
// auto for more than two replicas, else none.
func quorumType(v Volume) string {
	if v.ReplicaCount < 2 {
		return ""
	}
	if q := v.Options["cluster.quorum-type"]; q != "" {
		return q
	}
	if v.ReplicaCount > 2 {
		return "auto"
	}
	return "none"
}

func assessVolume(v Volume, s Snapshot, th Thresholds) protocol.VolumeHealth {
	vh := protocol.VolumeHealth{
		Name:            v.Name,
		Type:            v.Type,
		State:           v.State,
		ReplicaCount:    v.ReplicaCount,
		ArbiterCount:    v.ArbiterCount,
		DisperseCount:   v.DisperseCount,
		RedundancyCount: v.RedundancyCount,
		BricksTotal:     len(v.Bricks),
		HealPending:     -1,
		PossiblyHealing: -1,
		SplitBrain:      -1,
		QuorumType:      quorumType(v),
		Bricks:          make([]protocol.BrickHealth, len(v.Bricks)),
	}
	size := setSize(v)
	for i, b := range v.Bricks {
		vh.Bricks[i] = protocol.BrickHealth{Name: b.Name, Arbiter: b.Arbiter, Set: i / size, HealPending: -1, SplitBrain: -1, PossiblyHealing: -1}
	}
	if !hasHeal(v) {
		vh.HealPending, vh.PossiblyHealing, vh.SplitBrain = 0, 0, 0
	}
	vd := newVerdict()
	if v.State != "Started" {
		vd.add(protocol.StorageDown, "volume is %s", orDash(v.State))
		vh.Status, vh.Reasons = vd.final(), vd.reasons
		return vh
	}
	if len(v.Bricks) == 0 {
		vd.unknownf("volume info lists no bricks")
	}

	// Bricks online, from volume status detail.
	statusKnown := s.StatusErr == nil
	if !statusKnown {
		vd.unknownf("brick status unavailable: %v", s.StatusErr)
		vh.BricksOnline = -1
	} else {
		vs, found := findStatus(s.Status, v.Name)
		if !found {
			// "status all" leaves out only stopped volumes.
			vd.unknownf("started volume missing from volume status")
			statusKnown = false
			vh.BricksOnline = -1
		}
		for i, b := range v.Bricks {
			p, ok := matchBrick(vs.Bricks, b)
			if !ok {
				continue
			}
			vh.Bricks[i].Online = p.Online
			vh.Bricks[i].SizeTotal, vh.Bricks[i].SizeFree = p.SizeTotal, p.SizeFree
			if p.Online {
				vh.BricksOnline++
			}
		}
	}

	// Self-heal daemons, from volume status (not detail).
	if hasHeal(v) && v.Options["cluster.self-heal-daemon"] != "off" {
		if s.DaemonsErr != nil {
			vd.unknownf("self-heal daemon status unavailable: %v", s.DaemonsErr)
			vh.SelfHealOnline, vh.SelfHealTotal = -1, -1
		} else if vs, found := findStatus(s.Daemons, v.Name); found {
			for _, d := range vs.Daemons {
				if d.Hostname != shdName {
					continue
				}
				vh.SelfHealTotal++
				if d.Online {
					vh.SelfHealOnline++
				}
			}
		}
	}

	// Heal counts, from heal info summary.
	healKnown := false
	if hasHeal(v) {
		if err := s.HealErr[v.Name]; err != nil {
			vd.unknownf("heal info unavailable: %v", err)
		} else if hb, ok := s.Heal[v.Name]; ok {
			healKnown = true
			byName := make(map[string]HealBrick, len(hb))
			for _, b := range hb {
				byName[b.Name] = b
			}
			for i := range vh.Bricks {
				b, ok := byName[vh.Bricks[i].Name]
				if !ok {
					continue
				}
				vh.Bricks[i].HealStatus = b.Status
				if b.Connected {
					vh.Bricks[i].HealPending = b.Pending
					vh.Bricks[i].SplitBrain = b.SplitBrain
					vh.Bricks[i].PossiblyHealing = b.PossiblyHealing
				}
			}
			vh.HealPending = perSetMax(vh.Bricks, func(b protocol.BrickHealth) int64 { return b.HealPending })
			vh.SplitBrain = perSetMax(vh.Bricks, func(b protocol.BrickHealth) int64 { return b.SplitBrain })
			vh.PossiblyHealing = perSetMax(vh.Bricks, func(b protocol.BrickHealth) int64 { return b.PossiblyHealing })
		}
		if err := s.SplitBrainErr[v.Name]; err != nil {
			vd.unknownf("split-brain list unavailable: %v", err)
		}
		vh.SplitBrainFiles = splitBrainFiles(s.SplitBrain[v.Name])
	}

	// Judge.
	if statusKnown {
		if len(v.Bricks) > 0 && vh.BricksOnline == 0 {
			vd.add(protocol.StorageDown, "no brick online")
		} else {
			judgeSets(v, &vh, &vd)
		}
	}
	if vh.SelfHealTotal > 0 && vh.SelfHealOnline < vh.SelfHealTotal {
		vd.add(protocol.StoragePartial, "self-heal daemon offline on %d of %d servers", vh.SelfHealTotal-vh.SelfHealOnline, vh.SelfHealTotal)
	}
	if healKnown {
		if over(vh.SplitBrain, th.SplitBrainDegraded) {
			vd.add(protocol.StorageDegraded, "%s in split-brain", entries(vh.SplitBrain))
		}
		switch {
		case over(vh.HealPending, th.HealPendingDegraded):
			vd.add(protocol.StorageDegraded, "%s pending heal", entries(vh.HealPending))
		case over(vh.HealPending, th.HealPendingPartial):
			vd.add(protocol.StoragePartial, "%s pending heal", entries(vh.HealPending))
		}
		if vh.HealPending < 0 {
			vd.unknownf("no brick could report pending heals")
		}
	}
	vh.Status, vh.Reasons = vd.final(), vd.reasons
	return vh
}

// over is true when n reaches an enabled threshold.
func over(n, threshold int64) bool { return threshold > 0 && n >= threshold }

// judgeSets checks each replica or disperse set: data reachable, client
// quorum met, every brick online.
func judgeSets(v Volume, vh *protocol.VolumeHealth, vd *verdict) {
	size := setSize(v)
	qt := vh.QuorumType
	for start := 0; start < len(vh.Bricks); start += size {
		end := min(start+size, len(vh.Bricks))
		set := vh.Bricks[start:end]
		n, data := 0, 0
		for _, b := range set {
			if b.Online {
				n++
				if !b.Arbiter {
					data++
				}
			}
		}
		idx := start / size
		switch {
		case v.DisperseCount > 0:
			need := len(set) - v.RedundancyCount
			if n < need {
				vd.add(protocol.StorageDegraded, "disperse set %d has %d of %d bricks online, needs %d: its files are unavailable", idx, n, len(set), need)
			}
		case v.ReplicaCount > 1:
			if data == 0 {
				vd.add(protocol.StorageDegraded, "replica set %d has no data brick online: its files are unavailable", idx)
			} else if !quorumMet(v, set, n) {
				vh.QuorumLost = true
				vd.add(protocol.StorageDegraded, "client quorum lost in replica set %d (%d of %d bricks online, quorum-type %s): writes fail", idx, n, len(set), qt)
			}
		default:
			if n == 0 {
				vd.add(protocol.StorageDegraded, "brick %s offline: its files are unavailable", set[0].Name)
			}
		}
		for _, b := range set {
			if !b.Online && (v.ReplicaCount > 1 || v.DisperseCount > 0) {
				vd.add(protocol.StoragePartial, "brick %s offline", b.Name)
			}
		}
	}
}

// quorumMet applies AFR's client quorum to one replica set with n bricks
// online.
func quorumMet(v Volume, set []protocol.BrickHealth, n int) bool {
	switch quorumType(v) {
	case "auto":
		// More than half, or exactly half including the first brick.
		return 2*n > len(set) || (2*n == len(set) && set[0].Online)
	case "fixed":
		c, err := strconv.Atoi(v.Options["cluster.quorum-count"])
		if err != nil || c < 1 {
			return n >= 1
		}
		return n >= c
	}
	return n >= 1
}

// perSetMax sums, over replica sets, the highest known value among a set's
// bricks: the same entry is counted once per brick that holds it. -1 when
// no brick knows.
func perSetMax(bricks []protocol.BrickHealth, get func(protocol.BrickHealth) int64) int64 {
	total, known := int64(0), false
	maxBySet := map[int]int64{}
	for _, b := range bricks {
		n := get(b)
		if n < 0 {
			continue
		}
		known = true
		if m, ok := maxBySet[b.Set]; !ok || n > m {
			maxBySet[b.Set] = n
		}
	}
	if !known {
		return -1
	}
	for _, m := range maxBySet {
		total += m
	}
	return total
}

// maxSplitBrainFiles bounds the file names a report carries per volume.
const maxSplitBrainFiles = 20

func splitBrainFiles(bricks []HealBrick) []string {
	seen := map[string]bool{}
	var files []string
	for _, b := range bricks {
		for _, f := range b.Files {
			if seen[f] || len(files) >= maxSplitBrainFiles {
				continue
			}
			seen[f] = true
			files = append(files, f)
		}
	}
	sort.Strings(files)
	return files
}

func findStatus(all []VolumeStatus, name string) (VolumeStatus, bool) {
	for _, vs := range all {
		if vs.Name == name {
			return vs, true
		}
	}
	return VolumeStatus{}, false
}

// matchBrick finds a brick's process: by peer UUID and path, else by
// host:path (status may print another name for the host than info).
func matchBrick(procs []ProcessStatus, b VolumeBrick) (ProcessStatus, bool) {
	host, path := b.hostPath()
	for _, p := range procs {
		if p.Path == path && b.HostUUID != "" && p.PeerID == b.HostUUID {
			return p, true
		}
	}
	for _, p := range procs {
		if p.Path == path && p.Hostname == host {
			return p, true
		}
	}
	return ProcessStatus{}, false
}

// Worker statuses gluster prints (Initializing without its dots).
const (
	WorkerActive       = "Active"
	WorkerPassive      = "Passive"
	WorkerFaulty       = "Faulty"
	WorkerCreated      = "Created"
	WorkerInitializing = "Initializing"
	WorkerStopped      = "Stopped"
	WorkerPaused       = "Paused"
)

func assessGeoReps(pairs []GeoRepPair, now time.Time, th Thresholds) []protocol.GeoRepHealth {
	type key struct{ primary, secondary string }
	var order []key
	groups := map[key][]GeoRepPair{}
	for _, p := range pairs {
		k := key{p.PrimaryVolume, p.Secondary}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].primary != order[j].primary {
			return order[i].primary < order[j].primary
		}
		return order[i].secondary < order[j].secondary
	})
	res := make([]protocol.GeoRepHealth, 0, len(order))
	for _, k := range order {
		res = append(res, assessSession(groups[k], now, th))
	}
	return res
}

func assessSession(ps []GeoRepPair, now time.Time, th Thresholds) protocol.GeoRepHealth {
	g := protocol.GeoRepHealth{
		PrimaryVolume: ps[0].PrimaryVolume,
		Secondary:     ps[0].Secondary,
		SecondaryUser: ps[0].SecondaryUser,
		LagSeconds:    -1,
		Workers:       make([]protocol.GeoRepWorker, 0, len(ps)),
	}
	counts := map[string]int{}
	var statuses []string
	cpYes, cpNo, activeNoCp := 0, 0, 0
	for _, p := range ps {
		w := protocol.GeoRepWorker{
			PrimaryNode:           p.PrimaryNode,
			PrimaryBrick:          p.PrimaryBrick,
			SecondaryNode:         p.SecondaryNode,
			Status:                p.Status,
			CrawlStatus:           p.CrawlStatus,
			LastSynced:            p.LastSynced,
			LagSeconds:            -1,
			Entry:                 p.Entry,
			Data:                  p.Data,
			Meta:                  p.Meta,
			Failures:              p.Failures,
			CheckpointCompleted:   p.CheckpointCompleted == "Yes",
			CheckpointCompletedAt: p.CheckpointCompletedTime,
		}
		if !p.LastSynced.IsZero() {
			w.LagSeconds = max(0, int64(now.Sub(p.LastSynced)/time.Second))
			if p.Status == WorkerActive && w.LagSeconds > g.LagSeconds {
				g.LagSeconds = w.LagSeconds
			}
		}
		if counts[p.Status] == 0 {
			statuses = append(statuses, p.Status)
		}
		counts[p.Status]++
		switch p.CheckpointCompleted {
		case "Yes":
			cpYes++
		case "No":
			cpNo++
		default:
			if p.Status == WorkerActive {
				activeNoCp++
			}
		}
		if p.CheckpointTime.After(g.CheckpointTime) {
			g.CheckpointTime = p.CheckpointTime
		}
		g.Workers = append(g.Workers, w)
	}
	g.CheckpointSet = cpYes+cpNo > 0 || !g.CheckpointTime.IsZero()
	g.CheckpointCompleted = g.CheckpointSet && cpNo == 0 && cpYes > 0 && activeNoCp == 0

	n := len(ps)
	var parts []string
	for _, st := range statuses {
		parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
	}
	summary := strings.Join(parts, ", ")
	vd := newVerdict()
	switch {
	case counts[WorkerActive] == 0:
		vd.add(protocol.StorageDown, "no worker syncing (%s)", summary)
	case counts[WorkerFaulty] > 0:
		vd.add(protocol.StorageDegraded, "%d of %d workers Faulty (%s)", counts[WorkerFaulty], n, summary)
	case counts[WorkerActive]+counts[WorkerPassive] < n:
		vd.add(protocol.StoragePartial, "%d of %d workers neither Active nor Passive (%s)", n-counts[WorkerActive]-counts[WorkerPassive], n, summary)
	}
	if counts[WorkerActive] > 0 && g.LagSeconds >= 0 {
		lag := time.Duration(g.LagSeconds) * time.Second
		switch {
		case th.GeoRepLagDegraded > 0 && lag > th.GeoRepLagDegraded:
			vd.add(protocol.StorageDegraded, "last synced %s ago, more than %s", lag, th.GeoRepLagDegraded)
		case th.GeoRepLagPartial > 0 && lag > th.GeoRepLagPartial:
			vd.add(protocol.StoragePartial, "last synced %s ago, more than %s", lag, th.GeoRepLagPartial)
		}
	}
	if g.CheckpointSet && !g.CheckpointCompleted && !g.CheckpointTime.IsZero() && th.CheckpointOverdue > 0 {
		if age := now.Sub(g.CheckpointTime); age > th.CheckpointOverdue {
			vd.add(protocol.StoragePartial, "checkpoint of %s not completed after %s", g.CheckpointTime.UTC().Format(time.RFC3339), age.Truncate(time.Second))
		}
	}
	g.Status, g.Reasons = vd.final(), vd.reasons
	return g
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func entries(n int64) string {
	if n == 1 {
		return "1 entry"
	}
	return fmt.Sprintf("%d entries", n)
}
