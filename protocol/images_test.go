package protocol

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/images"
)

var sha512Hex = strings.Repeat("ab", 64)

func sampleCopy() Command {
	return Command{ID: "img-1", Op: CmdImageCopy, ImageCopy: &ImageCopyCommand{
		Ref:        images.Ref{Name: "worker-el9", Algo: "sha512", Hex: sha512Hex},
		SourceSite: "west", SourceImageID: "3f0c", SizeBytes: 1 << 30, DiskFormat: "qcow2", ContainerFormat: "bare",
		Checksums: []images.Checksum{{Algorithm: "md5", Hex: strings.Repeat("cd", 16)}, {Algorithm: "sha512", Hex: sha512Hex}}}}
}

func sampleProgress() ImageProgress {
	return ImageProgress{CommandID: "img-1", Ref: images.Ref{Name: "worker-el9", Algo: "sha512", Hex: sha512Hex},
		State: CopyStreaming, Attempt: 1, Bytes: 1 << 20, Total: 1 << 30, RateBps: 1e8, ETA: 10 * time.Second,
		At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// TestImageMessagesRoundTrip: the image command bodies and the progress
// report survive encoding unchanged.
func TestImageMessagesRoundTrip(t *testing.T) {
	for _, m := range []Message{sampleCopy(), sampleProgress(),
		Command{ID: "d", Op: CmdImageDelete, ImageDelete: &ImageDeleteCommand{ImageID: "x", Name: "n", Reason: "unwanted"}}} {
		b, err := Encode(nil, Version, m)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind(), err)
		}
		_, got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind(), err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: round trip %#v, want %#v", m.Kind(), got, m)
		}
	}
}

// TestImageMessagesRefused: what a working agent or hub cannot send is
// refused at decoding, naming what was wrong.
func TestImageMessagesRefused(t *testing.T) {
	cp := func(f func(c *ImageCopyCommand)) Command {
		c := sampleCopy()
		body := *c.ImageCopy
		f(&body)
		c.ImageCopy = &body
		return c
	}
	pr := func(f func(p *ImageProgress)) ImageProgress {
		p := sampleProgress()
		f(&p)
		return p
	}
	cases := []struct {
		name string
		m    Message
		want string
	}{
		{"copy without body", Command{ID: "c", Op: CmdImageCopy}, "must carry exactly its own body"},
		{"copy with two bodies", func() Command {
			c := sampleCopy()
			c.ImageDelete = &ImageDeleteCommand{ImageID: "x"}
			return c
		}(), "must carry exactly its own body"},
		{"copy without source", cp(func(c *ImageCopyCommand) { c.SourceImageID = "" }), "needs a source site and image id"},
		{"copy digest not hex", cp(func(c *ImageCopyCommand) { c.Ref.Hex = strings.Repeat("zz", 64) }), "digest is not hex"},
		{"copy without digest", cp(func(c *ImageCopyCommand) { c.Ref.Algo, c.Ref.Hex = "", "" }), "algorithm"},
		{"copy negative size", cp(func(c *ImageCopyCommand) { c.SizeBytes = -5 }), "size_bytes is -5"},
		{"copy odd checksum", cp(func(c *ImageCopyCommand) { c.Checksums[0].Hex = "abc" }), "3 hex digits"},
		{"delete without id", Command{ID: "d", Op: CmdImageDelete, ImageDelete: &ImageDeleteCommand{}}, "image id of 1 to 255 bytes"},
		{"progress without command", pr(func(p *ImageProgress) { p.CommandID = "" }), "needs a command id"},
		{"progress unknown state", pr(func(p *ImageProgress) { p.State = "teleporting" }), `state "teleporting" unknown`},
		{"progress negative bytes", pr(func(p *ImageProgress) { p.Bytes = -1 }), "bytes is -1"},
		{"progress NaN rate", pr(func(p *ImageProgress) { p.RateBps = math.NaN() }), "rate_bps is NaN"},
		{"progress negative eta", pr(func(p *ImageProgress) { p.ETA = -time.Second }), "eta is"},
		{"inventory image bad digest", func() Inventory {
			i := sampleInventory(1)
			i.Images[0].Checksums = []images.Checksum{{Algorithm: "sha256", Hex: "xyz"}}
			return i
		}(), "image 0: checksum 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(nil, Version, tc.m)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = Decode(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
