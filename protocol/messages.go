package protocol

import (
	"time"

	"github.com/canopy-grid/canopy/images"
)

// Kind identifies the message type carried by a frame.
type Kind uint8

// Message kinds. Values are part of the wire format: never renumber.
const (
	KindHello     Kind = 1
	KindWelcome   Kind = 2
	KindInventory Kind = 3
	KindCommand   Kind = 4
	KindResult    Kind = 5
	KindHeartbeat Kind = 6
	KindError     Kind = 7
	KindSquids    Kind = 8
	// KindInventoryDelta and KindResync: an agent reports changes only
	// after its first full inventory of a session; the hub asks for a full
	// one again when it misses a delta.
	KindInventoryDelta Kind = 9
	KindResync         Kind = 10
)

// String names the kind for logs and errors.
func (k Kind) String() string {
	switch k {
	case KindHello:
		return "hello"
	case KindWelcome:
		return "welcome"
	case KindInventory:
		return "inventory"
	case KindCommand:
		return "command"
	case KindResult:
		return "result"
	case KindHeartbeat:
		return "heartbeat"
	case KindError:
		return "error"
	case KindSquids:
		return "squids"
	case KindInventoryDelta:
		return "inventory-delta"
	case KindResync:
		return "resync"
	case KindImageProgress:
		return "image-progress"
	}
	return "unknown"
}

// Message is implemented by every type that travels in a frame.
type Message interface {
	// Kind is the frame kind the message travels in.
	Kind() Kind
	// Validate checks what the decoder cannot (sizes, required fields,
	// numbers that make sense: see validate.go); DecodeBody refuses a
	// message it fails.
	Validate() error
}

// Hello is the first message an agent sends on a new session.
type Hello struct {
	// Versions lists the protocol versions the agent speaks.
	Versions []uint16 `cbor:"versions"`
	// Site is the site the agent claims to serve; it must match its certificate.
	Site string `cbor:"site"`
	// Software is the agent's build version, for the status page.
	Software string `cbor:"software"`
	// Epoch names this run of the agent process (random at start). Commands
	// planned on another run's inventory carry another epoch and are
	// refused as stale. Empty from agents that predate it.
	Epoch string `cbor:"epoch,omitempty"`
}

// Welcome is the hub's answer to Hello: the version both sides will speak.
type Welcome struct {
	Version uint16 `cbor:"version"`
	HubID   string `cbor:"hub_id"`
	// HeartbeatEvery is how often the hub wants heartbeats.
	HeartbeatEvery time.Duration `cbor:"heartbeat_every"`
	// InventoryEvery is how often the hub wants full inventories.
	InventoryEvery time.Duration `cbor:"inventory_every"`
}

// Flavor is a VM size a cloud offers.
type Flavor struct {
	ID      string `cbor:"id" json:"id" yaml:"id"`
	Name    string `cbor:"name" json:"name" yaml:"name"`
	VCPUs   int    `cbor:"vcpus" json:"vcpus" yaml:"vcpus"`
	RAMMiB  int    `cbor:"ram_mib" json:"ram_mib" yaml:"ram_mib"`
	DiskGiB int    `cbor:"disk_gib" json:"disk_gib" yaml:"disk_gib"`
}

// Limits are a cloud project's absolute limits and usage. A negative maximum
// means unlimited.
type Limits struct {
	MaxCores      int `cbor:"max_cores" json:"max_cores"`
	MaxRAMMiB     int `cbor:"max_ram_mib" json:"max_ram_mib"`
	MaxInstances  int `cbor:"max_instances" json:"max_instances"`
	UsedCores     int `cbor:"used_cores" json:"used_cores"`
	UsedRAMMiB    int `cbor:"used_ram_mib" json:"used_ram_mib"`
	UsedInstances int `cbor:"used_instances" json:"used_instances"`
}

// VMState is a server's lifecycle state as the site agent sees it.
type VMState string

// VM states reported by agents.
const (
	VMBooting  VMState = "booting"  // created, not yet ACTIVE in the cloud
	VMActive   VMState = "active"   // ACTIVE in the cloud
	VMError    VMState = "error"    // ERROR in the cloud
	VMDeleting VMState = "deleting" // delete requested or under way: not capacity
	// VMStopped is a server that exists but cannot run jobs: SHUTOFF,
	// SUSPENDED, PAUSED, SHELVED and the like (CloudStatus says which). It
	// is deleted after the error delay like a server in error.
	VMStopped VMState = "stopped"
	// VMRebooting is a server rebooting (REBOOT, HARD_REBOOT): still there,
	// neither deleted nor capacity until it is back.
	VMRebooting VMState = "rebooting"
)

// Retirement progress of a VM, as its agent knows it (VM.RetireState).
const (
	RetireOrdered  = "ordered"  // the order is recorded, the VM has not acted on it yet
	RetireDraining = "draining" // the startd takes no new jobs; running ones go on
	RetireDrained  = "drained"  // HTCondor confirmed no job runs: the server may go
	RetireFailed   = "failed"   // the VM could not stop taking jobs; RetireError says why
)

// VMJobs is what a VM's own vmagent last reported of its startd.
type VMJobs struct {
	// Running is how many jobs the startd runs; Claimed how many slots are
	// claimed (a claimed slot may be between jobs).
	Running int `cbor:"running" json:"running"`
	Claimed int `cbor:"claimed" json:"claimed"`
	// At is when the vmagent counted them.
	At time.Time `cbor:"at" json:"at"`
}

// VM is one server in a site's inventory.
type VM struct {
	ID     string  `cbor:"id" json:"id"`
	Name   string  `cbor:"name" json:"name"`
	Flavor string  `cbor:"flavor" json:"flavor"`
	Image  string  `cbor:"image" json:"image"`
	Group  string  `cbor:"group" json:"group"`
	VMType string  `cbor:"vm_type" json:"vm_type"`
	PlanID string  `cbor:"plan_id" json:"plan_id"`
	State  VMState `cbor:"state" json:"state"`
	// Fault is the cloud's error message for a server in ERROR.
	Fault string `cbor:"fault,omitempty" json:"fault,omitempty"`
	// Ready is true once the VM's vmagent has contextualized and checked in.
	Ready bool `cbor:"ready" json:"ready"`
	// Unreachable is true while the site's gossip pool holds the VM failed.
	Unreachable bool `cbor:"unreachable,omitempty" json:"unreachable,omitempty"`
	// Retiring is true once a retirement order reached the VM.
	Retiring bool `cbor:"retiring" json:"retiring"`
	// Foreign marks servers in the project that this hub did not boot
	// (no canopy_hub metadata, or another hub's id); they count against
	// quotas and are never touched.
	Foreign bool `cbor:"foreign,omitempty" json:"foreign,omitempty"`
	// Hub is the server's canopy_hub metadata: the id of the hub that
	// booted it; empty for servers Canopy did not boot.
	Hub string `cbor:"hub,omitempty" json:"hub,omitempty"`
	// CloudStatus is the cloud's own status word (ACTIVE, SHUTOFF,
	// HARD_REBOOT, ...), for people; State is what Canopy acts on.
	CloudStatus string `cbor:"cloud_status,omitempty" json:"cloud_status,omitempty"`
	// Jobs is the VM's own last report of its startd's jobs; nil when it
	// never reported a count.
	Jobs *VMJobs `cbor:"jobs,omitempty" json:"jobs,omitempty"`
	// RetireState is the retirement's progress (Retire* constants); empty
	// when no retirement was ordered. RetireError says why it failed.
	RetireState string `cbor:"retire_state,omitempty" json:"retire_state,omitempty"`
	RetireError string `cbor:"retire_error,omitempty" json:"retire_error,omitempty"`
	// KeepAlive and MaxLifetime are the jobs' requests the server was
	// booted for (BootCommand), read back from its metadata; zero when
	// none (or the metadata is not a duration).
	KeepAlive   time.Duration `cbor:"keep_alive,omitempty" json:"keep_alive,omitempty"`
	MaxLifetime time.Duration `cbor:"max_lifetime,omitempty" json:"max_lifetime,omitempty"`
	CreatedAt   time.Time     `cbor:"created_at" json:"created_at"`
	ReadyAt     time.Time     `cbor:"ready_at,omitempty" json:"ready_at,omitempty"`
	LastSeen    time.Time     `cbor:"last_seen,omitempty" json:"last_seen,omitempty"`
}

// Inventory is an agent's full report of what is true in its cloud.
type Inventory struct {
	Seq     uint64         `cbor:"seq"`
	Flavors []Flavor       `cbor:"flavors"`
	Limits  Limits         `cbor:"limits"`
	VMs     []VM           `cbor:"vms"`
	Images  []images.Image `cbor:"images"`
	// Storage is the last storage health report, nil where none is collected.
	Storage *StorageReport `cbor:"storage,omitempty"`
	// Squids are the squid proxies this site's agent is configured with.
	Squids []SquidInfo `cbor:"squids,omitempty"`
	// Policy is what the site's own cloud settings say about using it.
	Policy *SitePolicy `cbor:"policy,omitempty"`
	// Running lists the ids of commands the agent is still carrying out:
	// their servers may appear in a later inventory.
	Running []string  `cbor:"running,omitempty"`
	TakenAt time.Time `cbor:"taken_at"`
	// APIMillis is how long the cloud API took to answer this
	// inventory's limits call, in milliseconds (0: not measured).
	APIMillis int `cbor:"api_ms,omitempty"`
}

// CommandKind says what a command asks the agent to do.
type CommandKind string

// Command kinds.
const (
	CmdBoot   CommandKind = "boot"
	CmdRetire CommandKind = "retire"
	CmdDelete CommandKind = "delete"
)

// Command is an order from the hub to an agent. Commands are idempotent: an
// agent that sees the same ID twice carries it out once, and a boot names its
// servers so that a replay finds them instead of booting again.
type Command struct {
	ID string      `cbor:"id"`
	Op CommandKind `cbor:"op"`
	// Epoch and Generation name the agent run (Hello.Epoch) and the
	// inventory (Inventory.Seq) the command was planned on. An agent
	// refuses a command of another epoch (class stale): it was planned on
	// what a previous run reported. Empty epoch: not checked.
	Epoch      string         `cbor:"epoch,omitempty"`
	Generation uint64         `cbor:"generation,omitempty"`
	Boot       *BootCommand   `cbor:"boot,omitempty"`
	Retire     *RetireCommand `cbor:"retire,omitempty"`
	Delete     *DeleteCommand `cbor:"delete,omitempty"`
	// ImageCopy and ImageDelete are the bodies of CmdImageCopy and
	// CmdImageDelete (protocol/images.go).
	ImageCopy   *ImageCopyCommand   `cbor:"image_copy,omitempty"`
	ImageDelete *ImageDeleteCommand `cbor:"image_delete,omitempty"`
}

// BootCommand asks for servers with the given names.
type BootCommand struct {
	PlanID string   `cbor:"plan_id"`
	Group  string   `cbor:"group"`
	VMType string   `cbor:"vm_type"`
	Flavor string   `cbor:"flavor"`
	Image  string   `cbor:"image"`
	Names  []string `cbor:"names"`
	// KeepAlive and MaxLifetime are the jobs' own requests
	// (+VMKeepAlive, +VMMaxLifetime) the servers are booted for; zero
	// means none. The agent records them on the servers (metadata
	// canopy_keep_alive, canopy_max_lifetime), lists them back in its
	// inventory (VM.KeepAlive, VM.MaxLifetime) and gives them to the VM.
	KeepAlive   time.Duration `cbor:"keep_alive,omitempty"`
	MaxLifetime time.Duration `cbor:"max_lifetime,omitempty"`
	// HS06PerCore is the flavor's HS06 rating per core as the hub's site
	// settings give it, for the VMs to advertise; zero: not rated.
	HS06PerCore float64 `cbor:"hs06_per_core,omitempty"`
}

// RetireCommand asks VMs to stop taking jobs, finish within Deadline, and be deleted.
type RetireCommand struct {
	VMIDs    []string      `cbor:"vm_ids"`
	Deadline time.Duration `cbor:"deadline"`
	Reason   string        `cbor:"reason"`
}

// DeleteCommand asks for servers to be deleted at once.
type DeleteCommand struct {
	VMIDs  []string `cbor:"vm_ids"`
	Reason string   `cbor:"reason"`
	// Override, when DeleteDeadline, says an admin-set deadline has passed
	// (retire deadline, maximum lifetime, over-quota deadline): the agent
	// deletes the servers even if their vmagents report running jobs.
	// Empty: the agent refuses to delete a server whose vmagent reports
	// claimed slots or running jobs, and says so in Result.Refused.
	Override string `cbor:"override,omitempty"`
}

// DeleteDeadline is DeleteCommand.Override for deletions an admin-set
// deadline allows.
const DeleteDeadline = "deadline"

// Refusal is one server an agent would not act on, and why.
type Refusal struct {
	VMID   string `cbor:"vm_id"`
	Reason string `cbor:"reason"`
}

// ErrorClass classifies a failed command so the planner can react.
type ErrorClass string

// Error classes reported in results.
const (
	ErrClassNone      ErrorClass = ""
	ErrClassAuth      ErrorClass = "auth"
	ErrClassQuota     ErrorClass = "quota"
	ErrClassNoHost    ErrorClass = "no_valid_host"
	ErrClassRateLimit ErrorClass = "rate_limited"
	ErrClassTransient ErrorClass = "transient"
	ErrClassInvalid   ErrorClass = "invalid"
	ErrClassInternal  ErrorClass = "internal"
	// ErrClassRefused: the agent would not act on some servers (a delete
	// of a VM that reports running jobs, a server another hub owns);
	// Result.Refused lists them.
	ErrClassRefused ErrorClass = "refused"
	// ErrClassStale: the command was planned on another run of the agent.
	ErrClassStale ErrorClass = "stale"
)

// Result is an agent's answer to one command.
type Result struct {
	CommandID string     `cbor:"command_id"`
	OK        bool       `cbor:"ok"`
	Class     ErrorClass `cbor:"class,omitempty"`
	Error     string     `cbor:"error,omitempty"`
	// VMIDs are the servers the command created or acted on.
	VMIDs []string `cbor:"vm_ids,omitempty"`
	// Refused lists servers the agent would not act on, with the reason.
	Refused []Refusal `cbor:"refused,omitempty"`
}

// Heartbeat tells the hub the agent is alive.
type Heartbeat struct {
	Seq    uint64    `cbor:"seq"`
	SentAt time.Time `cbor:"sent_at"`
}

// ErrorCode classifies a protocol error frame.
type ErrorCode string

// Protocol error codes.
const (
	CodeMalformed   ErrorCode = "malformed"
	CodeTooLarge    ErrorCode = "too_large"
	CodeUnknownKind ErrorCode = "unknown_kind"
	CodeBadVersion  ErrorCode = "bad_version"
	CodeBadIdentity ErrorCode = "bad_identity"
	CodeUnexpected  ErrorCode = "unexpected"
)

// Error is sent before a side closes a stream because of the peer's input.
type Error struct {
	Code    ErrorCode `cbor:"code"`
	Message string    `cbor:"message"`
}

// SitePolicy carries a cloud's settings that live with its credentials in
// the agent's config (as cloudscheduler kept them per cloud). The hub
// applies the stricter of these and its own site settings.
type SitePolicy struct {
	// Disabled: the cloud is to be drained.
	Disabled bool `cbor:"disabled,omitempty"`
	// KeepAlive for idle VMs on this cloud; zero: the hub's.
	KeepAlive time.Duration `cbor:"keep_alive,omitempty"`
	// CoresSoftMax caps the cores Canopy uses, minus foreign usage; zero: none.
	CoresSoftMax int `cbor:"cores_soft_max,omitempty"`
}

// SquidInfo is a squid proxy a site offers (see squidreg.Registration).
type SquidInfo struct {
	Name         string   `cbor:"name" yaml:"name"`
	Host         string   `cbor:"host" yaml:"host"`
	Port         int      `cbor:"port" yaml:"port"`
	Kinds        []string `cbor:"kinds" yaml:"kinds"`
	Access       string   `cbor:"access" yaml:"access"`
	Domain       string   `cbor:"domain,omitempty" yaml:"domain"`
	Load         float64  `cbor:"load,omitempty" yaml:"load"`
	MaxLoad      float64  `cbor:"max_load,omitempty" yaml:"max_load"`
	CacheManager bool     `cbor:"cache_manager,omitempty" yaml:"cache_manager"`
	GeoIP        string   `cbor:"geoip,omitempty" yaml:"geoip"`
	Latitude     *float64 `cbor:"lat,omitempty" yaml:"latitude"`
	Longitude    *float64 `cbor:"lon,omitempty" yaml:"longitude"`
}

// SquidList is the hub's ranking of squids for one site and upstream kind,
// nearest and least loaded first. Agents cache it for their VMs.
type SquidList struct {
	// Upstream is the upstream kind: cvmfs or frontier.
	Upstream string       `cbor:"upstream"`
	Proxies  []SquidProxy `cbor:"proxies"`
	At       time.Time    `cbor:"at"`
}

// SquidProxy is one ranked squid.
type SquidProxy struct {
	Name    string  `cbor:"name,omitempty"`
	Address string  `cbor:"address"`
	Cost    float64 `cbor:"cost"`
	// DistanceKm is -1 when the hub could not locate the squid or the agent.
	DistanceKm float64 `cbor:"distance_km"`
	Load       float64 `cbor:"load"`
}

// Kind implements Message.
func (SquidList) Kind() Kind { return KindSquids }

// Kind implements Message.
func (Hello) Kind() Kind { return KindHello }

// Kind implements Message.
func (Welcome) Kind() Kind { return KindWelcome }

// Kind implements Message.
func (Inventory) Kind() Kind { return KindInventory }

// Kind implements Message.
func (Command) Kind() Kind { return KindCommand }

// Kind implements Message.
func (Result) Kind() Kind { return KindResult }

// Kind implements Message.
func (Heartbeat) Kind() Kind { return KindHeartbeat }

// Kind implements Message.
func (Error) Kind() Kind { return KindError }
