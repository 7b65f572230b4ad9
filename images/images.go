// Package images holds Canopy's view of VM images: the inventory a cloud's
// image service reports, and the comparison of two clouds' inventories that
// image distribution turns into transfer tasks.
package images

import (
	"sort"
	"strings"
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
