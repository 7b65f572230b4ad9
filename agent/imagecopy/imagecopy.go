// Package imagecopy copies one image from a source cloud's image service
// into the destination's, streamed (no temporary file: memory stays a few
// buffers whatever the image's size) and verified on the fly.
//
// The guarantee: an image is never left usable with the wrong contents.
//   - The copy is uploaded into a new image created hidden (os_hidden) and
//     marked canopy_copy_of=<algo:hex>: not listed, not booted by name.
//   - The stream is hashed as it passes. At the end of the source's bytes
//     the reader compares size and digest with what the hub asked for, and
//     on a mismatch returns an error instead of the end of the stream: the
//     upload request is cut before its end, so Glance never gets a complete
//     body and never activates the image.
//   - Once active, Glance's own digest (os_hash_value) and size are checked
//     against the expected ones again (what Glance stored, not only what
//     was sent), and the image is unhidden only then.
//   - On any failure (mismatch, cut connection, cancelled copy) the partial
//     image is deleted, on a fresh context; an attempt starts by deleting
//     hidden leftovers of earlier attempts of the same copy (an agent killed
//     mid-copy leaves one, hidden and never active with wrong bytes).
//
// Route: the destination agent reads the source Glance directly, with a
// read credential for the source site (agent config image_sources). It is
// the shortest path: one TCP stream from Glance to Glance through one Go
// process, measured at the same throughput as a curl download piped into a
// curl upload (docs/images.md). Relaying through the source agent over
// QUIC (for sites whose Glance the destination cannot reach) is not built.
package imagecopy

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/canopy-grid/canopy/images"
)

// Source reads an image's bytes (agent/openstack.Driver).
type Source interface {
	DownloadImage(ctx context.Context, id string) (io.ReadCloser, error)
}

// Dest is the destination image service (agent/openstack.Driver).
type Dest interface {
	CreateHiddenImage(ctx context.Context, meta images.Image, hubID, copyOf string) (string, error)
	UploadImageData(ctx context.Context, id string, r io.Reader) error
	WaitImageActive(ctx context.Context, id string) (images.Image, error)
	GetImage(ctx context.Context, id string) (images.Image, error)
	UnhideImage(ctx context.Context, id string) error
	DeleteImage(ctx context.Context, id string) error
	HiddenImages(ctx context.Context, name string) ([]images.Image, error)
}

// Task is one copy.
type Task struct {
	Ref           images.Ref
	SourceImageID string
	SizeBytes     int64
	// Meta carries the formats and the source's other checksums (md5).
	Meta images.Image
	// HubID marks the copy as Canopy's (canopy_hub).
	HubID string
}

// Progress is a copy's progress report.
type Progress struct {
	State   string // starting, streaming, verifying, retrying, done, failed
	Attempt int
	Bytes   int64
	Total   int64
	RateBps float64
	ETA     time.Duration
	Err     error
}

// Options tune a copy.
type Options struct {
	// Attempts bounds the tries (default 3); BackoffMin doubles between
	// them (default 2 s).
	Attempts   int
	BackoffMin time.Duration
	// Every is how often Report is called while bytes flow (default 2 s).
	Every  time.Duration
	Report func(Progress)
	// Log reports cleanup failures (optional).
	Log func(msg string, err error)
	// BufferSize is the copy buffer (default 1 MiB).
	BufferSize int
}

func (o Options) withDefaults() Options {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 2 * time.Second
	}
	if o.Every <= 0 {
		o.Every = 2 * time.Second
	}
	if o.Report == nil {
		o.Report = func(Progress) {}
	}
	if o.Log == nil {
		o.Log = func(string, error) {}
	}
	if o.BufferSize <= 0 {
		o.BufferSize = 1 << 20
	}
	return o
}

// ErrMismatch marks bytes that are not what the copy asked for (size or
// digest): the source serves other bytes than it claims.
var ErrMismatch = errors.New("image bytes do not match")

// newHash returns the hash for a digest algorithm.
func newHash(algo string) (hash.Hash, error) {
	switch strings.ToLower(algo) {
	case "sha512":
		return sha512.New(), nil
	case "sha256":
		return sha256.New(), nil
	case "md5":
		return md5.New(), nil
	}
	return nil, fmt.Errorf("digest algorithm %q not supported", algo)
}

// Copy copies t from src into dst and returns the verified, visible image.
// It retries a failed attempt (Options.Attempts) and returns the last
// error; no attempt leaves an image behind except the verified one.
func Copy(ctx context.Context, t Task, src Source, dst Dest, o Options) (images.Image, error) {
	o = o.withDefaults()
	if _, err := newHash(t.Ref.Algo); err != nil {
		return images.Image{}, err
	}
	if t.SizeBytes <= 0 {
		return images.Image{}, fmt.Errorf("copy %s: source size %d: nothing to copy", t.Ref, t.SizeBytes)
	}
	var err error
	delay := o.BackoffMin
	for attempt := 1; attempt <= o.Attempts; attempt++ {
		var im images.Image
		im, err = attemptCopy(ctx, t, src, dst, o, attempt)
		if err == nil {
			o.Report(Progress{State: "done", Attempt: attempt, Bytes: t.SizeBytes, Total: t.SizeBytes})
			return im, nil
		}
		if ctx.Err() != nil || attempt == o.Attempts {
			break
		}
		o.Report(Progress{State: "retrying", Attempt: attempt, Total: t.SizeBytes, Err: err})
		tm := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			tm.Stop()
		case <-tm.C:
		}
		delay *= 2
	}
	o.Report(Progress{State: "failed", Total: t.SizeBytes, Err: err})
	return images.Image{}, err
}

// copyOf is the canopy_copy_of mark of a task.
func (t Task) copyOf() string {
	return strings.ToLower(t.Ref.Algo) + ":" + strings.ToLower(t.Ref.Hex)
}

// cleanup deletes hidden leftovers of this copy (this hub's, same mark).
func cleanup(ctx context.Context, t Task, dst Dest, o Options) {
	left, err := dst.HiddenImages(ctx, t.Ref.Name)
	if err != nil {
		o.Log("list leftovers of earlier copies", err)
		return
	}
	for _, im := range left {
		if im.Hub == t.HubID && im.CopyOf == t.copyOf() {
			if err := dst.DeleteImage(ctx, im.ID); err != nil {
				o.Log("delete leftover of an earlier copy "+im.ID, err)
			}
		}
	}
}

func attemptCopy(ctx context.Context, t Task, src Source, dst Dest, o Options, attempt int) (out images.Image, err error) {
	o.Report(Progress{State: "starting", Attempt: attempt, Total: t.SizeBytes})
	cleanup(ctx, t, dst, o)
	meta := t.Meta
	meta.Name = t.Ref.Name
	id, err := dst.CreateHiddenImage(ctx, meta, t.HubID, t.copyOf())
	if err != nil {
		return images.Image{}, fmt.Errorf("copy %s: %w", t.Ref, err)
	}
	defer func() {
		if err == nil {
			return
		}
		// The caller's context may be what failed: delete on a fresh one.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := dst.DeleteImage(dctx, id); derr != nil {
			o.Log("delete the partial image "+id, derr)
		}
	}()
	rc, err := src.DownloadImage(ctx, t.SourceImageID)
	if err != nil {
		return images.Image{}, fmt.Errorf("copy %s: read source: %w", t.Ref, err)
	}
	defer rc.Close()
	h, _ := newHash(t.Ref.Algo)
	vr := &verifier{r: rc, h: h, want: strings.ToLower(t.Ref.Hex), size: t.SizeBytes, algo: t.Ref.Algo, buf: o.BufferSize}
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		tk := time.NewTicker(o.Every)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			n := vr.n.Load()
			el := time.Since(start).Seconds()
			p := Progress{State: "streaming", Attempt: attempt, Bytes: n, Total: t.SizeBytes}
			if el > 0 && n > 0 {
				p.RateBps = float64(n) / el
				p.ETA = time.Duration(float64(t.SizeBytes-n) / p.RateBps * float64(time.Second))
			}
			o.Report(p)
		}
	}()
	err = dst.UploadImageData(ctx, id, vr)
	close(stop)
	<-done
	if vr.err != nil {
		return images.Image{}, vr.err // the reader's verdict, not the transport's word for it
	}
	if err != nil {
		return images.Image{}, fmt.Errorf("copy %s: upload: %w", t.Ref, err)
	}
	if !vr.verified {
		return images.Image{}, fmt.Errorf("copy %s: the upload ended before the source's last byte", t.Ref)
	}
	o.Report(Progress{State: "verifying", Attempt: attempt, Bytes: vr.n.Load(), Total: t.SizeBytes})
	im, err := dst.WaitImageActive(ctx, id)
	if err != nil {
		return images.Image{}, fmt.Errorf("copy %s: %w", t.Ref, err)
	}
	if err := verifyStored(t, im); err != nil {
		return images.Image{}, err
	}
	if err := dst.UnhideImage(ctx, id); err != nil {
		return images.Image{}, fmt.Errorf("copy %s: %w", t.Ref, err)
	}
	im.Hidden, im.CopyOf = false, ""
	return im, nil
}

// verifyStored checks what the destination stored against the task: size,
// the digest if it computed that algorithm, md5 if both sides have one.
// Glance always computes md5 and its os_hash (sha512 by default).
func verifyStored(t Task, im images.Image) error {
	if im.SizeBytes != t.SizeBytes {
		return fmt.Errorf("copy %s: %w: the destination stored %d bytes, want %d", t.Ref, ErrMismatch, im.SizeBytes, t.SizeBytes)
	}
	checked := 0
	for _, want := range append([]images.Checksum{{Algorithm: t.Ref.Algo, Hex: t.Ref.Hex}}, t.Meta.Checksums...) {
		got := im.Digest(want.Algorithm)
		if got == "" {
			continue
		}
		if got != strings.ToLower(want.Hex) {
			return fmt.Errorf("copy %s: %w: the destination computed %s %s, want %s", t.Ref, ErrMismatch, want.Algorithm, got, strings.ToLower(want.Hex))
		}
		checked++
	}
	if checked == 0 {
		return fmt.Errorf("copy %s: the destination reports no digest to check the stored bytes by", t.Ref)
	}
	return nil
}

// verifier hashes and counts the stream; at its end (or past the expected
// size) it returns ErrMismatch instead of io.EOF when the bytes are not
// the ones asked for, so the upload never completes with them.
type verifier struct {
	r        io.Reader
	h        hash.Hash
	n        atomic.Int64
	size     int64
	want     string
	algo     string
	buf      int
	err      error
	verified bool
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if len(p) > v.buf {
		p = p[:v.buf]
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	total := v.n.Add(int64(n))
	if total > v.size {
		v.err = fmt.Errorf("%w: the source sent more than %d bytes", ErrMismatch, v.size)
		return 0, v.err
	}
	if errors.Is(err, io.EOF) {
		if total != v.size {
			v.err = fmt.Errorf("%w: the source sent %d bytes, want %d", ErrMismatch, total, v.size)
			return 0, v.err
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			v.err = fmt.Errorf("%w: the source's bytes have %s %s, want %s", ErrMismatch, v.algo, got, v.want)
			return 0, v.err
		}
		v.verified = true
		return n, io.EOF
	}
	if err != nil {
		v.err = fmt.Errorf("read source: %w", err)
		return 0, v.err
	}
	return n, nil
}
