package gluster

import (
	"encoding/xml"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Volume is one volume as "gluster --xml volume info" describes it.
type Volume struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	// State is Started, Stopped or Created.
	State string `json:"state"`
	// Type is Replicate, Distributed-Replicate, Disperse, Distribute, ...
	Type            string            `json:"type"`
	BrickCount      int               `json:"brick_count"`
	DistCount       int               `json:"dist_count"`
	ReplicaCount    int               `json:"replica_count"`
	ArbiterCount    int               `json:"arbiter_count"`
	DisperseCount   int               `json:"disperse_count"`
	RedundancyCount int               `json:"redundancy_count"`
	Bricks          []VolumeBrick     `json:"bricks"`
	Options         map[string]string `json:"options,omitempty"`
}

// VolumeBrick is one brick in a volume's definition, in set order.
type VolumeBrick struct {
	// Name is host:path.
	Name     string `json:"name"`
	HostUUID string `json:"host_uuid"`
	Arbiter  bool   `json:"arbiter,omitempty"`
}

// hostPath splits a brick name host:path.
func (b VolumeBrick) hostPath() (host, path string) {
	host, path, _ = strings.Cut(b.Name, ":")
	return host, path
}

type volInfoXML struct {
	cliHeader
	Volumes []struct {
		Name            string `xml:"name"`
		ID              string `xml:"id"`
		StatusStr       string `xml:"statusStr"`
		BrickCount      string `xml:"brickCount"`
		DistCount       string `xml:"distCount"`
		ReplicaCount    string `xml:"replicaCount"`
		ArbiterCount    string `xml:"arbiterCount"`
		DisperseCount   string `xml:"disperseCount"`
		RedundancyCount string `xml:"redundancyCount"`
		TypeStr         string `xml:"typeStr"`
		Bricks          []struct {
			UUID     string `xml:"uuid,attr"`
			Text     string `xml:",chardata"`
			Name     string `xml:"name"`
			HostUUID string `xml:"hostUuid"`
			Arbiter  string `xml:"isArbiter"`
		} `xml:"bricks>brick"`
		Options []struct {
			Name  string `xml:"name"`
			Value string `xml:"value"`
		} `xml:"options>option"`
	} `xml:"volInfo>volumes>volume"`
}

// ParseVolumeInfo parses "gluster --xml volume info [VOL]".
func ParseVolumeInfo(out []byte) ([]Volume, error) {
	var x volInfoXML
	if err := decodeCLI(out, &x); err != nil {
		return nil, err
	}
	vols := make([]Volume, 0, len(x.Volumes))
	for i, xv := range x.Volumes {
		name := strings.TrimSpace(xv.Name)
		if name == "" {
			return nil, fmt.Errorf("volume %d has no name", i+1)
		}
		v := Volume{
			Name:  name,
			ID:    strings.TrimSpace(xv.ID),
			State: strings.TrimSpace(xv.StatusStr),
			Type:  strings.TrimSpace(xv.TypeStr),
		}
		for _, f := range []struct {
			name string
			s    string
			dst  *int
		}{
			{"brickCount", xv.BrickCount, &v.BrickCount},
			{"distCount", xv.DistCount, &v.DistCount},
			{"replicaCount", xv.ReplicaCount, &v.ReplicaCount},
			{"arbiterCount", xv.ArbiterCount, &v.ArbiterCount},
			{"disperseCount", xv.DisperseCount, &v.DisperseCount},
			{"redundancyCount", xv.RedundancyCount, &v.RedundancyCount},
		} {
			n, err := atoiOptional(f.name, f.s)
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", name, err)
			}
			if n < 0 || n > maxBricks {
				return nil, fmt.Errorf("volume %s: %s %d out of range", name, f.name, n)
			}
			*f.dst = n
		}
		for j, xb := range xv.Bricks {
			bn := strings.TrimSpace(xb.Name)
			if bn == "" {
				bn = strings.TrimSpace(xb.Text)
			}
			if bn == "" {
				return nil, fmt.Errorf("volume %s: brick %d has no name", name, j+1)
			}
			uuid := strings.TrimSpace(xb.HostUUID)
			if uuid == "" {
				uuid = strings.TrimSpace(xb.UUID)
			}
			v.Bricks = append(v.Bricks, VolumeBrick{Name: bn, HostUUID: uuid, Arbiter: strings.TrimSpace(xb.Arbiter) == "1"})
		}
		if len(v.Bricks) > maxBricks {
			return nil, fmt.Errorf("volume %s: %d bricks, more than %d", name, len(v.Bricks), maxBricks)
		}
		if len(xv.Options) > 0 {
			v.Options = make(map[string]string, len(xv.Options))
			for _, o := range xv.Options {
				v.Options[strings.TrimSpace(o.Name)] = strings.TrimSpace(o.Value)
			}
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// maxBricks bounds brick counts read from gluster, so that a corrupt
// answer cannot make the model allocate without limit.
const maxBricks = 100000

// ParseVolumeList parses "gluster --xml volume list".
func ParseVolumeList(out []byte) ([]string, error) {
	var x struct {
		cliHeader
		Volumes []string `xml:"volList>volume"`
	}
	if err := decodeCLI(out, &x); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(x.Volumes))
	for _, n := range x.Volumes {
		names = append(names, strings.TrimSpace(n))
	}
	return names, nil
}

// VolumeStatus is one started volume in "gluster --xml volume status".
type VolumeStatus struct {
	Name string `json:"name"`
	// Bricks are the volume's brick processes, Daemons its self-heal,
	// NFS, quota, bitrot and snapshot daemons.
	Bricks  []ProcessStatus `json:"bricks"`
	Daemons []ProcessStatus `json:"daemons,omitempty"`
}

// ProcessStatus is one brick or daemon in a volume's status.
type ProcessStatus struct {
	// Hostname is the brick's host, or the daemon's name (Self-heal
	// Daemon, ...).
	Hostname string `json:"hostname"`
	// Path is the brick's directory ("localhost" for daemons).
	Path   string `json:"path"`
	PeerID string `json:"peer_id"`
	Online bool   `json:"online"`
	// Port is 0 when gluster prints N/A.
	Port int `json:"port"`
	// PID is -1 when the process is not running.
	PID         int    `json:"pid"`
	SizeTotal   uint64 `json:"size_total,omitempty"`
	SizeFree    uint64 `json:"size_free,omitempty"`
	InodesTotal uint64 `json:"inodes_total,omitempty"`
	InodesFree  uint64 `json:"inodes_free,omitempty"`
}

// Name returns host:path for a brick.
func (p ProcessStatus) Name() string { return p.Hostname + ":" + p.Path }

// daemonNames are the <hostname> values gluster gives its per-volume
// daemons in volume status.
var daemonNames = map[string]bool{
	"Self-heal Daemon": true,
	"NFS Server":       true,
	"Quota Daemon":     true,
	"Bitrot Daemon":    true,
	"Scrubber Daemon":  true,
	"Snapshot Daemon":  true,
	"Tier Daemon":      true,
}

// shdName is the <hostname> of the self-heal daemon in volume status.
const shdName = "Self-heal Daemon"

// ParseVolumeStatus parses "gluster --xml volume status [all|VOL] [detail]".
// Stopped volumes are absent from "all" (and "VOL" of a stopped volume is
// an *OpError).
func ParseVolumeStatus(out []byte) ([]VolumeStatus, error) {
	var x struct {
		cliHeader
		Volumes []struct {
			Name  string `xml:"volName"`
			Nodes []struct {
				Hostname    string `xml:"hostname"`
				Path        string `xml:"path"`
				PeerID      string `xml:"peerid"`
				Status      string `xml:"status"`
				Port        string `xml:"port"`
				PID         string `xml:"pid"`
				SizeTotal   string `xml:"sizeTotal"`
				SizeFree    string `xml:"sizeFree"`
				InodesTotal string `xml:"inodesTotal"`
				InodesFree  string `xml:"inodesFree"`
			} `xml:"node"`
		} `xml:"volStatus>volumes>volume"`
	}
	if err := decodeCLI(out, &x); err != nil {
		return nil, err
	}
	res := make([]VolumeStatus, 0, len(x.Volumes))
	for _, xv := range x.Volumes {
		vs := VolumeStatus{Name: strings.TrimSpace(xv.Name)}
		if vs.Name == "" {
			return nil, fmt.Errorf("volume status without volName")
		}
		for _, n := range xv.Nodes {
			p := ProcessStatus{
				Hostname: strings.TrimSpace(n.Hostname),
				Path:     strings.TrimSpace(n.Path),
				PeerID:   strings.TrimSpace(n.PeerID),
				Online:   strings.TrimSpace(n.Status) == "1",
			}
			var err error
			if p.Port, err = atoiNA("port", n.Port, 0); err != nil {
				return nil, fmt.Errorf("volume %s node %s: %w", vs.Name, p.Name(), err)
			}
			if p.PID, err = atoiNA("pid", n.PID, -1); err != nil {
				return nil, fmt.Errorf("volume %s node %s: %w", vs.Name, p.Name(), err)
			}
			for _, f := range []struct {
				name string
				s    string
				dst  *uint64
			}{
				{"sizeTotal", n.SizeTotal, &p.SizeTotal},
				{"sizeFree", n.SizeFree, &p.SizeFree},
				{"inodesTotal", n.InodesTotal, &p.InodesTotal},
				{"inodesFree", n.InodesFree, &p.InodesFree},
			} {
				s := strings.TrimSpace(f.s)
				if s == "" || s == "N/A" {
					continue
				}
				u, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("volume %s node %s: %s %q is not a number", vs.Name, p.Name(), f.name, s)
				}
				*f.dst = u
			}
			if daemonNames[p.Hostname] || p.Path == "localhost" {
				vs.Daemons = append(vs.Daemons, p)
			} else {
				vs.Bricks = append(vs.Bricks, p)
			}
		}
		res = append(res, vs)
	}
	return res, nil
}

// HealBrick is one brick in "heal VOL info summary" or "heal VOL info
// [split-brain]". Counts are -1 when gluster could not read the brick.
type HealBrick struct {
	// Name is host:path.
	Name     string `json:"name"`
	HostUUID string `json:"host_uuid"`
	// Status is Connected, or why gluster could not read the brick
	// (cleaned of the garbage gluster 10 appends to it).
	Status    string `json:"status"`
	Connected bool   `json:"connected"`
	// Total, Pending, SplitBrain and PossiblyHealing come from "info
	// summary"; Entries from "info" and "info split-brain".
	Total           int64 `json:"total"`
	Pending         int64 `json:"pending"`
	SplitBrain      int64 `json:"split_brain"`
	PossiblyHealing int64 `json:"possibly_healing"`
	Entries         int64 `json:"entries"`
	// Files are the entries listed by "info" and "info split-brain"
	// (path, or <gfid:...> when gluster knows no path).
	Files []string `json:"files,omitempty"`
}

// statusGarbage matches what gluster 10 glues to the status of a brick it
// could not read in "heal info summary": "...connected)totalNumberOfEntries0".
var statusGarbage = regexp.MustCompile(`totalNumberOfEntries\d*$`)

// maxHealFiles bounds the file names kept per brick from heal info.
const maxHealFiles = 1000

// ParseHeal parses "gluster --xml volume heal VOL info summary", "... info"
// and "... info split-brain" (they share one format; each fills its own
// counts).
func ParseHeal(out []byte) ([]HealBrick, error) {
	var x struct {
		cliHeader
		Bricks []struct {
			HostUUID        string `xml:"hostUuid,attr"`
			Name            string `xml:"name"`
			Status          string `xml:"status"`
			Total           string `xml:"totalNumberOfEntries"`
			Pending         string `xml:"numberOfEntriesInHealPending"`
			SplitBrain      string `xml:"numberOfEntriesInSplitBrain"`
			PossiblyHealing string `xml:"numberOfEntriesPossiblyHealing"`
			Entries         string `xml:"numberOfEntries"`
			Files           []struct {
				GFID string `xml:"gfid,attr"`
				Path string `xml:",chardata"`
			} `xml:"file"`
		} `xml:"healInfo>bricks>brick"`
	}
	if err := decodeCLI(out, &x); err != nil {
		return nil, err
	}
	res := make([]HealBrick, 0, len(x.Bricks))
	for i, xb := range x.Bricks {
		b := HealBrick{
			Name:     strings.TrimSpace(xb.Name),
			HostUUID: strings.TrimSpace(xb.HostUUID),
			Status:   strings.TrimSpace(statusGarbage.ReplaceAllString(strings.TrimSpace(xb.Status), "")),
		}
		if b.Name == "" {
			return nil, fmt.Errorf("heal info brick %d has no name", i+1)
		}
		b.Connected = b.Status == "Connected"
		for _, f := range []struct {
			name string
			s    string
			dst  *int64
		}{
			{"totalNumberOfEntries", xb.Total, &b.Total},
			{"numberOfEntriesInHealPending", xb.Pending, &b.Pending},
			{"numberOfEntriesInSplitBrain", xb.SplitBrain, &b.SplitBrain},
			{"numberOfEntriesPossiblyHealing", xb.PossiblyHealing, &b.PossiblyHealing},
			{"numberOfEntries", xb.Entries, &b.Entries},
		} {
			n, err := parseCount(f.name, f.s)
			if err != nil {
				return nil, fmt.Errorf("heal info brick %s: %w", b.Name, err)
			}
			*f.dst = n
		}
		if !b.Connected {
			// Whatever gluster printed for an unreadable brick is not a count.
			b.Total, b.Pending, b.SplitBrain, b.PossiblyHealing, b.Entries = -1, -1, -1, -1, -1
		}
		for _, f := range xb.Files {
			if len(b.Files) >= maxHealFiles {
				break
			}
			p := strings.TrimSpace(f.Path)
			if p == "" {
				p = "<gfid:" + strings.TrimSpace(f.GFID) + ">"
			}
			b.Files = append(b.Files, p)
		}
		res = append(res, b)
	}
	return res, nil
}

// Peer is one peer of the trusted storage pool.
type Peer struct {
	UUID      string   `json:"uuid"`
	Hostname  string   `json:"hostname"`
	Hostnames []string `json:"hostnames,omitempty"`
	Connected bool     `json:"connected"`
	// State is glusterd's state string ("Peer in Cluster", ...); empty in
	// "pool list".
	State string `json:"state"`
}

// ParsePeerStatus parses "gluster --xml peer status" (the other peers; empty
// on a single node) and "gluster --xml pool list" (all, this node as
// localhost).
func ParsePeerStatus(out []byte) ([]Peer, error) {
	var x struct {
		cliHeader
		Peers []struct {
			UUID      string   `xml:"uuid"`
			Hostname  string   `xml:"hostname"`
			Hostnames []string `xml:"hostnames>hostname"`
			Connected string   `xml:"connected"`
			StateStr  string   `xml:"stateStr"`
		} `xml:"peerStatus>peer"`
	}
	if err := decodeCLI(out, &x); err != nil {
		return nil, err
	}
	res := make([]Peer, 0, len(x.Peers))
	for i, xp := range x.Peers {
		p := Peer{
			UUID:      strings.TrimSpace(xp.UUID),
			Hostname:  strings.TrimSpace(xp.Hostname),
			Connected: strings.TrimSpace(xp.Connected) == "1",
			State:     strings.TrimSpace(xp.StateStr),
		}
		if p.UUID == "" && p.Hostname == "" {
			return nil, fmt.Errorf("peer %d has neither uuid nor hostname", i+1)
		}
		for _, h := range xp.Hostnames {
			p.Hostnames = append(p.Hostnames, strings.TrimSpace(h))
		}
		res = append(res, p)
	}
	return res, nil
}

// GeoRepPair is one worker line of "gluster --xml volume geo-replication
// status [detail]". Counts are -1 when gluster prints N/A.
type GeoRepPair struct {
	PrimaryVolume string `json:"primary_volume"`
	// Secondary is host::volume (gluster's ssh:// prefix removed).
	Secondary       string `json:"secondary"`
	SecondaryUser   string `json:"secondary_user"`
	SessionID       string `json:"session_id"`
	PrimaryNode     string `json:"primary_node"`
	PrimaryBrick    string `json:"primary_brick"`
	PrimaryNodeUUID string `json:"primary_node_uuid"`
	// SecondaryNode is empty when gluster prints N/A or nothing.
	SecondaryNode string `json:"secondary_node"`
	// Status is normalised: "Initializing..." becomes Initializing.
	Status string `json:"status"`
	// CrawlStatus is empty when gluster prints N/A.
	CrawlStatus string `json:"crawl_status"`
	Entry       int64  `json:"entry"`
	Data        int64  `json:"data"`
	Meta        int64  `json:"meta"`
	Failures    int64  `json:"failures"`
	// Checkpoint is "Yes", "No" or "" (gluster's N/A: no checkpoint set).
	CheckpointCompleted     string    `json:"checkpoint_completed"`
	LastSynced              time.Time `json:"last_synced,omitzero"`
	CheckpointTime          time.Time `json:"checkpoint_time,omitzero"`
	CheckpointCompletedTime time.Time `json:"checkpoint_completion_time,omitzero"`
}

// geoRepPairXML holds both spellings of the worker fields: gluster 10
// says primary/secondary, older releases master/slave.
type geoRepPairXML struct {
	PrimaryNode             string `xml:"primary_node"`
	MasterNode              string `xml:"master_node"`
	PrimaryBrick            string `xml:"primary_brick"`
	MasterBrick             string `xml:"master_brick"`
	PrimaryNodeUUID         string `xml:"primary_node_uuid"`
	MasterNodeUUID          string `xml:"master_node_uuid"`
	SecondaryUser           string `xml:"secondary_user"`
	SlaveUser               string `xml:"slave_user"`
	Secondary               string `xml:"secondary"`
	Slave                   string `xml:"slave"`
	SecondaryNode           string `xml:"secondary_node"`
	SlaveNode               string `xml:"slave_node"`
	Status                  string `xml:"status"`
	CrawlStatus             string `xml:"crawl_status"`
	Entry                   string `xml:"entry"`
	Data                    string `xml:"data"`
	Meta                    string `xml:"meta"`
	Failures                string `xml:"failures"`
	CheckpointCompleted     string `xml:"checkpoint_completed"`
	LastSynced              string `xml:"last_synced"`
	CheckpointTime          string `xml:"checkpoint_time"`
	CheckpointCompletedTime string `xml:"checkpoint_completion_time"`
}

// noGeoRepSessions is gluster's opErrstr when there is nothing to show.
const noGeoRepSessions = "No active geo-replication sessions"

// ParseGeoRepStatus parses "gluster --xml volume geo-replication [PRIMARY
// [SECONDARY]] status [detail]" of gluster 10 and of older releases
// (master_*/slave_* elements). Times are read in loc, the time zone of the
// node that printed them. No sessions at all is an empty result.
func ParseGeoRepStatus(out []byte, loc *time.Location) ([]GeoRepPair, error) {
	var x struct {
		cliHeader
		Volumes []struct {
			Name     string `xml:"name"`
			Sessions []struct {
				Secondary string          `xml:"session_secondary"`
				Slave     string          `xml:"session_slave"`
				Pairs     []geoRepPairXML `xml:"pair"`
			} `xml:"sessions>session"`
		} `xml:"geoRep>volume"`
	}
	if err := decodeCLI(out, &x); err != nil {
		var oe *OpError
		if errors.As(err, &oe) && strings.Contains(oe.Msg, noGeoRepSessions) {
			return nil, nil
		}
		return nil, err
	}
	var res []GeoRepPair
	for _, xv := range x.Volumes {
		vol := strings.TrimSpace(xv.Name)
		for _, xs := range xv.Sessions {
			sid := strings.TrimSpace(first(xs.Secondary, xs.Slave))
			for i, xp := range xs.Pairs {
				p, err := geoRepPair(vol, sid, xp, loc)
				if err != nil {
					return nil, fmt.Errorf("geo-replication %s worker %d: %w", vol, i+1, err)
				}
				res = append(res, p)
			}
		}
	}
	return res, nil
}

func geoRepPair(vol, sid string, xp geoRepPairXML, loc *time.Location) (GeoRepPair, error) {
	p := GeoRepPair{
		PrimaryVolume:       vol,
		SessionID:           sid,
		Secondary:           normSecondary(first(xp.Secondary, xp.Slave)),
		SecondaryUser:       strings.TrimSpace(first(xp.SecondaryUser, xp.SlaveUser)),
		PrimaryNode:         strings.TrimSpace(first(xp.PrimaryNode, xp.MasterNode)),
		PrimaryBrick:        strings.TrimSpace(first(xp.PrimaryBrick, xp.MasterBrick)),
		PrimaryNodeUUID:     strings.TrimSpace(first(xp.PrimaryNodeUUID, xp.MasterNodeUUID)),
		SecondaryNode:       naEmpty(first(xp.SecondaryNode, xp.SlaveNode)),
		Status:              normWorkerStatus(xp.Status),
		CrawlStatus:         naEmpty(xp.CrawlStatus),
		CheckpointCompleted: naEmpty(xp.CheckpointCompleted),
	}
	if p.Secondary == "" {
		return p, fmt.Errorf("no secondary")
	}
	if p.Status == "" {
		return p, fmt.Errorf("no status")
	}
	for _, f := range []struct {
		name string
		s    string
		dst  *int64
	}{
		{"entry", xp.Entry, &p.Entry},
		{"data", xp.Data, &p.Data},
		{"meta", xp.Meta, &p.Meta},
		{"failures", xp.Failures, &p.Failures},
	} {
		n, err := parseCount(f.name, f.s)
		if err != nil {
			return p, err
		}
		*f.dst = n
	}
	for _, f := range []struct {
		name string
		s    string
		dst  *time.Time
	}{
		{"last_synced", xp.LastSynced, &p.LastSynced},
		{"checkpoint_time", xp.CheckpointTime, &p.CheckpointTime},
		{"checkpoint_completion_time", xp.CheckpointCompletedTime, &p.CheckpointCompletedTime},
	} {
		t, err := parseTime(f.name, f.s, loc)
		if err != nil {
			return p, err
		}
		*f.dst = t
	}
	return p, nil
}

// normSecondary turns "ssh://host::vol" (all-sessions status) and
// "user@host::vol" into host::vol, as the per-session status prints it.
func normSecondary(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "ssh://")
	if _, rest, ok := strings.Cut(s, "@"); ok {
		s = rest
	}
	return s
}

// normWorkerStatus trims gluster's "Initializing..." to Initializing.
func normWorkerStatus(s string) string {
	return strings.TrimRight(strings.TrimSpace(s), ".")
}

// ParseGeoRepConfig parses "gluster --xml volume geo-replication PRIMARY
// SECONDARY config" into option name -> value.
func ParseGeoRepConfig(out []byte) (map[string]string, error) {
	var x struct {
		cliHeader
		Config struct {
			Items []struct {
				XMLName xml.Name
				Value   string `xml:",chardata"`
			} `xml:",any"`
		} `xml:"geoRep>config"`
	}
	if err := decodeCLI(out, &x); err != nil {
		return nil, err
	}
	cfg := make(map[string]string, len(x.Config.Items))
	for _, it := range x.Config.Items {
		cfg[it.XMLName.Local] = strings.TrimSpace(it.Value)
	}
	return cfg, nil
}

// glusterTime is how gluster prints times in geo-replication status.
const glusterTime = "2006-01-02 15:04:05"

func parseTime(field, s string, loc *time.Location) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "N/A" {
		return time.Time{}, nil
	}
	if loc == nil {
		loc = time.UTC
	}
	t, err := time.ParseInLocation(glusterTime, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not a time (want %s)", field, s, glusterTime)
	}
	return t, nil
}

// parseCount reads a count that gluster may print as N/A or "-" (-1).
func parseCount(field, s string) (int64, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "", "-", "N/A":
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q is not a count", field, s)
	}
	return n, nil
}

// atoiField reads a required integer.
func atoiField(field, s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("%s missing", field)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not an integer", field, s)
	}
	return n, nil
}

// atoiOptional reads an integer that may be absent (0).
func atoiOptional(field, s string) (int, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	return atoiField(field, s)
}

// atoiNA reads an integer that gluster may print as N/A (na).
func atoiNA(field, s string, na int) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "N/A" {
		return na, nil
	}
	return atoiField(field, s)
}

func naEmpty(s string) string {
	s = strings.TrimSpace(s)
	if s == "N/A" {
		return ""
	}
	return s
}

func first(a, b string) string {
	if strings.TrimSpace(a) != "" {
		return a
	}
	return b
}
