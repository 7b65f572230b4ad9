//go:build integration

package imageplan

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	gimages "github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"

	"github.com/canopy-grid/canopy/images"
)

// These tests run the image planner on what the testbed's real Glance
// reports (deploy/testbed/openstack: projects canopy-a and canopy-b stand
// for two sites), with images and a server the test creates there. The
// hub reads inventories from agents; here the test lists Glance itself,
// the way agent/openstack does (the hub may not import the agent's code).

type project struct {
	glance, nova, neutron *gophercloud.ServiceClient
}

func connect(t *testing.T, cloud string) project {
	t.Helper()
	dir := os.Getenv("OSTB_DIR")
	if dir == "" {
		dir = "/var/lib/canopy-testbed/openstack"
	}
	ao, _, _, err := clouds.Parse(clouds.WithCloudName(cloud), clouds.WithLocations(filepath.Join(dir, "clouds.yaml")))
	if err != nil {
		t.Fatalf("clouds.yaml (is the openstack testbed up?): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := gcos.AuthenticatedClient(ctx, ao)
	if err != nil {
		t.Fatalf("authenticate %s: %v", cloud, err)
	}
	var pr project
	if pr.glance, err = gcos.NewImageV2(p, gophercloud.EndpointOpts{}); err != nil {
		t.Fatal(err)
	}
	if pr.nova, err = gcos.NewComputeV2(p, gophercloud.EndpointOpts{}); err != nil {
		t.Fatal(err)
	}
	if pr.neutron, err = gcos.NewNetworkV2(p, gophercloud.EndpointOpts{}); err != nil {
		t.Fatal(err)
	}
	return pr
}

// put creates an active image with data, owned by hub when hub is set.
func (p project) put(t *testing.T, name string, data []byte, hub string) string {
	t.Helper()
	ctx := context.Background()
	opts := gimages.CreateOpts{Name: name, DiskFormat: "raw", ContainerFormat: "bare"}
	if hub != "" {
		opts.Properties = map[string]string{"canopy_hub": hub}
	}
	im, err := gimages.Create(ctx, p.glance, opts).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gimages.Delete(context.Background(), p.glance, im.ID).ExtractErr() })
	if err := imagedata.Upload(ctx, p.glance, im.ID, bytes.NewReader(data)).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 300; i++ {
		got, err := gimages.Get(ctx, p.glance, im.ID).Extract()
		if err == nil && got.Status == gimages.ImageStatusActive {
			return im.ID
		}
		<-tick.C
	}
	t.Fatalf("image %s never active", name)
	return ""
}

// site lists the project's images (as agent/openstack converts them) and
// counts the servers using each.
func (p project) site(t *testing.T, prefix string) Site {
	t.Helper()
	ctx := context.Background()
	pages, err := gimages.List(p.glance, gimages.ListOpts{Limit: 200}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := gimages.ExtractImages(pages)
	if err != nil {
		t.Fatal(err)
	}
	s := Site{Fresh: true, InUse: map[string]int{}}
	for _, im := range list {
		if !strings.HasPrefix(im.Name, prefix) {
			continue // other tests' images
		}
		c := images.Image{ID: im.ID, Name: im.Name, SizeBytes: im.SizeBytes, Status: images.Status(im.Status), Hidden: im.Hidden}
		c.Hub, _ = im.Properties["canopy_hub"].(string)
		if im.Checksum != "" {
			c.Checksums = append(c.Checksums, images.Checksum{Algorithm: "md5", Hex: im.Checksum})
		}
		if v, _ := im.Properties["os_hash_value"].(string); v != "" {
			c.Checksums = append(c.Checksums, images.Checksum{Algorithm: "sha512", Hex: v})
		}
		s.Images = append(s.Images, c)
	}
	spages, err := servers.List(p.nova, servers.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svs, err := servers.ExtractServers(spages)
	if err != nil {
		t.Fatal(err)
	}
	for _, sv := range svs {
		if id, _ := sv.Image["id"].(string); id != "" {
			s.InUse[id]++
		}
	}
	return s
}

func find(s Site, id string) images.Image {
	for _, im := range s.Images {
		if im.ID == id {
			return im
		}
	}
	return images.Image{}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestIntegrationPlanOnGlance: each conflict kind is found on real Glance
// inventories, the capacity quota refuses a copy with its numbers, and an
// unwanted image of Canopy's that a real server uses is kept while an
// unused one is deleted.
func TestIntegrationPlanOnGlance(t *testing.T) {
	a, b := connect(t, "canopy-a"), connect(t, "canopy-b")
	pre := fmt.Sprintf("planit-%d-", time.Now().UnixNano()%1e9)
	x, y := randBytes(4096), randBytes(8192)
	a.put(t, pre+"el9", x, "")       // the wanted image
	b.put(t, pre+"el9", y, "")       // same name, other contents
	b.put(t, pre+"centos", x, "")    // same contents, another name
	a.put(t, pre+"dup", y[:100], "") // duplicates in one site
	a.put(t, pre+"dup", y[:200], "") //
	usedID := b.put(t, pre+"old", y[:300], "hub-it")
	unusedID := b.put(t, pre+"older", y[:400], "hub-it")
	b.put(t, pre+"big", y, "hub-it") // Canopy's, wanted: counts against the quota

	// A server in canopy-b booted from Canopy's "old" image.
	ctx := context.Background()
	fl := ""
	if pages, err := flavors.ListDetail(b.nova, nil).AllPages(ctx); err == nil {
		all, _ := flavors.ExtractFlavors(pages)
		for _, f := range all {
			if f.Name == "m1.tiny" {
				fl = f.ID
			}
		}
	}
	if fl == "" {
		t.Fatal("flavor m1.tiny not found (testbed bootstrap)")
	}
	netID := ""
	if pages, err := networks.List(b.neutron, networks.ListOpts{Name: "canopy-net"}).AllPages(ctx); err == nil {
		if nets, _ := networks.ExtractNetworks(pages); len(nets) > 0 {
			netID = nets[0].ID
		}
	}
	if netID == "" {
		t.Fatal("network canopy-net not found (testbed bootstrap)")
	}
	sv, err := servers.Create(ctx, b.nova, servers.CreateOpts{Name: pre + "vm", FlavorRef: fl, ImageRef: usedID,
		Networks: []servers.Network{{UUID: netID}}}, nil).Extract()
	if err != nil {
		t.Fatalf("boot a server from Canopy's image: %v", err)
	}
	t.Cleanup(func() { _ = servers.Delete(context.Background(), b.nova, sv.ID).ExtractErr() })

	sa, sb := a.site(t, pre), b.site(t, pre)
	if sb.InUse[usedID] != 1 {
		t.Fatalf("the server's image is not listed as in use: %v", sb.InUse)
	}
	el9 := find(sa, func() string {
		for _, im := range sa.Images {
			if im.Name == pre+"el9" {
				return im.ID
			}
		}
		return ""
	}())
	big := images.Image{}
	for _, im := range sb.Images {
		if im.Name == pre+"big" {
			big = im
		}
	}
	ref := func(im images.Image) images.Ref {
		return images.Ref{Name: im.Name, Algo: "sha512", Hex: im.Digest("sha512")}
	}
	// Quota: Canopy holds 300+400+8192 bytes in canopy-b; a 4096-byte
	// copy would exceed 10000 bytes.
	sb.QuotaBytes = 10000
	p := Decide(Input{Now: time.Now(), HubID: "hub-it", Sites: map[string]Site{"a": sa, "b": sb},
		Wants: []Want{
			{Ref: images.Ref{Name: pre + "fresh", Algo: "sha512", Hex: el9.Digest("sha512")}, Sites: []string{"b"}},
			{Ref: ref(el9), Sites: []string{"a"}, Seen: map[string]time.Time{"b": time.Now()}},
			{Ref: ref(big), Sites: []string{"b"}},
		}})
	kinds := map[ConflictKind]string{}
	for _, c := range p.Conflicts {
		kinds[c.Kind] += c.Detail + "; "
	}
	for _, k := range []ConflictKind{ConflictNameContents, ConflictContentsNames, ConflictDuplicate} {
		if kinds[k] == "" {
			t.Errorf("conflict %s not found on real inventories: %+v", k, p.Conflicts)
		}
	}
	var refused Cell
	for _, c := range p.Cells {
		if c.Ref.Name == pre+"fresh" {
			refused = c
		}
	}
	want := fmt.Sprintf("site b: copying image %sfresh (4096 bytes) would bring Canopy's images to 12988 bytes, over the site's quota of 10000 bytes (8892 held, 0 being copied)", pre)
	if refused.State != CellRefused || refused.Reason != want || len(p.Copies) != 0 {
		t.Errorf("quota: cell %+v, copies %+v; want refused: %s", refused, p.Copies, want)
	}
	var dels, kept []string
	for _, d := range p.Deletes {
		dels = append(dels, d.Image.ID)
	}
	for _, k := range p.Kept {
		kept = append(kept, k.Image.ID+" "+k.Reason)
	}
	if len(dels) != 1 || dels[0] != unusedID || len(kept) != 1 || !strings.HasPrefix(kept[0], usedID+" unwanted but used by 1 server") {
		t.Errorf("deletes %v, kept %v; want %s deleted and %s kept", dels, kept, unusedID, usedID)
	}

	// Deleted by hand: the wanted el9 in a, seen before, is deleted
	// through Glance behind Canopy's back.
	if err := gimages.Delete(ctx, a.glance, el9.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	sa = a.site(t, pre)
	p = Decide(Input{Now: time.Now(), HubID: "hub-it", Sites: map[string]Site{"a": sa, "b": sb},
		Wants: []Want{{Ref: ref(el9), Sites: []string{"a"}, Seen: map[string]time.Time{"a": time.Now().Add(-time.Hour)}}}})
	found := false
	for _, c := range p.Conflicts {
		found = found || c.Kind == ConflictDeletedByHand && c.Name == el9.Name
	}
	if !found || len(p.Copies) != 0 {
		t.Errorf("deleted by hand: conflicts %+v copies %+v", p.Conflicts, p.Copies)
	}
}
