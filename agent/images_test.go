package agent

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/imagecopy"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

// glanceDriver is the fake cloud with an in-memory Glance: an upload cut by
// its body's error leaves the image queued, a complete one makes it active
// with its sha512.
type glanceDriver struct {
	*fakeDriver
	gmu    sync.Mutex
	seq    int
	images map[string]*images.Image
}

func (g *glanceDriver) CreateHiddenImage(_ context.Context, meta images.Image, hub, copyOf string) (string, error) {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	g.seq++
	id := fmt.Sprintf("img-%d", g.seq)
	g.images[id] = &images.Image{ID: id, Name: meta.Name, Status: images.StatusQueued, Hidden: true, Hub: hub, CopyOf: copyOf}
	return id, nil
}

func (g *glanceDriver) UploadImageData(_ context.Context, id string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := sha512.Sum512(b)
	g.gmu.Lock()
	defer g.gmu.Unlock()
	im := g.images[id]
	im.Status, im.SizeBytes = images.StatusActive, int64(len(b))
	im.Checksums = []images.Checksum{{Algorithm: "sha512", Hex: hex.EncodeToString(s[:])}}
	return nil
}

func (g *glanceDriver) GetImage(_ context.Context, id string) (images.Image, error) {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	if im, ok := g.images[id]; ok {
		return *im, nil
	}
	return images.Image{}, errors.New("image not found")
}

func (g *glanceDriver) WaitImageActive(ctx context.Context, id string) (images.Image, error) {
	return g.GetImage(ctx, id)
}

func (g *glanceDriver) UnhideImage(_ context.Context, id string) error {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	g.images[id].Hidden = false
	return nil
}

func (g *glanceDriver) DeleteImage(_ context.Context, id string) error {
	g.gmu.Lock()
	defer g.gmu.Unlock()
	delete(g.images, id)
	return nil
}

func (g *glanceDriver) HiddenImages(context.Context, string) ([]images.Image, error) { return nil, nil }

type bytesSource []byte

func (s bytesSource) DownloadImage(context.Context, string) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(s)), nil
}

var _ imagecopy.Dest = (*glanceDriver)(nil)

func TestImageCommands(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 4096)
	sum := sha512.Sum512(data)
	ref := images.Ref{Name: "el9", Algo: "sha512", Hex: hex.EncodeToString(sum[:])}
	copyCmd := func(id, src string) protocol.Command {
		return protocol.Command{ID: id, Op: protocol.CmdImageCopy, ImageCopy: &protocol.ImageCopyCommand{Ref: ref, SourceSite: src,
			SourceImageID: "s1", SizeBytes: int64(len(data))}}
	}
	delCmd := func(id, image string) protocol.Command {
		return protocol.Command{ID: id, Op: protocol.CmdImageDelete, ImageDelete: &protocol.ImageDeleteCommand{ImageID: image, Name: "el9", Reason: "unwanted"}}
	}
	ctx := context.Background()

	// A cloud without an image service takes no copies.
	plain := testAgent(t, newFakeDriver())
	if res, _ := plain.execute(ctx, copyCmd("c0", "east")); res.OK || res.Class != protocol.ErrClassInvalid || !strings.Contains(res.Error, "cannot take image copies") {
		t.Fatalf("copy on a driver without images: %+v", res)
	}

	g := &glanceDriver{fakeDriver: newFakeDriver(), images: map[string]*images.Image{}}
	a := testAgent(t, g)
	a.cfg.ImageSources = map[string]imagecopy.Source{"east": bytesSource(data)}
	if res, _ := a.execute(ctx, copyCmd("c1", "north")); res.OK || !strings.Contains(res.Error, `no image source configured for site "north"`) {
		t.Fatalf("copy from an unconfigured source: %+v", res)
	}
	res, _ := a.execute(ctx, copyCmd("c2", "east"))
	if !res.OK || len(res.VMIDs) != 1 {
		t.Fatalf("copy: %+v", res)
	}
	copied := g.images[res.VMIDs[0]]
	if copied.Hub != "hub" || copied.Hidden || copied.Digest("sha512") != ref.Hex {
		t.Fatalf("copied image %+v", copied)
	}

	// Deletions: another hub's image refused; one a server uses refused;
	// an unused one of this hub's deleted.
	g.images["foreign"] = &images.Image{ID: "foreign", Name: "el9", Status: images.StatusActive, Hub: "other-hub"}
	if res, _ := a.execute(ctx, delCmd("d1", "foreign")); res.OK || len(res.Refused) != 1 || !strings.Contains(res.Refused[0].Reason, "not this hub's") {
		t.Fatalf("delete another hub's image: %+v", res)
	}
	g.mu.Lock()
	g.servers["vm-1"] = driver.Server{ID: "vm-1", Name: "canopy-west-p1-0-0", Image: copied.ID, Status: driver.StatusActive}
	g.mu.Unlock()
	if res, _ := a.execute(ctx, delCmd("d2", copied.ID)); res.OK || len(res.Refused) != 1 || !strings.Contains(res.Refused[0].Reason, "used by 1 server") {
		t.Fatalf("delete an image in use: %+v", res)
	}
	if _, ok := g.images[copied.ID]; !ok {
		t.Fatal("an image in use was deleted")
	}
	g.mu.Lock()
	delete(g.servers, "vm-1")
	g.mu.Unlock()
	if res, _ := a.execute(ctx, delCmd("d3", copied.ID)); !res.OK {
		t.Fatalf("delete an unused image: %+v", res)
	}
	if _, ok := g.images[copied.ID]; ok {
		t.Fatal("the unused image is still there")
	}
}
