// Package images holds Canopy's view of VM images: the inventory a cloud's
// image service reports, and the comparison of two clouds' inventories that
// image distribution turns into transfer tasks.
package images

import (
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Status is the lifecycle state of an image in a cloud's image service.
type Status string

// Image statuses, as Glance names them.
const (
	StatusQueued    Status = "queued"
	StatusSaving    Status = "saving"
	StatusActive    Status = "active"
	StatusKilled    Status = "killed"
	StatusDeleted   Status = "deleted"
	StatusImporting Status = "importing"
)

// Checksum is a digest of an image's bytes together with the algorithm that
// produced it ("md5", "sha256", "sha512").
type Checksum struct {
	Algorithm string `json:"algorithm" cbor:"algorithm"`
	Hex       string `json:"hex" cbor:"hex"`
}

// Image is one image as a cloud reports it.
type Image struct {
	ID              string     `json:"id" cbor:"id"`
	Name            string     `json:"name" cbor:"name"`
	SizeBytes       int64      `json:"size_bytes" cbor:"size_bytes"`
	Checksums       []Checksum `json:"checksums,omitempty" cbor:"checksums,omitempty"`
	DiskFormat      string     `json:"disk_format" cbor:"disk_format"`
	ContainerFormat string     `json:"container_format" cbor:"container_format"`
	Status          Status     `json:"status" cbor:"status"`
	// Visibility is Glance's word: public, private, shared or community.
	Visibility string `json:"visibility,omitempty" cbor:"visibility,omitempty"`
	// Owner is the project that owns the image.
	Owner string `json:"owner,omitempty" cbor:"owner,omitempty"`
	// CreatedAt is when the cloud created the image record.
	CreatedAt time.Time `json:"created_at,omitzero" cbor:"created_at,omitempty"`
	// Hub is the image's canopy_hub property: the id of the hub whose
	// agent copied it in. Empty: not Canopy's; never deleted by Canopy.
	Hub string `json:"hub,omitempty" cbor:"hub,omitempty"`
	// Hidden is Glance's os_hidden: left out of default listings. Canopy
	// uploads hidden and unhides only after the bytes are verified.
	Hidden bool `json:"hidden,omitempty" cbor:"hidden,omitempty"`
	// CopyOf is the canopy_copy_of property of a copy not yet verified:
	// the "algo:hex" its bytes must have.
	CopyOf string `json:"copy_of,omitempty" cbor:"copy_of,omitempty"`
}

// Limits on what an inventory may carry per image (Validate).
const (
	maxIDLen       = 255
	maxNameLen     = 255
	maxWordLen     = 64
	maxChecksums   = 8
	maxDigestHex   = 128 // sha512
	maxPropertyLen = 255
)

// Validate checks what a cloud's image service reported: sizes, lengths,
// digests that are hex of a plausible length. Errors name the field.
func (im Image) Validate() error {
	switch {
	case im.SizeBytes < 0:
		return fmt.Errorf("size_bytes is %d, want >= 0", im.SizeBytes)
	case len(im.ID) > maxIDLen:
		return fmt.Errorf("id is %d bytes, at most %d", len(im.ID), maxIDLen)
	case len(im.Name) > maxNameLen:
		return fmt.Errorf("name is %d bytes, at most %d", len(im.Name), maxNameLen)
	case len(im.Checksums) > maxChecksums:
		return fmt.Errorf("%d checksums, at most %d", len(im.Checksums), maxChecksums)
	case len(im.Owner) > maxPropertyLen || len(im.Hub) > maxPropertyLen || len(im.CopyOf) > maxPropertyLen:
		return fmt.Errorf("owner or hub longer than %d bytes", maxPropertyLen)
	}
	for _, w := range []struct{ name, v string }{{"disk_format", im.DiskFormat}, {"container_format", im.ContainerFormat},
		{"status", string(im.Status)}, {"visibility", im.Visibility}} {
		if len(w.v) > maxWordLen {
			return fmt.Errorf("%s is %d bytes, at most %d", w.name, len(w.v), maxWordLen)
		}
	}
	for i, c := range im.Checksums {
		if err := c.Validate(); err != nil {
			return fmt.Errorf("checksum %d: %w", i, err)
		}
	}
	return nil
}

// Validate checks a checksum: a short algorithm name and a hex digest.
func (c Checksum) Validate() error {
	if c.Algorithm == "" || len(c.Algorithm) > 16 {
		return fmt.Errorf("algorithm %q: want 1 to 16 bytes", truncate(c.Algorithm, 20))
	}
	if len(c.Hex) == 0 || len(c.Hex) > maxDigestHex || len(c.Hex)%2 != 0 {
		return fmt.Errorf("%s digest is %d hex digits, want an even number up to %d", c.Algorithm, len(c.Hex), maxDigestHex)
	}
	if _, err := hex.DecodeString(c.Hex); err != nil {
		return fmt.Errorf("%s digest is not hex", c.Algorithm)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Ref names an image's contents the way the desired matrix does: a name
// and one digest (Glance's os_hash_algo and os_hash_value, normally
// sha512). Two images are the same Ref when both agree.
type Ref struct {
	Name string `json:"name" yaml:"name"`
	Algo string `json:"algo" yaml:"algo"`
	Hex  string `json:"hex" yaml:"hex"`
}

// ParseHash reads "algo:hex" (algo one of md5, sha256, sha512).
func ParseHash(s string) (algo, hexDigest string, err error) {
	a, h, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return "", "", fmt.Errorf("hash %q: want algo:hex (sha512:...)", truncate(s, 40))
	}
	a, h = strings.ToLower(a), strings.ToLower(h)
	want := map[string]int{"md5": 32, "sha256": 64, "sha512": 128}[a]
	if want == 0 {
		return "", "", fmt.Errorf("hash algorithm %q: want md5, sha256 or sha512", truncate(a, 20))
	}
	if len(h) != want {
		return "", "", fmt.Errorf("%s digest has %d hex digits, want %d", a, len(h), want)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", "", fmt.Errorf("%s digest is not hex", a)
	}
	return a, h, nil
}

// Matches reports whether im holds the bytes r names (same digest for
// r's algorithm). The name is not compared.
func (r Ref) Matches(im Image) bool {
	d := im.Digest(r.Algo)
	return d != "" && d == strings.ToLower(r.Hex)
}

// String is "name (algo:first 12 digits)".
func (r Ref) String() string {
	return fmt.Sprintf("%s (%s:%s)", r.Name, r.Algo, truncate(r.Hex, 12))
}

// Digest returns the image's checksum for algorithm, or "" if it has none.
func (im Image) Digest(algorithm string) string {
	for _, c := range im.Checksums {
		if strings.EqualFold(c.Algorithm, algorithm) {
			return strings.ToLower(c.Hex)
		}
	}
	return ""
}

// SameBytes reports whether a and b are known to hold the same bytes: they
// share at least one checksum algorithm and every shared algorithm agrees.
// Images without a common algorithm are not known to be the same.
func SameBytes(a, b Image) bool {
	shared := 0
	for _, c := range a.Checksums {
		other := b.Digest(c.Algorithm)
		if other == "" {
			continue
		}
		if other != strings.ToLower(c.Hex) {
			return false
		}
		shared++
	}
	return shared > 0
}

// Difference is what one cloud lacks or holds differently compared with a
// reference inventory, keyed by image name.
type Difference struct {
	// Missing are reference images the other cloud has no active image of that name for.
	Missing []Image
	// Mismatched are names present in both whose bytes differ (or cannot be shown equal).
	Mismatched []Image
	// Extra are active images only the other cloud has.
	Extra []Image
}

// Empty reports whether the two inventories agree.
func (d Difference) Empty() bool {
	return len(d.Missing) == 0 && len(d.Mismatched) == 0 && len(d.Extra) == 0
}

// Compare compares the active images of other against the active images of
// ref by name. Inactive images (queued, saving, killed...) are ignored on both
// sides. Results are sorted by name so the comparison is deterministic.
func Compare(ref, other []Image) Difference {
	refByName := activeByName(ref)
	otherByName := activeByName(other)
	var d Difference
	for name, r := range refByName {
		o, ok := otherByName[name]
		switch {
		case !ok:
			d.Missing = append(d.Missing, r)
		case !SameBytes(r, o):
			d.Mismatched = append(d.Mismatched, r)
		}
	}
	for name, o := range otherByName {
		if _, ok := refByName[name]; !ok {
			d.Extra = append(d.Extra, o)
		}
	}
	for _, s := range [][]Image{d.Missing, d.Mismatched, d.Extra} {
		sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
	}
	return d
}

func activeByName(in []Image) map[string]Image {
	m := make(map[string]Image, len(in))
	for _, im := range in {
		if im.Status != StatusActive {
			continue
		}
		m[im.Name] = im
	}
	return m
}
