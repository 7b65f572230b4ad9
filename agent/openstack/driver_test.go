package openstack

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

func md5hex(b []byte) string    { h := md5.Sum(b); return hex.EncodeToString(h[:]) }
func sha512hex(b []byte) string { h := sha512.Sum512(b); return hex.EncodeToString(h[:]) }

func newTestDriver(t *testing.T, f *fakeCloud, edit func(*Config)) *Driver {
	t.Helper()
	cfg := f.config()
	if edit != nil {
		edit(&cfg)
	}
	d, err := New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

func TestFlavorsAndLimits(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	d := newTestDriver(t, f, func(c *Config) { c.CoresMax = 100 })
	if d.ComputeMicroversion() != "2.47" {
		t.Errorf("microversion %s, want 2.47", d.ComputeMicroversion())
	}
	fl, err := d.Flavors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []protocol.Flavor{{ID: "f-tiny", Name: "m1.tiny", VCPUs: 1, RAMMiB: 512, DiskGiB: 1}, {ID: "f-b8", Name: "b8", VCPUs: 8, RAMMiB: 16384, DiskGiB: 80}}
	if len(fl) != 2 || fl[0] != want[0] || fl[1] != want[1] {
		t.Errorf("Flavors = %+v, want %+v", fl, want)
	}
	l, err := d.Limits(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantL := protocol.Limits{MaxCores: 100, MaxRAMMiB: 1638400, MaxInstances: 100, UsedCores: 9, UsedRAMMiB: 16896, UsedInstances: 2}
	if l != wantL {
		t.Errorf("Limits = %+v, want %+v", l, wantL)
	}
}

func TestCapLimit(t *testing.T) {
	t.Parallel()
	tests := []struct{ quota, limit, want int }{{800, 0, 800}, {800, 100, 100}, {50, 100, 50}, {-1, 0, -1}, {-1, 64, 64}}
	for _, tc := range tests {
		if got := capLimit(tc.quota, tc.limit); got != tc.want {
			t.Errorf("capLimit(%d, %d) = %d, want %d", tc.quota, tc.limit, got, tc.want)
		}
	}
}

func TestServersListing(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	canopy := map[string]string{driver.MetaHub: "hub-1", driver.MetaGroup: "atlas"}
	errSrv := server("s-err", "w-2", "ERROR", canopy)
	errSrv["fault"] = map[string]any{"code": 500, "message": "No valid host was found. ", "created": "2026-11-22T15:01:04Z"}
	f.servers = []map[string]any{
		server("s-ok", "w-1", "ACTIVE", canopy),
		server("s-err", "w-2", "ERROR", canopy), // /servers/detail omits cell0 faults
		server("s-build", "w-3", "BUILD", canopy),
		server("s-foreign", "someone", "SHUTOFF", map[string]string{"owner": "bob"}),
	}
	f.serverGET["s-err"] = errSrv
	d := newTestDriver(t, f, nil)
	for round := 0; round < 2; round++ {
		list, err := d.Servers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 4 {
			t.Fatalf("listed %d servers, want 4", len(list))
		}
		ok, bad, build, foreign := list[0], list[1], list[2], list[3]
		if ok.Status != driver.StatusActive || ok.Flavor != "m1.tiny" || ok.Image != "img-1" || ok.Metadata[driver.MetaHub] != "hub-1" ||
			!ok.CreatedAt.Equal(time.Date(2026, 11, 22, 15, 1, 2, 0, time.UTC)) {
			t.Errorf("active server = %+v", ok)
		}
		if bad.Status != driver.StatusError || bad.Fault != "No valid host was found. " || FaultClass(bad.Fault) != protocol.ErrClassNoHost {
			t.Errorf("error server = %+v", bad)
		}
		if build.Status != driver.StatusBuild {
			t.Errorf("build server = %+v", build)
		}
		if _, canopy := foreign.Metadata[driver.MetaHub]; canopy || foreign.Status != driver.StatusStopped || foreign.CloudStatus != "SHUTOFF" || foreign.Metadata["owner"] != "bob" {
			t.Errorf("foreign server = %+v", foreign)
		}
	}
	if got := f.count("GET /compute/v2.1/servers/s-err"); got != 1 {
		t.Errorf("fault fetched %d times, want once (cached)", got)
	}
}

func TestServersListingOldMicroversion(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	s := server("s-1", "w-1", "ACTIVE", nil)
	s["flavor"] = map[string]any{"id": "f-b8", "links": []any{}} // below 2.47
	f.servers = []map[string]any{s}
	d := newTestDriver(t, f, func(c *Config) { c.ComputeMicroversion = "2.1" })
	list, err := d.Servers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if list[0].Flavor != "b8" {
		t.Errorf("flavor = %q, want b8 (mapped from its id)", list[0].Flavor)
	}
}

func TestMapStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status, task string
		want         driver.ServerStatus
		word         string
	}{
		{"BUILD", "spawning", driver.StatusBuild, "BUILD/spawning"},
		{"ACTIVE", "", driver.StatusActive, "ACTIVE"},
		{"active", "", driver.StatusActive, "active"},
		{"ERROR", "", driver.StatusError, "ERROR"},
		// Nova shows a server being deleted as ACTIVE with task_state deleting.
		{"ACTIVE", "deleting", driver.StatusDeleting, "ACTIVE/deleting"},
		{"ERROR", "deleting", driver.StatusDeleting, "ERROR/deleting"},
		{"SHUTOFF", "soft-deleting", driver.StatusDeleting, "SHUTOFF/soft-deleting"},
		{"DELETED", "", driver.StatusDeleted, "DELETED"},
		{"SOFT_DELETED", "", driver.StatusDeleted, "SOFT_DELETED"},
		{"SHUTOFF", "", driver.StatusStopped, "SHUTOFF"},
		{"SUSPENDED", "", driver.StatusStopped, "SUSPENDED"},
		{"PAUSED", "", driver.StatusStopped, "PAUSED"},
		{"SHELVED", "", driver.StatusStopped, "SHELVED"},
		{"SHELVED_OFFLOADED", "", driver.StatusStopped, "SHELVED_OFFLOADED"},
		{"STOPPED", "", driver.StatusStopped, "STOPPED"},
		{"RESCUE", "", driver.StatusStopped, "RESCUE"},
		{"UNKNOWN", "", driver.StatusStopped, "UNKNOWN"},
		{"", "", driver.StatusStopped, ""},
		{"SOMETHING_NEW", "", driver.StatusStopped, "SOMETHING_NEW"},
		{"REBOOT", "rebooting", driver.StatusRebooting, "REBOOT/rebooting"},
		{"HARD_REBOOT", "", driver.StatusRebooting, "HARD_REBOOT"},
		{"MIGRATING", "", driver.StatusRebooting, "MIGRATING"},
		{"RESIZE", "", driver.StatusRebooting, "RESIZE"},
		{"VERIFY_RESIZE", "", driver.StatusRebooting, "VERIFY_RESIZE"},
		{"REVERT_RESIZE", "", driver.StatusRebooting, "REVERT_RESIZE"},
		{"PASSWORD", "", driver.StatusRebooting, "PASSWORD"},
		{"ACTIVE", "powering-off", driver.StatusActive, "ACTIVE/powering-off"},
	}
	for _, tt := range tests {
		if got := mapStatus(tt.status, tt.task); got != tt.want {
			t.Errorf("mapStatus(%q, %q) = %q, want %q", tt.status, tt.task, got, tt.want)
		}
		if got := cloudStatus(tt.status, tt.task); got != tt.word {
			t.Errorf("cloudStatus(%q, %q) = %q, want %q", tt.status, tt.task, got, tt.word)
		}
	}
}

// TestServersListingTaskState: the driver reads OS-EXT-STS:task_state, so a
// server Nova is deleting (ACTIVE, task_state deleting) is not reported
// active, and a stopped server keeps Nova's word.
func TestServersListingTaskState(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	canopy := map[string]string{driver.MetaHub: "hub-1", driver.MetaGroup: "atlas"}
	deleting := server("s-del", "w-1", "ACTIVE", canopy)
	deleting["OS-EXT-STS:task_state"] = "deleting"
	f.servers = []map[string]any{deleting, server("s-off", "w-2", "SHUTOFF", canopy), server("s-rb", "w-3", "HARD_REBOOT", canopy)}
	d := newTestDriver(t, f, nil)
	list, err := d.Servers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		st   driver.ServerStatus
		word string
	}{"s-del": {driver.StatusDeleting, "ACTIVE/deleting"}, "s-off": {driver.StatusStopped, "SHUTOFF"}, "s-rb": {driver.StatusRebooting, "HARD_REBOOT"}}
	if len(list) != len(want) {
		t.Fatalf("listed %d servers, want %d", len(list), len(want))
	}
	for _, s := range list {
		if w := want[s.ID]; s.Status != w.st || s.CloudStatus != w.word {
			t.Errorf("server %s: status %q (%q), want %q (%q)", s.ID, s.Status, s.CloudStatus, w.st, w.word)
		}
	}
}

func TestBootRequest(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	f.images["00000000-0000-0000-0000-000000000009"] = map[string]any{"id": "00000000-0000-0000-0000-000000000009", "name": "worker", "status": "active",
		"created_at": "2026-11-20T10:00:00Z", "disk_format": "qcow2", "container_format": "bare"}
	f.images["00000000-0000-0000-0000-000000000008"] = map[string]any{"id": "00000000-0000-0000-0000-000000000008", "name": "worker", "status": "active",
		"created_at": "2026-11-01T10:00:00Z", "disk_format": "qcow2", "container_format": "bare"}
	d := newTestDriver(t, f, func(c *Config) {
		c.KeyName, c.Network, c.SecurityGroups, c.AvailabilityZone = "canopy-key", "canopy-net", []string{"default", "condor"}, "nova"
		c.DefaultImage = "worker"
	})
	// "abcd" is valid base64: it must still be encoded, not passed through.
	userData := []byte("abcd")
	md := map[string]string{driver.MetaHub: "hub-1", driver.MetaPlan: "p-7"}
	s, err := d.Boot(context.Background(), driver.BootSpec{Name: "w-9", Flavor: "b8", Metadata: md, UserData: userData})
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "srv-new" || s.Status != driver.StatusBuild || s.Flavor != "b8" || s.Image != "00000000-0000-0000-0000-000000000009" {
		t.Errorf("Boot = %+v", s)
	}
	b := f.lastBoot["server"].(map[string]any)
	checks := map[string]any{
		"name": "w-9", "flavorRef": "f-b8", "imageRef": "00000000-0000-0000-0000-000000000009", "key_name": "canopy-key",
		"availability_zone": "nova", "user_data": base64.StdEncoding.EncodeToString(userData),
	}
	for k, want := range checks {
		if b[k] != want {
			t.Errorf("boot %s = %v, want %v", k, b[k], want)
		}
	}
	if sg := b["security_groups"].([]any); len(sg) != 2 || sg[1].(map[string]any)["name"] != "condor" {
		t.Errorf("security_groups = %v", b["security_groups"])
	}
	if nets := b["networks"].([]any); len(nets) != 1 || nets[0].(map[string]any)["uuid"] != "11111111-2222-3333-4444-555555555555" {
		t.Errorf("networks = %v", b["networks"])
	}
	if m := b["metadata"].(map[string]any); m[driver.MetaHub] != "hub-1" || m[driver.MetaPlan] != "p-7" {
		t.Errorf("metadata = %v", b["metadata"])
	}
	// A second boot reuses the name lookups.
	if _, err := d.Boot(context.Background(), driver.BootSpec{Name: "w-10", Flavor: "b8"}); err != nil {
		t.Fatal(err)
	}
	if n := f.count("GET /network/v2.0/networks") + f.count("GET /image/v2/images") + f.count("GET /compute/v2.1/flavors/detail"); n != 3 {
		t.Errorf("%d lookups for two boots, want 3 (network, image, flavors once each)", n)
	}
}

func TestBootInvalid(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	d := newTestDriver(t, f, func(c *Config) { c.Network = "none" })
	long := strings.Repeat("k", 256)
	tests := []struct {
		name string
		spec driver.BootSpec
		msg  string
	}{
		{"no name", driver.BootSpec{Flavor: "b8", Image: "x"}, "name is empty"},
		{"long metadata key", driver.BootSpec{Name: "a", Flavor: "b8", Image: "x", Metadata: map[string]string{long: "v"}}, "metadata"},
		{"huge user data", driver.BootSpec{Name: "a", Flavor: "b8", Image: "x", UserData: make([]byte, 60000)}, "user data"},
		{"no default image", driver.BootSpec{Name: "a", Flavor: "b8"}, "default_image"},
		{"unknown flavor", driver.BootSpec{Name: "a", Flavor: "z9", Image: "00000000-0000-0000-0000-0000000000aa"}, `flavor "z9": not found`},
		{"unknown image", driver.BootSpec{Name: "a", Flavor: "b8", Image: "nope"}, `image "nope": not found`},
	}
	for _, tc := range tests {
		_, err := d.Boot(context.Background(), tc.spec)
		if Classify(err) != protocol.ErrClassInvalid || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v (class %q), want invalid mentioning %q", tc.name, err, Classify(err), tc.msg)
		}
	}
	if f.count("POST /compute/v2.1/servers") != 0 {
		t.Error("an invalid boot reached Nova")
	}
}

func TestBootNetworkNotFound(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	d := newTestDriver(t, f, func(c *Config) { c.Network = "missing-net" })
	_, err := d.Boot(context.Background(), driver.BootSpec{Name: "a", Flavor: "b8", Image: "00000000-0000-0000-0000-0000000000aa"})
	if Classify(err) != protocol.ErrClassInvalid || !strings.Contains(err.Error(), "missing-net") {
		t.Errorf("boot on a missing network: %v", err)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	d := newTestDriver(t, f, nil)
	if err := d.Delete(context.Background(), "s-1"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	f.on("DELETE /compute/v2.1/servers/s-gone", novaError(404, "itemNotFound", "Instance s-gone could not be found."))
	if err := d.Delete(context.Background(), "s-gone"); err != nil {
		t.Errorf("Delete of a gone server: %v, want nil", err)
	}
	f.on("DELETE /compute/v2.1/servers/s-busy", novaError(409, "conflictingRequest", "Cannot 'delete' instance s-busy while it is in task_state rebuilding"))
	if err := d.Delete(context.Background(), "s-busy"); Classify(err) != protocol.ErrClassTransient {
		t.Errorf("Delete during a task: %v, want transient", err)
	}
	if err := d.Delete(context.Background(), ""); Classify(err) != protocol.ErrClassInvalid {
		t.Errorf("Delete(\"\"): %v, want invalid", err)
	}
}

// TestConcurrencyBound fires many calls at once and checks that the cloud
// never sees more than MaxConcurrentRequests of them in flight.
func TestConcurrencyBound(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	const limit, calls = 3, 24
	d := newTestDriver(t, f, func(c *Config) { c.MaxConcurrentRequests = limit })
	entered := make(chan struct{}, calls)
	gate := make(chan struct{})
	var mu sync.Mutex
	inflight, peak := 0, 0
	f.on("GET /compute/v2.1/limits", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		mu.Unlock()
		entered <- struct{}{}
		<-gate
		mu.Lock()
		inflight--
		mu.Unlock()
		writeJSON(w, 200, map[string]any{"limits": map[string]any{"absolute": map[string]any{}}})
	})
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.Limits(context.Background())
			errs <- err
		}()
	}
	for range limit {
		<-entered
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if peak > limit || peak < 1 {
		t.Errorf("peak in-flight %d, limit %d", peak, limit)
	}
	if got := f.count("GET /compute/v2.1/limits"); got != calls {
		t.Errorf("calls = %d, want %d", got, calls)
	}
}

func TestApplicationCredentialExpiry(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	expiry := time.Now().Add(5 * 24 * time.Hour).UTC().Truncate(time.Second)
	f.appCred["ac-1"] = "app-Secret-77"
	f.appExpiry = expiry.Format("2006-01-02T15:04:05.000000")
	log, hook := logtest.NewNullLogger()
	cfg := Config{AuthURL: f.srv.URL + "/v3", ApplicationCredentialID: "ac-1", ApplicationCredentialSecret: "app-Secret-77"}
	d, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := d.CredentialExpiry(context.Background())
	if err != nil || !ok || !got.Equal(expiry) {
		t.Errorf("CredentialExpiry = %v %v %v, want %v", got, ok, err, expiry)
	}
	warned := 0
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "expires soon") {
			warned++
			if e.Data["days_left"] != 4 && e.Data["days_left"] != 5 {
				t.Errorf("days_left = %v", e.Data["days_left"])
			}
		}
	}
	if warned != 2 { // once in New, once in the call above
		t.Errorf("%d expiry warnings, want 2", warned)
	}

	// Far from expiry: no warning. Without expiry: ok is false.
	f.mu.Lock()
	f.appExpiry = ""
	f.mu.Unlock()
	hook.Reset()
	if _, ok, err := d.CredentialExpiry(context.Background()); ok || err != nil || len(hook.AllEntries()) != 0 {
		t.Errorf("credential without expiry: ok %v err %v logs %v", ok, err, hook.AllEntries())
	}

	// A wrong secret.
	cfg.ApplicationCredentialSecret = "app-Secret-wrong"
	_, err = New(context.Background(), cfg, nil)
	if Classify(err) != protocol.ErrClassAuth || strings.Contains(err.Error(), "app-Secret") {
		t.Errorf("wrong application credential secret: %v", err)
	}
}

func TestPasswordNoExpiry(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	d := newTestDriver(t, f, nil)
	if _, ok, err := d.CredentialExpiry(context.Background()); ok || err != nil {
		t.Errorf("password without expiry: ok %v err %v", ok, err)
	}
}

func TestImageUploadDownload(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	d := newTestDriver(t, f, nil)
	data := bytes.Repeat([]byte("canopy image "), 100000)
	sum := sha256.Sum256(data)
	meta := images.Image{Name: "worker-el9", DiskFormat: "qcow2", ContainerFormat: "bare",
		Checksums: []images.Checksum{{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, {Algorithm: "md5", Hex: md5hex(data)}}}
	// A reader that is neither a Seeker nor a known-size type: streamed.
	im, err := d.UploadImage(context.Background(), meta, io.MultiReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	if im.Status != images.StatusActive || im.SizeBytes != int64(len(data)) || im.Digest("sha512") != sha512hex(data) ||
		im.Digest("sha256") != hex.EncodeToString(sum[:]) || im.Digest("md5") != md5hex(data) {
		t.Errorf("uploaded = %+v", im)
	}
	if len(f.uploadTE) != 1 || f.uploadTE[0] != "chunked" {
		t.Errorf("upload transfer encodings %v, want one chunked (streamed) upload", f.uploadTE)
	}
	list, err := d.Images(context.Background())
	if err != nil || len(list) != 1 || !images.SameBytes(list[0], im) || list[0].Digest("sha256") == "" {
		t.Errorf("Images = %+v, %v", list, err)
	}

	rc, err := d.DownloadImage(context.Background(), im.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("download: %d bytes, %v", len(got), err)
	}

	// Glance's Content-MD5 disagrees with the bytes: the read fails.
	f.mu.Lock()
	f.images[im.ID]["checksum"] = strings.Repeat("0", 32)
	f.mu.Unlock()
	rc, err = d.DownloadImage(context.Background(), im.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, errDigestMismatch) || Classify(err) != protocol.ErrClassTransient {
		t.Errorf("corrupt download: %v", err)
	}

	// Wrong expected checksum: refused and cleaned up.
	bad := meta
	bad.Name = "bad"
	bad.Checksums = []images.Checksum{{Algorithm: "sha512", Hex: strings.Repeat("a", 128)}}
	if _, err := d.UploadImage(context.Background(), bad, bytes.NewReader(data)); Classify(err) != protocol.ErrClassInvalid {
		t.Errorf("upload with a wrong sha512: %v", err)
	}
	f.mu.Lock()
	n := len(f.images)
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("%d images after a failed upload, want 1", n)
	}

	// A failing stream: the queued image is deleted.
	failing := io.MultiReader(bytes.NewReader(data[:1000]), errReader{})
	if _, err := d.UploadImage(context.Background(), images.Image{Name: "broken"}, failing); err == nil {
		t.Error("upload from a failing reader succeeded")
	}
	f.mu.Lock()
	n = len(f.images)
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("%d images after a broken upload, want 1", n)
	}

	if _, err := d.DownloadImage(context.Background(), "00000000-0000-0000-0000-000000000077"); Classify(err) != protocol.ErrClassInvalid {
		t.Errorf("download of an image without data: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestContentMD5(t *testing.T) {
	t.Parallel()
	sum := md5.Sum([]byte("x"))
	hx := hex.EncodeToString(sum[:])
	tests := map[string]string{
		hx: hx, strings.ToUpper(hx): hx, base64.StdEncoding.EncodeToString(sum[:]): hx, "": "", "zz": "", "abcd": "",
	}
	for in, want := range tests {
		if got := contentMD5(in); got != want {
			t.Errorf("contentMD5(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoImageService(t *testing.T) {
	t.Parallel()
	f := newFakeCloud(t)
	f.noImage = true
	d := newTestDriver(t, f, nil)
	if _, err := d.Images(context.Background()); Classify(err) != protocol.ErrClassInvalid || !strings.Contains(err.Error(), "no image service") {
		t.Errorf("Images without Glance: %v", err)
	}
	if _, err := d.Boot(context.Background(), driver.BootSpec{Name: "a", Flavor: "b8", Image: "by-name"}); Classify(err) != protocol.ErrClassInvalid {
		t.Errorf("boot by image name without Glance: %v", err)
	}

	// Glance in the catalog but not answering: New fails, transiently.
	g := newFakeCloud(t)
	g.on("GET /image/", novaError(http.StatusServiceUnavailable, "error", "down"))
	g.on("GET /image", novaError(http.StatusServiceUnavailable, "error", "down"))
	if _, err := New(context.Background(), g.config(), nil); Classify(err) != protocol.ErrClassTransient {
		t.Errorf("New with Glance down: %v (%s), want transient", err, Classify(err))
	}
}
