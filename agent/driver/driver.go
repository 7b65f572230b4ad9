// Package driver is the contract between the site agent and a cloud: the
// Driver interface, the servers it lists and boots, the metadata keys Canopy
// writes on its servers, and the errors that know their class. Cloud
// drivers (agent/localcloud, agent/openstack) implement it without linking
// the agent itself.
package driver

import (
	"context"
	"io"
	"time"

	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

// Driver is what the agent needs from one cloud: its sizes and limits, the
// servers in its project, booting and deleting servers, and its images.
// Implementations: localcloud (VMs as local processes, for the demo and
// tests) and openstack (Nova, Glance and Neutron through gophercloud).
//
// Drivers must be safe for concurrent use and must not keep their own
// record of what Canopy booted: the cloud's server listing, with the
// metadata written at boot, is the record.
type Driver interface {
	// Flavors lists the VM sizes the project may boot.
	Flavors(ctx context.Context) ([]protocol.Flavor, error)
	// Limits returns the project's absolute limits and usage.
	Limits(ctx context.Context) (protocol.Limits, error)
	// Servers lists every server in the project, Canopy's and foreign ones.
	Servers(ctx context.Context) ([]Server, error)
	// Boot creates one server. The name is unique per site; the caller has
	// already checked that no server of that name exists.
	Boot(ctx context.Context, spec BootSpec) (Server, error)
	// Delete deletes a server by id. Deleting a server that is already gone
	// is not an error.
	Delete(ctx context.Context, id string) error
	// Images lists the project's images.
	Images(ctx context.Context) ([]images.Image, error)
	// UploadImage creates an image from r and returns it once active.
	UploadImage(ctx context.Context, meta images.Image, r io.Reader) (images.Image, error)
	// DownloadImage streams an image's bytes.
	DownloadImage(ctx context.Context, id string) (io.ReadCloser, error)
}

// Metadata keys Canopy writes on every server it boots. Servers without
// MetaHub are foreign: they count against quotas but are never touched.
const (
	MetaHub    = "canopy_hub"
	MetaSite   = "canopy_site"
	MetaGroup  = "canopy_group"
	MetaVMType = "canopy_vm_type"
	MetaPlan   = "canopy_plan"
	// MetaTokenID holds the id (nonce) of the identity token minted for
	// the server at boot: a token is accepted only from the server it was
	// minted for, not from a later server that reuses the name.
	MetaTokenID = "canopy_token_id"
	// MetaKeepAlive and MetaMaxLifetime hold the jobs' keep-alive and
	// maximum lifetime requests the server was booted for, as Go
	// durations ("30m0s"); absent when the jobs asked for none.
	MetaKeepAlive   = "canopy_keep_alive"
	MetaMaxLifetime = "canopy_max_lifetime"
)

// ServerStatus is a cloud server's status, reduced to what Canopy acts on.
// Server.CloudStatus keeps the cloud's own word.
type ServerStatus string

// Server statuses.
const (
	// StatusBuild: created, not yet running (Nova BUILD).
	StatusBuild ServerStatus = "BUILD"
	// StatusActive: running (Nova ACTIVE with no deletion under way).
	StatusActive ServerStatus = "ACTIVE"
	// StatusError: failed (Nova ERROR); Server.Fault says why.
	StatusError ServerStatus = "ERROR"
	// StatusStopped: exists but runs nothing and will not by itself:
	// SHUTOFF, SUSPENDED, PAUSED, SHELVED, SHELVED_OFFLOADED, STOPPED,
	// RESCUE, and any status word Canopy does not know.
	StatusStopped ServerStatus = "STOPPED"
	// StatusRebooting: still there and expected back: REBOOT, HARD_REBOOT,
	// MIGRATING, RESIZE, VERIFY_RESIZE, REVERT_RESIZE, PASSWORD.
	StatusRebooting ServerStatus = "REBOOTING"
	// StatusDeleting: a deletion is under way (Nova shows such a server
	// ACTIVE with task_state "deleting").
	StatusDeleting ServerStatus = "DELETING"
	// StatusDeleted: deleted or soft-deleted; gone for Canopy's purposes.
	StatusDeleted ServerStatus = "DELETED"
)

// Server is one server as the cloud lists it.
type Server struct {
	ID     string
	Name   string
	Flavor string
	Image  string
	Status ServerStatus
	// CloudStatus is the cloud's own status word (ACTIVE, SHUTOFF,
	// HARD_REBOOT, ...), with the task state when one is under way
	// ("ACTIVE/deleting"), for people.
	CloudStatus string
	Fault       string
	Metadata    map[string]string
	CreatedAt   time.Time
}

// BootSpec is everything needed to create one server.
type BootSpec struct {
	Name     string
	Flavor   string
	Image    string
	Metadata map[string]string
	UserData []byte
}

// ClassifiedError is implemented by driver errors that know their class
// (agent/openstack's errors do).
type ClassifiedError interface {
	error
	ErrorClass() protocol.ErrorClass
}
