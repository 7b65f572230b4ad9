package protocol

import "time"

// StorageStatus is the health of a storage component (a volume, a
// geo-replication session, a whole site's storage), from best to worst:
// up, partial, degraded, down. Unknown means the agent could not tell.
type StorageStatus string

// Storage statuses.
const (
	// StorageUp: everything online and in sync.
	StorageUp StorageStatus = "up"
	// StoragePartial: data available and writable, redundancy reduced or
	// catching up (a brick or self-heal daemon offline, entries pending
	// heal, geo-replication behind or starting).
	StoragePartial StorageStatus = "partial"
	// StorageDegraded: data at risk or not writable (split-brain, client
	// quorum lost, part of the data unreachable, a geo-replication worker
	// faulty).
	StorageDegraded StorageStatus = "degraded"
	// StorageDown: not serving (volume stopped, every brick offline, no
	// geo-replication worker syncing).
	StorageDown StorageStatus = "down"
	// StorageUnknown: the agent could not read the state (glusterd not
	// reachable, a command failed).
	StorageUnknown StorageStatus = "unknown"
)

// StorageReport is a site agent's view of its GlusterFS storage, produced
// by one collection cycle.
type StorageReport struct {
	// Status is the site's overall storage status: the worst of its
	// volumes, geo-replication sessions and peers; unknown when glusterd
	// could not be reached.
	Status StorageStatus `cbor:"status" json:"status"`
	// Reasons say why Status is not up, one short sentence each.
	Reasons []string `cbor:"reasons,omitempty" json:"reasons,omitempty"`
	// GlusterdUp is true when glusterd answered the agent's commands.
	GlusterdUp bool           `cbor:"glusterd_up" json:"glusterd_up"`
	Volumes    []VolumeHealth `cbor:"volumes" json:"volumes"`
	GeoReps    []GeoRepHealth `cbor:"georeps" json:"georeps"`
	Peers      []PeerHealth   `cbor:"peers" json:"peers"`
	// Errors lists the commands that failed in this cycle and why; the
	// parts of the report they feed are unknown.
	Errors []string `cbor:"errors,omitempty" json:"errors,omitempty"`
	// TakenAt is when the cycle started.
	TakenAt time.Time `cbor:"taken_at" json:"taken_at"`
	// CycleMillis is how long the cycle took, in milliseconds.
	CycleMillis int64 `cbor:"cycle_ms" json:"cycle_ms"`
}

// VolumeHealth is the health of one GlusterFS volume. Entry counts are -1
// when unknown.
type VolumeHealth struct {
	Name string `cbor:"name" json:"name"`
	// Type is gluster's volume type (Replicate, Distributed-Replicate,
	// Disperse, Distribute, ...).
	Type string `cbor:"type" json:"type"`
	// State is gluster's volume state: Started, Stopped or Created.
	State   string        `cbor:"state" json:"state"`
	Status  StorageStatus `cbor:"status" json:"status"`
	Reasons []string      `cbor:"reasons,omitempty" json:"reasons,omitempty"`
	// ReplicaCount, ArbiterCount, DisperseCount and RedundancyCount are
	// per subvolume, as in "gluster volume info".
	ReplicaCount    int `cbor:"replica" json:"replica"`
	ArbiterCount    int `cbor:"arbiter" json:"arbiter"`
	DisperseCount   int `cbor:"disperse" json:"disperse"`
	RedundancyCount int `cbor:"redundancy" json:"redundancy"`
	BricksOnline    int `cbor:"bricks_online" json:"bricks_online"`
	BricksTotal     int `cbor:"bricks_total" json:"bricks_total"`
	// SelfHealOnline and SelfHealTotal count self-heal daemons (one per
	// server) for volumes that have them.
	SelfHealOnline int `cbor:"shd_online" json:"shd_online"`
	SelfHealTotal  int `cbor:"shd_total" json:"shd_total"`
	// HealPending estimates the distinct entries waiting for heal: per
	// replica set the highest count any of its bricks reports, summed over
	// the sets. -1 when unknown.
	HealPending int64 `cbor:"heal_pending" json:"heal_pending"`
	// PossiblyHealing counts entries the self-heal daemon is working on
	// (same estimate as HealPending). -1 when unknown.
	PossiblyHealing int64 `cbor:"possibly_healing" json:"possibly_healing"`
	// SplitBrain counts entries in split-brain (same estimate). -1 when
	// unknown.
	SplitBrain int64 `cbor:"split_brain" json:"split_brain"`
	// SplitBrainFiles names some of the files in split-brain (at most a
	// configured number).
	SplitBrainFiles []string `cbor:"split_brain_files,omitempty" json:"split_brain_files,omitempty"`
	// QuorumType is the client quorum in force (none, auto, fixed).
	QuorumType string `cbor:"quorum_type,omitempty" json:"quorum_type,omitempty"`
	// QuorumLost is true when at least one replica set has fewer bricks
	// online than its client quorum needs: writes to it fail.
	QuorumLost bool          `cbor:"quorum_lost" json:"quorum_lost"`
	Bricks     []BrickHealth `cbor:"bricks" json:"bricks"`
}

// BrickHealth is one brick of a volume. Entry counts are -1 when unknown.
type BrickHealth struct {
	// Name is host:path as in "gluster volume info".
	Name    string `cbor:"name" json:"name"`
	Online  bool   `cbor:"online" json:"online"`
	Arbiter bool   `cbor:"arbiter,omitempty" json:"arbiter,omitempty"`
	// Set is the index of the brick's replica or disperse set.
	Set             int   `cbor:"set" json:"set"`
	HealPending     int64 `cbor:"heal_pending" json:"heal_pending"`
	SplitBrain      int64 `cbor:"split_brain" json:"split_brain"`
	PossiblyHealing int64 `cbor:"possibly_healing" json:"possibly_healing"`
	// HealStatus is the brick's status in heal info (Connected, or why
	// gluster could not read it).
	HealStatus string `cbor:"heal_status,omitempty" json:"heal_status,omitempty"`
	SizeTotal  uint64 `cbor:"size_total,omitempty" json:"size_total,omitempty"`
	SizeFree   uint64 `cbor:"size_free,omitempty" json:"size_free,omitempty"`
}

// GeoRepHealth is one geo-replication session: a primary volume copied to
// a secondary volume.
type GeoRepHealth struct {
	PrimaryVolume string `cbor:"primary_volume" json:"primary_volume"`
	// Secondary is host::volume of the secondary.
	Secondary     string        `cbor:"secondary" json:"secondary"`
	SecondaryUser string        `cbor:"secondary_user,omitempty" json:"secondary_user,omitempty"`
	Status        StorageStatus `cbor:"status" json:"status"`
	Reasons       []string      `cbor:"reasons,omitempty" json:"reasons,omitempty"`
	// LagSeconds is the largest lag of the session's Active workers: time
	// since their last synced change. -1 when no Active worker has
	// synced. An idle primary volume also ages it.
	LagSeconds int64 `cbor:"lag_s" json:"lag_s"`
	// CheckpointSet is true when a checkpoint was set on the session;
	// CheckpointCompleted when every worker reached it.
	CheckpointSet       bool           `cbor:"checkpoint_set" json:"checkpoint_set"`
	CheckpointCompleted bool           `cbor:"checkpoint_completed" json:"checkpoint_completed"`
	CheckpointTime      time.Time      `cbor:"checkpoint_time,omitzero" json:"checkpoint_time,omitzero"`
	Workers             []GeoRepWorker `cbor:"workers" json:"workers"`
}

// GeoRepWorker is one geo-replication worker: one primary brick.
type GeoRepWorker struct {
	PrimaryNode  string `cbor:"primary_node" json:"primary_node"`
	PrimaryBrick string `cbor:"primary_brick" json:"primary_brick"`
	// SecondaryNode is the secondary host the worker syncs to, empty when
	// not connected.
	SecondaryNode string `cbor:"secondary_node,omitempty" json:"secondary_node,omitempty"`
	// Status is Active, Passive, Faulty, Created, Initializing, Stopped or
	// Paused (another value gluster prints is passed on as is).
	Status string `cbor:"status" json:"status"`
	// CrawlStatus is Changelog Crawl, History Crawl, Hybrid Crawl, or
	// empty when not crawling.
	CrawlStatus string `cbor:"crawl_status,omitempty" json:"crawl_status,omitempty"`
	// LastSynced is the time of the last change synced; zero if none.
	LastSynced time.Time `cbor:"last_synced,omitzero" json:"last_synced,omitzero"`
	// LagSeconds is TakenAt - LastSynced, -1 when LastSynced is unknown.
	LagSeconds int64 `cbor:"lag_s" json:"lag_s"`
	// Entry, Data and Meta are operations pending in the current batch,
	// Failures the failed ones; -1 when unknown.
	Entry    int64 `cbor:"entry" json:"entry"`
	Data     int64 `cbor:"data" json:"data"`
	Meta     int64 `cbor:"meta" json:"meta"`
	Failures int64 `cbor:"failures" json:"failures"`
	// CheckpointCompleted is true when the worker reached the session's
	// checkpoint, at CheckpointCompletedAt.
	CheckpointCompleted   bool      `cbor:"checkpoint_completed" json:"checkpoint_completed"`
	CheckpointCompletedAt time.Time `cbor:"checkpoint_completed_at,omitzero" json:"checkpoint_completed_at,omitzero"`
}

// PeerHealth is one peer in the trusted storage pool, as the agent's
// glusterd sees it.
type PeerHealth struct {
	UUID      string `cbor:"uuid" json:"uuid"`
	Hostname  string `cbor:"hostname" json:"hostname"`
	Connected bool   `cbor:"connected" json:"connected"`
	// State is glusterd's peer state ("Peer in Cluster", ...).
	State string `cbor:"state" json:"state"`
}
