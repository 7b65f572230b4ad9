package openstack

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	gimages "github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

// PropSHA256 is the Glance image property in which UploadImage records the
// image's SHA-256 (Glance itself computes MD5 and, usually, SHA-512).
const PropSHA256 = "canopy_sha256"

// PropHub is the Glance image property naming the hub whose agent copied
// the image in: only such images are ever deleted by Canopy.
const PropHub = "canopy_hub"

// clipN cuts s to at most n bytes.
func clipN(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// imagePageSize is how many images one Glance list call asks for.
const imagePageSize = 200

func (d *Driver) imageService(op string) error {
	if d.image == nil {
		return &Error{Op: op, Class: protocol.ErrClassInvalid, Msg: "the cloud's catalog has no image service"}
	}
	return nil
}

// Images implements driver.Driver.
func (d *Driver) Images(ctx context.Context) ([]images.Image, error) {
	const op = "list images"
	if err := d.imageService(op); err != nil {
		return nil, err
	}
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	pages, err := gimages.List(d.image, gimages.ListOpts{Limit: imagePageSize}).AllPages(ctx)
	if err != nil {
		return nil, wrapError(op, err, d.secrets)
	}
	list, err := gimages.ExtractImages(pages)
	if err != nil {
		return nil, wrapError(op, fmt.Errorf("decode images: %w", err), d.secrets)
	}
	out := make([]images.Image, 0, len(list))
	for _, im := range list {
		out = append(out, convertImage(im))
	}
	return out, nil
}

// convertImage turns Glance's record into Canopy's. What Glance says is
// untrusted: digests that are not plausible hex are left out and long
// words cut, so one odd image never costs the site its inventory (the hub
// refuses an inventory that fails images.Image.Validate).
func convertImage(im gimages.Image) images.Image {
	out := images.Image{
		ID: clipN(im.ID, 255), Name: clipN(im.Name, 255), SizeBytes: max(im.SizeBytes, 0),
		DiskFormat: clipN(im.DiskFormat, 64), ContainerFormat: clipN(im.ContainerFormat, 64),
		Status: images.Status(clipN(string(im.Status), 64)), Visibility: clipN(string(im.Visibility), 64),
		Owner: clipN(im.Owner, 255), CreatedAt: im.CreatedAt.UTC(), Hidden: im.Hidden,
	}
	if v, _ := im.Properties[PropHub].(string); v != "" {
		out.Hub = clipN(v, 255)
	}
	defer func() {
		out.Checksums = slices.DeleteFunc(out.Checksums, func(c images.Checksum) bool { return c.Validate() != nil })
	}()
	if im.Checksum != "" {
		out.Checksums = append(out.Checksums, images.Checksum{Algorithm: "md5", Hex: strings.ToLower(im.Checksum)})
	}
	algo, _ := im.Properties["os_hash_algo"].(string)
	value, _ := im.Properties["os_hash_value"].(string)
	if algo != "" && value != "" && !strings.EqualFold(algo, "md5") {
		out.Checksums = append(out.Checksums, images.Checksum{Algorithm: strings.ToLower(algo), Hex: strings.ToLower(value)})
	}
	if v, _ := im.Properties[PropSHA256].(string); v != "" && !strings.EqualFold(algo, "sha256") {
		out.Checksums = append(out.Checksums, images.Checksum{Algorithm: "sha256", Hex: strings.ToLower(v)})
	}
	return out
}

// resolveImage finds an active image's ID from its ID or name; of several
// active images with one name the newest wins.
func (d *Driver) resolveImage(ctx context.Context, ref string) (string, error) {
	if uuidRE.MatchString(ref) {
		return ref, nil
	}
	now := time.Now()
	if id, ok := d.names.image(ref, now); ok {
		return id, nil
	}
	if err := d.imageService("look up image"); err != nil {
		return "", err
	}
	pages, err := gimages.List(d.image, gimages.ListOpts{Name: ref, Status: gimages.ImageStatusActive}).AllPages(ctx)
	if err != nil {
		return "", fmt.Errorf("look up image %q: %w", ref, err)
	}
	list, err := gimages.ExtractImages(pages)
	if err != nil {
		return "", fmt.Errorf("decode images: %w", err)
	}
	var best *gimages.Image
	for i := range list {
		if list[i].Status != gimages.ImageStatusActive || list[i].Name != ref {
			continue
		}
		if best == nil || list[i].CreatedAt.After(best.CreatedAt) {
			best = &list[i]
		}
	}
	if best == nil {
		return "", fmt.Errorf("active image %q: %w", ref, errNotFound)
	}
	d.names.setImage(ref, imageRef{id: best.ID, at: now})
	return best.ID, nil
}

// UploadImage implements driver.Driver: it creates a private image from meta
// (name, disk and container format), streams r into Glance without
// buffering it, verifies every checksum in meta that it or Glance computed
// (MD5, SHA-256, Glance's os_hash), and returns the image once active. On
// any failure the partial image is deleted.
func (d *Driver) UploadImage(ctx context.Context, meta images.Image, r io.Reader) (images.Image, error) {
	op := fmt.Sprintf("upload image %q", meta.Name)
	if err := d.imageService(op); err != nil {
		return images.Image{}, err
	}
	if strings.TrimSpace(meta.Name) == "" {
		return images.Image{}, &Error{Op: op, Class: protocol.ErrClassInvalid, Msg: "image name is empty"}
	}
	diskFormat, containerFormat := meta.DiskFormat, meta.ContainerFormat
	if diskFormat == "" {
		diskFormat = "qcow2"
	}
	if containerFormat == "" {
		containerFormat = "bare"
	}
	create := gimages.CreateOpts{Name: meta.Name, DiskFormat: diskFormat, ContainerFormat: containerFormat}
	if want := meta.Digest("sha256"); want != "" {
		create.Properties = map[string]string{PropSHA256: want}
	}
	cctx, cancel := d.opCtx(ctx)
	im, err := gimages.Create(cctx, d.image, create).Extract()
	cancel()
	if err != nil {
		return images.Image{}, wrapError(op, err, d.secrets)
	}
	fail := func(err error) (images.Image, error) {
		// Best effort, on a fresh context: the caller's may be what failed.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RequestTimeout)
		defer cancel()
		if derr := gimages.Delete(dctx, d.image, im.ID).ExtractErr(); derr != nil && !gophercloud.ResponseCodeIs(derr, http.StatusNotFound) {
			d.log.WithError(wrapError("delete image "+im.ID, derr, d.secrets)).Warn("openstack: could not delete a failed upload")
		}
		return images.Image{}, err
	}

	hashes := map[string]hash.Hash{"sha256": sha256.New(), "md5": md5.New()}
	writers := make([]io.Writer, 0, len(hashes))
	for _, h := range hashes {
		writers = append(writers, h)
	}
	body := io.TeeReader(r, io.MultiWriter(writers...))
	if err := imagedata.Upload(withoutRetries(ctx), d.image, im.ID, body).ExtractErr(); err != nil {
		return fail(wrapError(op, err, d.secrets))
	}
	got, err := d.waitImageActive(ctx, im.ID)
	if err != nil {
		return fail(wrapError(op, err, d.secrets))
	}
	computed := map[string]string{}
	for algo, h := range hashes {
		computed[algo] = hex.EncodeToString(h.Sum(nil))
	}
	// The bytes read from r against what the caller expected...
	for _, want := range meta.Checksums {
		algo := strings.ToLower(want.Algorithm)
		have := computed[algo]
		if have == "" && algo != "sha256" {
			have = got.Digest(algo) // e.g. sha512, computed by Glance
		}
		if have != "" && have != strings.ToLower(want.Hex) {
			return fail(&Error{Op: op, Class: protocol.ErrClassInvalid,
				Msg: fmt.Sprintf("%s of the uploaded bytes is %s, expected %s", algo, have, strings.ToLower(want.Hex))})
		}
	}
	// ...and against what Glance computed from the bytes it received.
	if g := got.Digest("md5"); g != "" && g != computed["md5"] {
		return fail(&Error{Op: op, Class: protocol.ErrClassTransient,
			Msg: fmt.Sprintf("glance stored md5 %s but %s was sent", g, computed["md5"])})
	}
	if got.Digest("sha256") == "" {
		got.Checksums = append(got.Checksums, images.Checksum{Algorithm: "sha256", Hex: computed["sha256"]})
	}
	return got, nil
}

// waitImageActive polls an image until Glance has it active (or it fails),
// within the request timeout.
func (d *Driver) waitImageActive(ctx context.Context, id string) (images.Image, error) {
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	delay := 100 * time.Millisecond
	for attempt := 0; attempt < 1000; attempt++ {
		im, err := gimages.Get(ctx, d.image, id).Extract()
		if err != nil {
			return images.Image{}, err
		}
		switch im.Status {
		case gimages.ImageStatusActive:
			return convertImage(*im), nil
		case gimages.ImageStatusKilled, gimages.ImageStatusDeleted, gimages.ImageStatusPendingDelete, gimages.ImageStatusDeactivated:
			return images.Image{}, fmt.Errorf("image %s is %s after upload", id, im.Status)
		}
		if !wait(ctx, delay) {
			return images.Image{}, fmt.Errorf("image %s still %s: %w", id, im.Status, context.DeadlineExceeded)
		}
		delay = min(2*delay, 2*time.Second)
	}
	return images.Image{}, fmt.Errorf("image %s never became active", id)
}

// DownloadImage implements driver.Driver: the image's bytes straight from
// Glance. When Glance sends Content-MD5, a mismatch is reported by Read at
// the end of the stream. ctx must stay alive while the body is read.
func (d *Driver) DownloadImage(ctx context.Context, id string) (io.ReadCloser, error) {
	op := "download image " + id
	if err := d.imageService(op); err != nil {
		return nil, err
	}
	res := imagedata.Download(ctx, d.image, id)
	body, err := res.Extract()
	if err != nil {
		if gophercloud.ResponseCodeIs(err, http.StatusNoContent) {
			return nil, &Error{Op: op, Class: protocol.ErrClassInvalid, StatusCode: http.StatusNoContent, Msg: "the image has no data"}
		}
		return nil, wrapError(op, err, d.secrets)
	}
	want := contentMD5(res.Header.Get("Content-MD5"))
	if want == "" {
		return body, nil
	}
	return &verifyingReader{rc: body, h: md5.New(), want: want, id: id}, nil
}

// contentMD5 reads a Content-MD5 header as lowercase hex: Glance sends hex,
// RFC 1864 says base64. Anything else is ignored ("").
func contentMD5(v string) string {
	v = strings.TrimSpace(v)
	if raw, err := base64.StdEncoding.DecodeString(v); err == nil && len(raw) == md5.Size {
		return hex.EncodeToString(raw)
	}
	if raw, err := hex.DecodeString(v); err == nil && len(raw) == md5.Size {
		return strings.ToLower(v)
	}
	return ""
}

// verifyingReader checks a stream's digest when it reaches EOF.
type verifyingReader struct {
	rc   io.ReadCloser
	h    hash.Hash
	want string
	id   string
}

// errDigestMismatch marks a download whose bytes do not match Glance's checksum.
var errDigestMismatch = errors.New("downloaded bytes do not match the image's checksum")

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, &Error{Op: "download image " + v.id, Class: protocol.ErrClassTransient,
				Msg: fmt.Sprintf("md5 %s, Glance says %s", got, v.want), err: errDigestMismatch}
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.rc.Close() }

// PropCopyOf is the Glance property on an image Canopy is copying in: the
// digest ("algo:hex") its bytes must have. With os_hidden it marks a copy
// not yet verified; a leftover (agent killed) is found and deleted by it.
const PropCopyOf = "canopy_copy_of"

// CreateHiddenImage creates a queued, hidden image (os_hidden: left out of
// listings and of boots by name) with Canopy's properties: canopy_hub and
// canopy_copy_of. It returns the new image's id.
func (d *Driver) CreateHiddenImage(ctx context.Context, meta images.Image, hubID, copyOf string) (string, error) {
	op := fmt.Sprintf("create image %q", meta.Name)
	if err := d.imageService(op); err != nil {
		return "", err
	}
	hidden := true
	create := gimages.CreateOpts{Name: meta.Name, DiskFormat: meta.DiskFormat, ContainerFormat: meta.ContainerFormat,
		Hidden: &hidden, Properties: map[string]string{PropHub: hubID, PropCopyOf: copyOf}}
	if create.DiskFormat == "" {
		create.DiskFormat = "qcow2"
	}
	if create.ContainerFormat == "" {
		create.ContainerFormat = "bare"
	}
	cctx, cancel := d.opCtx(ctx)
	defer cancel()
	im, err := gimages.Create(cctx, d.image, create).Extract()
	if err != nil {
		return "", wrapError(op, err, d.secrets)
	}
	return im.ID, nil
}

// UploadImageData streams r into a queued image (PUT /v2/images/{id}/file)
// in one request, without retries (r cannot be read twice). An error from
// r aborts the request before its end: Glance never receives a complete
// body and never activates the image.
func (d *Driver) UploadImageData(ctx context.Context, id string, r io.Reader) error {
	op := "upload image data " + id
	if err := d.imageService(op); err != nil {
		return err
	}
	if err := imagedata.Upload(withoutRetries(ctx), d.image, id, r).ExtractErr(); err != nil {
		return wrapError(op, err, d.secrets)
	}
	return nil
}

// GetImage returns one image, hidden or not.
func (d *Driver) GetImage(ctx context.Context, id string) (images.Image, error) {
	op := "get image " + id
	if err := d.imageService(op); err != nil {
		return images.Image{}, err
	}
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	im, err := gimages.Get(ctx, d.image, id).Extract()
	if err != nil {
		return images.Image{}, wrapError(op, err, d.secrets)
	}
	out := convertImage(*im)
	if v, _ := im.Properties[PropCopyOf].(string); v != "" {
		out.CopyOf = clipN(v, 200)
	}
	return out, nil
}

// WaitImageActive waits until Glance has the image active (or fails it).
func (d *Driver) WaitImageActive(ctx context.Context, id string) (images.Image, error) {
	im, err := d.waitImageActive(ctx, id)
	if err != nil {
		return images.Image{}, wrapError("wait for image "+id, err, d.secrets)
	}
	return im, nil
}

// UnhideImage makes a verified copy visible (os_hidden false) and drops
// its canopy_copy_of mark.
func (d *Driver) UnhideImage(ctx context.Context, id string) error {
	op := "unhide image " + id
	if err := d.imageService(op); err != nil {
		return err
	}
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	_, err := gimages.Update(ctx, d.image, id, gimages.UpdateOpts{
		gimages.ReplaceImageHidden{NewHidden: false},
		gimages.UpdateImageProperty{Op: gimages.RemoveOp, Name: PropCopyOf},
	}).Extract()
	if err != nil {
		return wrapError(op, err, d.secrets)
	}
	return nil
}

// DeleteImage deletes an image; one already gone is not an error.
func (d *Driver) DeleteImage(ctx context.Context, id string) error {
	op := "delete image " + id
	if err := d.imageService(op); err != nil {
		return err
	}
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	if err := gimages.Delete(ctx, d.image, id).ExtractErr(); err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return wrapError(op, err, d.secrets)
	}
	return nil
}

// HiddenImages lists the project's hidden images named name, or all of
// them when name is empty (copies under way or left over), with their
// canopy_copy_of marks.
func (d *Driver) HiddenImages(ctx context.Context, name string) ([]images.Image, error) {
	op := fmt.Sprintf("list hidden images %q", name)
	if err := d.imageService(op); err != nil {
		return nil, err
	}
	ctx, cancel := d.opCtx(ctx)
	defer cancel()
	pages, err := gimages.List(d.image, gimages.ListOpts{Name: name, Hidden: true, Limit: imagePageSize}).AllPages(ctx)
	if err != nil {
		return nil, wrapError(op, err, d.secrets)
	}
	list, err := gimages.ExtractImages(pages)
	if err != nil {
		return nil, wrapError(op, fmt.Errorf("decode images: %w", err), d.secrets)
	}
	out := make([]images.Image, 0, len(list))
	for _, im := range list {
		c := convertImage(im)
		if v, _ := im.Properties[PropCopyOf].(string); v != "" {
			c.CopyOf = clipN(v, 200)
		}
		out = append(out, c)
	}
	return out, nil
}
