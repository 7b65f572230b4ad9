package protocol

import (
	"fmt"
	"time"

	"github.com/canopy-grid/canopy/images"
)

// KindImageProgress carries an agent's progress on an image copy.
// Values are part of the wire format: never renumber.
const KindImageProgress Kind = 11

// Image command kinds.
const (
	// CmdImageCopy asks the destination site's agent to copy an image from
	// another site's Glance into its own.
	CmdImageCopy CommandKind = "image_copy"
	// CmdImageDelete asks an agent to delete one image Canopy copied in.
	CmdImageDelete CommandKind = "image_delete"
)

// ImageCopyCommand names the bytes to copy (name and digest), where to read
// them (the source site and its image id) and what they must be (size and
// checksums as the source reports them). The agent uploads into a hidden,
// queued image, hashes the stream as it passes, refuses to complete an
// upload whose bytes differ, and deletes any partial image.
type ImageCopyCommand struct {
	Ref             images.Ref `cbor:"ref"`
	SourceSite      string     `cbor:"source_site"`
	SourceImageID   string     `cbor:"source_image_id"`
	SizeBytes       int64      `cbor:"size_bytes"`
	DiskFormat      string     `cbor:"disk_format"`
	ContainerFormat string     `cbor:"container_format"`
	// Checksums are every digest the source reported (md5, os_hash).
	Checksums []images.Checksum `cbor:"checksums,omitempty"`
}

// ImageDeleteCommand asks for one image to be deleted. The agent deletes
// only an image carrying this hub's canopy_hub property, and refuses one
// that a server of its project still uses.
type ImageDeleteCommand struct {
	ImageID string `cbor:"image_id"`
	Name    string `cbor:"name"`
	Reason  string `cbor:"reason"`
}

// Image copy states (ImageProgress.State).
const (
	CopyStarting  = "starting"
	CopyStreaming = "streaming"
	CopyVerifying = "verifying"
	CopyRetrying  = "retrying"
	CopyDone      = "done"
	CopyFailed    = "failed"
)

// ImageProgress is an agent's report on one image copy it carries out, sent
// every few seconds while bytes flow and when the state changes.
type ImageProgress struct {
	CommandID string     `cbor:"command_id"`
	Ref       images.Ref `cbor:"ref"`
	State     string     `cbor:"state"`
	Attempt   int        `cbor:"attempt"`
	Bytes     int64      `cbor:"bytes"`
	Total     int64      `cbor:"total"`
	// RateBps is the rate of the current attempt, bytes per second.
	RateBps float64       `cbor:"rate_bps"`
	ETA     time.Duration `cbor:"eta"`
	Error   string        `cbor:"error,omitempty"`
	At      time.Time     `cbor:"at"`
}

// Kind implements Message.
func (ImageProgress) Kind() Kind { return KindImageProgress }

// Validate checks an ImageProgress: a command, a known state, counts and
// rate that make sense.
func (p ImageProgress) Validate() error {
	if p.CommandID == "" || len(p.CommandID) > maxNameLen {
		return fmt.Errorf("image progress needs a command id of 1 to 255 bytes, has %d", len(p.CommandID))
	}
	switch p.State {
	case CopyStarting, CopyStreaming, CopyVerifying, CopyRetrying, CopyDone, CopyFailed:
	default:
		return fmt.Errorf("image progress %q: state %.40q unknown", p.CommandID, p.State)
	}
	if err := validRef(p.Ref, true); err != nil {
		return fmt.Errorf("image progress %q: %w", p.CommandID, err)
	}
	for _, c := range []struct {
		name string
		n    int64
	}{{"attempt", int64(p.Attempt)}, {"bytes", p.Bytes}, {"total", p.Total}, {"eta", int64(p.ETA)}} {
		if err := checkCount("image progress "+c.name, c.n, 0); err != nil {
			return err
		}
	}
	if err := checkFloat("image progress rate_bps", p.RateBps, false); err != nil {
		return err
	}
	if len(p.Error) > maxTextLen {
		return fmt.Errorf("image progress error text is %d bytes, limit %d", len(p.Error), maxTextLen)
	}
	return nil
}

// validRef checks a Ref's sizes (and, with digest, that it names one).
func validRef(r images.Ref, digest bool) error {
	if r.Name == "" || len(r.Name) > maxNameLen {
		return fmt.Errorf("image name of %d bytes, want 1 to %d", len(r.Name), maxNameLen)
	}
	if !digest && r.Algo == "" && r.Hex == "" {
		return nil
	}
	if err := (images.Checksum{Algorithm: r.Algo, Hex: r.Hex}).Validate(); err != nil {
		return fmt.Errorf("image %.64q: %w", r.Name, err)
	}
	return nil
}

// Validate checks an ImageCopyCommand.
func (c ImageCopyCommand) Validate() error {
	if err := validRef(c.Ref, true); err != nil {
		return err
	}
	if c.SourceSite == "" || len(c.SourceSite) > maxNameLen || c.SourceImageID == "" || len(c.SourceImageID) > maxNameLen {
		return fmt.Errorf("image copy of %.64q needs a source site and image id of 1 to 255 bytes", c.Ref.Name)
	}
	return images.Image{Name: c.Ref.Name, SizeBytes: c.SizeBytes, DiskFormat: c.DiskFormat,
		ContainerFormat: c.ContainerFormat, Checksums: c.Checksums}.Validate()
}

// Validate checks an ImageDeleteCommand.
func (c ImageDeleteCommand) Validate() error {
	if c.ImageID == "" || len(c.ImageID) > maxNameLen || len(c.Name) > maxNameLen || len(c.Reason) > maxTextLen {
		return fmt.Errorf("image delete needs an image id of 1 to 255 bytes (has %d), a name and reason within bounds", len(c.ImageID))
	}
	return nil
}
