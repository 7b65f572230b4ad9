package vmagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/canopy-grid/canopy/protocol/userdata"
)

// Metadata is what the cloud says about the VM: the subset of OpenStack's
// meta_data.json the vmagent uses.
type Metadata struct {
	UUID             string            `json:"uuid"`
	Name             string            `json:"name"`
	Hostname         string            `json:"hostname"`
	AvailabilityZone string            `json:"availability_zone"`
	ProjectID        string            `json:"project_id"`
	Meta             map[string]string `json:"meta"`
}

// MetadataSource reads the VM's metadata and user-data. Implementations:
// HTTPSource (the OpenStack metadata service), ConfigDrive (an OpenStack
// config drive) and DirSource (a plain directory, for tests).
type MetadataSource interface {
	Fetch(ctx context.Context) (Metadata, []byte, error)
}

// Size limits on what a metadata source may return.
const (
	// MaxMetaData bounds meta_data.json (Nova's holds at most 128 meta
	// items of 255 bytes, public keys and device tags: well under this).
	MaxMetaData = 256 << 10
	// MaxUserData bounds user-data (Nova's limit, see userdata.MaxSize).
	MaxUserData = userdata.MaxSize
)

// ErrNoUserData is returned when the VM was booted without user-data.
var ErrNoUserData = errors.New("the VM has no user-data")

var (
	uuidRE       = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	serverNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)
)

// ParseMetadata decodes and checks an OpenStack meta_data.json document.
// Unknown fields are ignored (Nova adds new ones); the fields the vmagent
// uses must be present and well formed.
func ParseMetadata(b []byte) (Metadata, error) {
	var md Metadata
	if len(b) > MaxMetaData {
		return md, fmt.Errorf("meta_data.json is %d bytes, limit %d", len(b), MaxMetaData)
	}
	if !utf8.Valid(b) {
		return md, errors.New("meta_data.json is not UTF-8")
	}
	if err := json.Unmarshal(b, &md); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Metadata{}, fmt.Errorf("meta_data.json: field %q must be %s, got %s", te.Field, te.Type, te.Value)
		}
		return Metadata{}, fmt.Errorf("meta_data.json is not a JSON object: %w", err)
	}
	switch {
	case md.UUID == "":
		return Metadata{}, errors.New("meta_data.json lacks uuid")
	case !uuidRE.MatchString(md.UUID):
		return Metadata{}, fmt.Errorf("meta_data.json: uuid %.80q is not a UUID", md.UUID)
	case md.Name == "":
		return Metadata{}, errors.New("meta_data.json lacks name")
	case !serverNameRE.MatchString(md.Name):
		return Metadata{}, fmt.Errorf("meta_data.json: server name %.80q is not a plain name (letters, digits, . _ -)", md.Name)
	}
	return md, nil
}

// HTTPSource reads the OpenStack metadata service at BaseURL
// (http://169.254.169.254 in a real cloud).
type HTTPSource struct {
	BaseURL string
	// Client is used for the requests; nil means one with a 5 s timeout.
	Client *http.Client
}

// Fetch implements MetadataSource.
func (h HTTPSource) Fetch(ctx context.Context) (Metadata, []byte, error) {
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	base := strings.TrimSuffix(h.BaseURL, "/") + "/openstack/latest/"
	mdb, err := get(ctx, c, base+"meta_data.json", MaxMetaData)
	if err != nil {
		return Metadata{}, nil, err
	}
	md, err := ParseMetadata(mdb)
	if err != nil {
		return Metadata{}, nil, fmt.Errorf("metadata service %s: %w", h.BaseURL, err)
	}
	ud, err := get(ctx, c, base+"user_data", MaxUserData)
	if err != nil {
		return Metadata{}, nil, err
	}
	return md, ud, nil
}

var errNotFound = errors.New("not found")

func get(ctx context.Context, c *http.Client, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		if strings.HasSuffix(url, "/user_data") {
			return nil, ErrNoUserData
		}
		return nil, fmt.Errorf("GET %s: %w", url, errNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("GET %s: %d bytes, limit %d", url, resp.ContentLength, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: over the %d-byte limit", url, limit)
	}
	return b, nil
}

// ConfigDrive reads an OpenStack config drive: a read-only ISO 9660 (or
// vfat) file system labelled config-2 holding openstack/latest/
// meta_data.json and user_data. If Dir does not hold a drive yet and Device
// is set, Fetch first mounts Device read-only on Dir through Runner.
type ConfigDrive struct {
	// Dir is where the drive is (or is to be) mounted.
	Dir string
	// Device is the drive's block device, usually
	// /dev/disk/by-label/config-2; empty means Dir is mounted already.
	Device string
	// Runner runs mount; needed only with Device.
	Runner CommandRunner
}

// DefaultConfigDriveDevice is where udev names a config drive.
const DefaultConfigDriveDevice = "/dev/disk/by-label/config-2"

// Fetch implements MetadataSource.
func (d ConfigDrive) Fetch(ctx context.Context) (Metadata, []byte, error) {
	latest := filepath.Join(d.Dir, "openstack", "latest")
	if _, err := os.Stat(latest); err != nil && d.Device != "" {
		if _, err := os.Stat(d.Device); err != nil {
			return Metadata{}, nil, fmt.Errorf("config drive: no device %s: %w", d.Device, err)
		}
		if err := os.MkdirAll(d.Dir, 0o755); err != nil {
			return Metadata{}, nil, fmt.Errorf("config drive: %w", err)
		}
		if _, err := run(ctx, d.Runner, "mount", "-o", "ro", d.Device, d.Dir); err != nil {
			return Metadata{}, nil, fmt.Errorf("config drive: %w", err)
		}
	}
	return readDir(latest, "config drive "+d.Dir)
}

// DirSource reads meta_data.json and user_data straight from a directory
// (no openstack/latest/ levels): the vmagent's tests and hand-made VMs.
type DirSource struct{ Dir string }

// Fetch implements MetadataSource.
func (d DirSource) Fetch(context.Context) (Metadata, []byte, error) {
	return readDir(d.Dir, "directory "+d.Dir)
}

func readDir(dir, what string) (Metadata, []byte, error) {
	mdb, err := readLimited(filepath.Join(dir, "meta_data.json"), MaxMetaData)
	if err != nil {
		return Metadata{}, nil, fmt.Errorf("%s: %w", what, err)
	}
	md, err := ParseMetadata(mdb)
	if err != nil {
		return Metadata{}, nil, fmt.Errorf("%s: %w", what, err)
	}
	ud, err := readLimited(filepath.Join(dir, "user_data"), MaxUserData)
	if errors.Is(err, os.ErrNotExist) {
		return Metadata{}, nil, ErrNoUserData
	}
	if err != nil {
		return Metadata{}, nil, fmt.Errorf("%s: %w", what, err)
	}
	return md, ud, nil
}
