package hub

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/imageplan"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

var el9Hex = strings.Repeat("9a", 64)

func glanceImage(id, name, hx string, size int64, hub string) images.Image {
	return images.Image{ID: id, Name: name, SizeBytes: size, Status: images.StatusActive, Hub: hub, DiskFormat: "qcow2",
		ContainerFormat: "bare", Checksums: []images.Checksum{{Algorithm: "md5", Hex: strings.Repeat("0", 32)}, {Algorithm: "sha512", Hex: hx}}}
}

// setImages replaces the images of a site's last inventory.
func (e *testEnv) setImages(name string, ims ...images.Image) {
	l := e.h.linkFor(name)
	l.update(l.current(), func(v *cloudView) {
		inv := *v.Inventory
		inv.Images = ims
		v.Inventory = &inv
	})
}

func (e *testEnv) cell(name, site string) imageplan.Cell {
	for _, c := range e.h.Images().Cells {
		if c.Ref.Name == name && c.Site == site {
			return c
		}
	}
	return imageplan.Cell{}
}

func post(t *testing.T, url string, v any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(v)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	sb.Write(buf[:n])
	return resp.StatusCode, sb.String()
}

// TestImageDistribution follows one image through the hub: wanted through
// the API (durable), copied from the site that holds it, a failure backs
// off, progress shows, a verified copy is present, unwanting deletes
// Canopy's copy, but not while a server uses it.
func TestImageDistribution(t *testing.T) {
	e := newEnv(t, &scriptedSource{}, func(c *Config) { c.ID = "hub-t" })
	west, east := e.connect("west"), e.connect("east")
	e.setImages("west", glanceImage("w1", "el9", el9Hex, 1<<20, ""))
	e.setImages("east")
	e.serveLoop()
	srv := httptest.NewServer(e.h.handler(chanSocket))
	defer srv.Close()

	ro := httptest.NewServer(e.h.httpHandler())
	defer ro.Close()
	if code, _ := post(t, ro.URL+"/api/v1/images/want", ImageWantRequest{Name: "el9", Hash: "sha512:" + el9Hex, Sites: []string{"east"}}); code != http.StatusForbidden {
		t.Fatalf("want on the read-only listener: %d, want 403", code)
	}
	for _, bad := range []struct {
		req  ImageWantRequest
		want string
	}{
		{ImageWantRequest{Name: "el9", Hash: "sha512:abc", Sites: []string{"east"}}, "3 hex digits"},
		{ImageWantRequest{Name: "el9", Hash: "sha512:" + el9Hex}, "no sites"},
		{ImageWantRequest{Name: "", Hash: "sha512:" + el9Hex, Sites: []string{"east"}}, "image name of 0 bytes"},
	} {
		if code, body := post(t, srv.URL+"/api/v1/images/want", bad.req); code != http.StatusBadRequest || !strings.Contains(body, bad.want) {
			t.Fatalf("want %+v: %d %q, want 400 naming %q", bad.req, code, body, bad.want)
		}
	}
	if code, body := post(t, srv.URL+"/api/v1/images/want", ImageWantRequest{Name: "el9", Hash: "sha512:" + el9Hex, Sites: []string{"west", "east"}}); code != http.StatusOK {
		t.Fatalf("want: %d %s", code, body)
	}
	if w := e.h.loop.st.ImageWants["el9"]; w.From != "api" || len(w.Sites) != 2 {
		t.Fatalf("want not recorded: %+v", w)
	}

	e.cycle()
	copies := drain(east, protocol.CmdImageCopy)
	if len(copies) != 1 || copies[0].ImageCopy.SourceSite != "west" || copies[0].ImageCopy.SourceImageID != "w1" ||
		copies[0].ImageCopy.SizeBytes != 1<<20 || copies[0].Epoch != "ep-east" {
		t.Fatalf("copies %+v", copies)
	}
	if c := e.cell("el9", "east"); c.State != imageplan.CellStarting {
		t.Fatalf("east cell %+v", c)
	}
	// Progress reaches the status; the next cycle does not copy again.
	e.h.receive(e.h.linkFor("east"), east, protocol.ImageProgress{CommandID: copies[0].ID, Ref: copies[0].ImageCopy.Ref,
		State: protocol.CopyStreaming, Attempt: 1, Bytes: 1 << 19, Total: 1 << 20, RateBps: 1e6, ETA: time.Second, At: *e.now}, e.h.log)
	// Another site's agent cannot report on east's copy.
	e.h.receive(e.h.linkFor("west"), west, protocol.ImageProgress{CommandID: copies[0].ID, Ref: copies[0].ImageCopy.Ref,
		State: protocol.CopyFailed, Bytes: 7, Total: 1 << 20, At: *e.now}, e.h.log)
	e.advance(10 * time.Second)
	e.cycle()
	if again := drain(east, protocol.CmdImageCopy); len(again) != 0 {
		t.Fatalf("copied again while under way: %+v", again)
	}
	if tr := e.h.Images().Transfers; len(tr) != 1 || tr[0].Bytes != 1<<19 || tr[0].State != protocol.CopyStreaming {
		t.Fatalf("transfers %+v", tr)
	}
	// The copy fails: the cell backs off, then it is tried again.
	e.h.inbox.put(inboxItem{cloud: "east", result: protocol.Result{CommandID: copies[0].ID, Class: protocol.ErrClassInvalid, Error: "image bytes do not match"}})
	e.cycle()
	if c := e.cell("el9", "east"); c.State != imageplan.CellBackoff || !strings.Contains(c.Reason, "do not match") {
		t.Fatalf("after a failure east cell %+v", c)
	}
	e.advance(2 * time.Minute)
	e.report("west")
	e.setImages("west", glanceImage("w1", "el9", el9Hex, 1<<20, ""))
	e.report("east")
	e.setImages("east")
	e.cycle()
	retry := drain(east, protocol.CmdImageCopy)
	if len(retry) != 1 {
		t.Fatalf("no retry after the backoff: %+v", e.cell("el9", "east"))
	}
	e.h.inbox.put(inboxItem{cloud: "east", result: protocol.Result{CommandID: retry[0].ID, OK: true, VMIDs: []string{"e1"}}})
	e.setImages("east", glanceImage("e1", "el9", el9Hex, 1<<20, "hub-t"))
	e.cycle()
	if c := e.cell("el9", "east"); c.State != imageplan.CellPresent || c.ImageID != "e1" {
		t.Fatalf("after the copy east cell %+v", c)
	}
	if _, seen := e.h.loop.st.ImageWants["el9"].Seen["east"]; !seen {
		t.Fatal("present cell not recorded as seen")
	}

	// Deleted by hand: shown as a conflict, not copied again.
	e.setImages("east")
	e.cycle()
	if c := e.cell("el9", "east"); c.State != imageplan.CellConflict || len(drain(east, protocol.CmdImageCopy)) != 0 {
		t.Fatalf("a wanted image deleted by hand: cell %+v", c)
	}
	if ks := e.h.Images().Conflicts; len(ks) != 1 || ks[0].Kind != imageplan.ConflictDeletedByHand {
		t.Fatalf("conflicts %+v", ks)
	}
	// Wanting it again there clears the mark: copied again.
	if code, body := post(t, srv.URL+"/api/v1/images/want", ImageWantRequest{Name: "el9", Hash: "sha512:" + el9Hex, Sites: []string{"east"}}); code != http.StatusOK {
		t.Fatalf("want again: %d %s", code, body)
	}
	e.cycle()
	if again := drain(east, protocol.CmdImageCopy); len(again) != 1 {
		t.Fatalf("not copied after wanted again: %+v", e.cell("el9", "east"))
	}

	// Unwanted while a server uses Canopy's copy: kept; once unused, deleted.
	e.h.loop.images.transfers = map[string]*ImageTransfer{}
	e.setImages("east", glanceImage("e2", "el9", el9Hex, 1<<20, "hub-t"))
	if code, body := post(t, srv.URL+"/api/v1/images/unwant", ImageWantRequest{Name: "el9", Sites: []string{"east"}}); code != http.StatusOK {
		t.Fatalf("unwant: %d %s", code, body)
	}
	e.report("east", vm("vm-1", "canopy-east-p1-0-0", func(v *protocol.VM) { v.Image = "e2" }))
	e.setImages("east", glanceImage("e2", "el9", el9Hex, 1<<20, "hub-t"))
	e.cycle()
	if dels := drain(east, protocol.CmdImageDelete); len(dels) != 0 {
		t.Fatalf("deleted an image a server uses: %+v", dels)
	}
	if k := e.h.Images().Kept; len(k) != 1 || !strings.Contains(k[0].Reason, "used by 1 server") {
		t.Fatalf("kept %+v", k)
	}
	e.report("east")
	e.setImages("east", glanceImage("e2", "el9", el9Hex, 1<<20, "hub-t"))
	e.cycle()
	dels := drain(east, protocol.CmdImageDelete)
	if len(dels) != 1 || dels[0].ImageDelete.ImageID != "e2" {
		t.Fatalf("deletes %+v", dels)
	}
	// West's image is not Canopy's: never deleted, though wanted there still.
	if d := drain(west, protocol.CmdImageDelete); len(d) != 0 {
		t.Fatalf("west deletes %+v", d)
	}

	// The wants survive a restart.
	e.crash()
	e.start(&scriptedSource{})
	if w := e.h.loop.st.ImageWants["el9"]; w.Ref.Hex != el9Hex || len(w.Sites) != 1 || w.Sites[0] != "west" {
		t.Fatalf("wants after restart: %+v", e.h.loop.st.ImageWants)
	}
}

// TestImageQuotaAndConfig: a config row is planned like an API row and
// cannot be unwanted through the API; a site's capacity quota refuses a
// copy with the numbers.
func TestImageQuotaAndConfig(t *testing.T) {
	e := newEnv(t, &scriptedSource{}, func(c *Config) {
		c.ID = "hub-t"
		c.Images = ImagesConfig{Wants: []ImageWantConfig{{Name: "el9", Hash: "sha512:" + el9Hex, Sites: []string{"east"}}},
			QuotaBytes: map[string]int64{"east": 3 << 20}}
	})
	if err := e.cfg.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	e.connect("west")
	east := e.connect("east")
	e.setImages("west", glanceImage("w1", "el9", el9Hex, 2<<20, ""))
	e.setImages("east", glanceImage("e9", "other", strings.Repeat("01", 64), 2<<20, "hub-t"))
	e.h.loop.st.ImageWants["other"] = imageplan.Want{Ref: images.Ref{Name: "other", Algo: "sha512", Hex: strings.Repeat("01", 64)}, Sites: []string{"east"}, From: "api"}
	e.cycle()
	c := e.cell("el9", "east")
	want := "site east: copying image el9 (2097152 bytes) would bring Canopy's images to 4194304 bytes, over the site's quota of 3145728 bytes"
	if c.State != imageplan.CellRefused || !strings.Contains(c.Reason, want) || len(drain(east, protocol.CmdImageCopy)) != 0 {
		t.Fatalf("east cell %+v, want refused: %s", c, want)
	}
	e.serveLoop()
	srv := httptest.NewServer(e.h.handler(chanSocket))
	defer srv.Close()
	if code, body := post(t, srv.URL+"/api/v1/images/unwant", ImageWantRequest{Name: "el9", Sites: []string{"east"}}); code != http.StatusBadRequest || !strings.Contains(body, "wanted by the hub config") {
		t.Fatalf("unwant a config row: %d %s", code, body)
	}
	bad := e.cfg
	bad.Images = ImagesConfig{Wants: []ImageWantConfig{{Name: "x", Hash: "crc:00", Sites: []string{"east"}}}, QuotaBytes: map[string]int64{"east": -1}}
	err := bad.WithDefaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "images.wants[0]") || !strings.Contains(err.Error(), "images.quota_bytes.east is -1") {
		t.Fatalf("Validate: %v", err)
	}
}

// TestPlannerWaitsForImage: jobs whose VM type boots an image the matrix
// wants on the only site wait while it is copied there, with the reason,
// and are booted once it is present.
func TestPlannerWaitsForImage(t *testing.T) {
	d := atlas(2)
	d.Shapes[0].Image = "el9"
	e := newEnv(t, &scriptedSource{d: d}, func(c *Config) {
		c.ID = "hub-t"
		c.Images = ImagesConfig{Wants: []ImageWantConfig{{Name: "el9", Hash: "sha512:" + el9Hex, Sites: []string{"east"}}}}
		c.Groups = map[string]GroupConfig{"atlas": {Clouds: []string{"east"}}}
	})
	e.connect("west")
	east := e.connect("east")
	e.setImages("west", glanceImage("w1", "el9", el9Hex, 1<<20, ""))
	e.setImages("east")
	e.cycle() // the image cycle starts the copy
	e.advance(10 * time.Second)
	e.report("west")
	e.setImages("west", glanceImage("w1", "el9", el9Hex, 1<<20, ""))
	e.report("east")
	e.setImages("east")
	e.cycle()
	if boots := drain(east, protocol.CmdBoot); len(boots) != 0 {
		t.Fatalf("booted before the image is there: %+v", boots)
	}
	notes := ""
	for _, n := range e.h.loop.lastPlan.Notes {
		notes += n.Reason + "\n"
	}
	if !strings.Contains(notes, "image el9 is copying on east") {
		t.Fatalf("plan notes %q, want the image as the reason", notes)
	}
	e.advance(10 * time.Second)
	e.report("west")
	e.setImages("west", glanceImage("w1", "el9", el9Hex, 1<<20, ""))
	e.report("east")
	e.setImages("east", glanceImage("e1", "el9", el9Hex, 1<<20, "hub-t"))
	e.cycle() // the image cycle sees it present
	e.cycle()
	boots := drain(east, protocol.CmdBoot)
	if len(boots) == 0 || boots[0].Boot.Image != "el9" {
		t.Fatalf("not booted once the image is present: %+v", boots)
	}
}
