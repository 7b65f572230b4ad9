package imagecopy

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/canopy-grid/canopy/images"
)

// fakeGlance behaves like Glance for what Copy uses: an upload that ends
// with an error from its body leaves the image queued (Glance's eventlet
// server raises on a chunked body cut before its end); a complete one makes
// it active with Glance's own md5 and sha512 of the bytes it received.
type fakeGlance struct {
	mu      sync.Mutex
	seq     int
	images  map[string]*images.Image
	deleted []string
	// corrupt flips a byte of what is stored (a destination that stores
	// other bytes than it was sent).
	corrupt bool
}

func newFake() *fakeGlance { return &fakeGlance{images: map[string]*images.Image{}} }

func (g *fakeGlance) CreateHiddenImage(_ context.Context, meta images.Image, hub, copyOf string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	id := fmt.Sprintf("img-%d", g.seq)
	g.images[id] = &images.Image{ID: id, Name: meta.Name, Status: images.StatusQueued, Hidden: true, Hub: hub, CopyOf: copyOf}
	return id, nil
}

func (g *fakeGlance) UploadImageData(ctx context.Context, id string, r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err // the request is cut: the image stays queued
	}
	b := buf.Bytes()
	if g.corrupt && len(b) > 0 {
		b[0] ^= 1
	}
	m, s := md5.Sum(b), sha512.Sum512(b)
	g.mu.Lock()
	defer g.mu.Unlock()
	im := g.images[id]
	im.Status, im.SizeBytes = images.StatusActive, int64(len(b))
	im.Checksums = []images.Checksum{{Algorithm: "md5", Hex: hex.EncodeToString(m[:])}, {Algorithm: "sha512", Hex: hex.EncodeToString(s[:])}}
	return nil
}

func (g *fakeGlance) GetImage(_ context.Context, id string) (images.Image, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if im, ok := g.images[id]; ok {
		return *im, nil
	}
	return images.Image{}, errors.New("404")
}

func (g *fakeGlance) WaitImageActive(ctx context.Context, id string) (images.Image, error) {
	im, err := g.GetImage(ctx, id)
	if err == nil && im.Status != images.StatusActive {
		err = fmt.Errorf("image %s is %s", id, im.Status)
	}
	return im, err
}

func (g *fakeGlance) UnhideImage(_ context.Context, id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.images[id].Hidden, g.images[id].CopyOf = false, ""
	return nil
}

func (g *fakeGlance) DeleteImage(_ context.Context, id string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.images, id)
	g.deleted = append(g.deleted, id)
	return nil
}

func (g *fakeGlance) HiddenImages(_ context.Context, name string) ([]images.Image, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []images.Image
	for _, im := range g.images {
		if im.Hidden && im.Name == name {
			out = append(out, *im)
		}
	}
	return out, nil
}

// source serves data, or altered/short data for the first bad attempts.
type source struct {
	data      []byte
	bad       int // attempts served wrong
	mode      string
	downloads int
}

func (s *source) DownloadImage(context.Context, string) (io.ReadCloser, error) {
	s.downloads++
	b := bytes.Clone(s.data)
	if s.downloads <= s.bad {
		switch s.mode {
		case "alter":
			b[len(b)/2] ^= 0xff
		case "short":
			b = b[:len(b)/2]
		case "long":
			b = append(b, 0)
		}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func TestCopy(t *testing.T) {
	data := bytes.Repeat([]byte("canopy image "), 100000)
	sum := sha512.Sum512(data)
	m := md5.Sum(data)
	task := Task{Ref: images.Ref{Name: "el9", Algo: "sha512", Hex: hex.EncodeToString(sum[:])}, SourceImageID: "src", SizeBytes: int64(len(data)),
		HubID: "hub-1", Meta: images.Image{Checksums: []images.Checksum{{Algorithm: "md5", Hex: hex.EncodeToString(m[:])}}}}
	cases := []struct {
		name     string
		bad      int
		mode     string
		corrupt  bool
		attempts int
		wantErr  string
	}{
		{name: "good copy", attempts: 3},
		{name: "altered once, retried", bad: 1, mode: "alter", attempts: 3},
		{name: "always altered: refused", bad: 9, mode: "alter", attempts: 2, wantErr: "the source's bytes have sha512"},
		{name: "short source", bad: 9, mode: "short", attempts: 1, wantErr: "want 1300000"},
		{name: "long source", bad: 9, mode: "long", attempts: 1, wantErr: "more than 1300000 bytes"},
		{name: "destination stores other bytes", corrupt: true, attempts: 2, wantErr: "the destination computed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newFake()
			g.corrupt = tc.corrupt
			// A leftover of an earlier copy (an agent killed mid-copy) and
			// another hub's hidden image of the same name.
			left, _ := g.CreateHiddenImage(context.Background(), images.Image{Name: "el9"}, "hub-1", task.copyOf())
			other, _ := g.CreateHiddenImage(context.Background(), images.Image{Name: "el9"}, "hub-2", task.copyOf())
			src := &source{data: data, bad: tc.bad, mode: tc.mode}
			var states []string
			im, err := Copy(context.Background(), task, src, g, Options{Attempts: tc.attempts, BackoffMin: 1, Report: func(p Progress) { states = append(states, p.State) }})
			if _, ok := g.images[left]; ok {
				t.Error("the leftover of an earlier copy was not deleted")
			}
			if _, ok := g.images[other]; !ok {
				t.Error("another hub's image was deleted")
			}
			for id, x := range g.images {
				if id != other && id != im.ID {
					t.Errorf("image %s left behind: %+v", id, x)
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrMismatch) {
					t.Fatalf("Copy: %v, want ErrMismatch naming %q", err, tc.wantErr)
				}
				if src.downloads != tc.attempts || states[len(states)-1] != "failed" {
					t.Fatalf("%d downloads, states %v", src.downloads, states)
				}
				return
			}
			if err != nil {
				t.Fatalf("Copy: %v", err)
			}
			got := g.images[im.ID]
			if got.Hidden || got.Status != images.StatusActive || got.Digest("sha512") != task.Ref.Hex || got.Hub != "hub-1" || got.CopyOf != "" {
				t.Fatalf("copy %+v", got)
			}
			if src.downloads != tc.bad+1 || states[len(states)-1] != "done" {
				t.Fatalf("%d downloads, states %v", src.downloads, states)
			}
		})
	}
}
