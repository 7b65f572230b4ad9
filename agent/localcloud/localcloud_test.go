package localcloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

// TestMain lets the test binary play a VM: the driver starts it with
// "run --metadata-url URL --root DIR", as it starts vmagent.
func TestMain(m *testing.M) {
	if os.Getenv("LOCALCLOUD_TEST_VM") == "1" {
		os.Exit(fakeVM(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeVM(args []string) int {
	fs := flag.NewFlagSet("vm", flag.ContinueOnError)
	url := fs.String("metadata-url", "", "")
	root := fs.String("root", "", "")
	if len(args) == 0 || fs.Parse(args[1:]) != nil {
		return 2
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	for _, p := range []string{"meta_data.json", "user_data"} {
		resp, err := http.Get(*url + "/openstack/latest/" + p)
		if err != nil {
			return 3
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := os.WriteFile(filepath.Join(*root, "got-"+p), b, 0o644); err != nil {
			return 4
		}
	}
	_ = os.WriteFile(filepath.Join(*root, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	<-stop
	return 0
}

func newTestCloud(t *testing.T, maxInstances int) *Driver {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("LOCALCLOUD_TEST_VM", "1")
	d, err := New(Config{VMAgent: exe, Dir: t.TempDir(), MaxInstances: maxInstances, MaxCores: 100,
		Flavors: []protocol.Flavor{{Name: "c2", VCPUs: 2, RAMMiB: 4096}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func waitFile(t *testing.T, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		<-time.After(20 * time.Millisecond)
	}
}

func TestBootServesMetadataAndDeleteStopsVM(t *testing.T) {
	d := newTestCloud(t, 2)
	ctx := context.Background()
	s, err := d.Boot(ctx, driver.BootSpec{Name: "vm-1", Flavor: "c2", Metadata: map[string]string{"canopy_hub": "h"}, UserData: []byte("#cloud-config\n")})
	if err != nil {
		t.Fatal(err)
	}
	if s.Status != driver.StatusActive || s.ID == "" {
		t.Fatalf("server %+v", s)
	}
	root := filepath.Join(d.cfg.Dir, "vms", "vm-1-"+s.ID[:8])
	md := waitFile(t, filepath.Join(root, "got-meta_data.json"))
	if !bytes.Contains(md, []byte(`"uuid":"`+s.ID+`"`)) || !bytes.Contains(md, []byte(`"canopy_hub":"h"`)) {
		t.Fatalf("meta_data.json = %s", md)
	}
	if ud := waitFile(t, filepath.Join(root, "got-user_data")); string(ud) != "#cloud-config\n" {
		t.Fatalf("user_data = %q", ud)
	}
	pid, _ := strconv.Atoi(string(waitFile(t, filepath.Join(root, "pid"))))
	l, _ := d.Limits(ctx)
	if l.UsedInstances != 1 || l.UsedCores != 2 || l.MaxInstances != 2 {
		t.Fatalf("limits %+v", l)
	}
	if err := d.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("VM process %d still running after delete", pid)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("root dir left: %v", err)
	}
	if err := d.Delete(ctx, s.ID); err != nil {
		t.Fatalf("deleting a gone server: %v", err)
	}
	if srvs, _ := d.Servers(ctx); len(srvs) != 0 {
		t.Fatalf("servers after delete: %+v", srvs)
	}
}

func TestQuotaAndUnknownFlavor(t *testing.T) {
	d := newTestCloud(t, 1)
	ctx := context.Background()
	if _, err := d.Boot(ctx, driver.BootSpec{Name: "vm-1", Flavor: "c2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Boot(ctx, driver.BootSpec{Name: "vm-2", Flavor: "c2"}); !errors.Is(err, ErrQuota) {
		t.Fatalf("second boot: %v, want quota exceeded", err)
	}
	if _, err := d.Boot(ctx, driver.BootSpec{Name: "vm-3", Flavor: "huge"}); err == nil {
		t.Fatal("booted an unknown flavor")
	}
}

func TestCloseStopsEveryVM(t *testing.T) {
	d := newTestCloud(t, 0)
	ctx := context.Background()
	var pids []int
	for i := range 3 {
		s, err := d.Boot(ctx, driver.BootSpec{Name: fmt.Sprint("vm-", i), Flavor: "c2"})
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(string(waitFile(t, filepath.Join(d.cfg.Dir, "vms", fmt.Sprintf("vm-%d-%s", i, s.ID[:8]), "pid"))))
		pids = append(pids, p)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if syscall.Kill(p, 0) == nil {
			t.Fatalf("VM %d survived Close", p)
		}
	}
	if _, err := d.Boot(ctx, driver.BootSpec{Name: "late", Flavor: "c2"}); err == nil {
		t.Fatal("boot after Close")
	}
}

func TestImagesStreamAndChecksum(t *testing.T) {
	d := newTestCloud(t, 0)
	ctx := context.Background()
	data := bytes.Repeat([]byte("canopy"), 100000)
	im, err := d.UploadImage(ctx, images.Image{Name: "worker", DiskFormat: "qcow2", ContainerFormat: "bare"}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if im.Digest("sha256") != hex.EncodeToString(sum[:]) || im.SizeBytes != int64(len(data)) || im.Status != images.StatusActive {
		t.Fatalf("image %+v", im)
	}
	rc, err := d.DownloadImage(ctx, im.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("downloaded bytes differ")
	}
	if _, err := d.DownloadImage(ctx, "nope"); err == nil {
		t.Fatal("downloaded a missing image")
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"no vmagent": {Dir: "x", Flavors: []protocol.Flavor{{Name: "a", VCPUs: 1, RAMMiB: 1}}},
		"no dir":     {VMAgent: "x", Flavors: []protocol.Flavor{{Name: "a", VCPUs: 1, RAMMiB: 1}}},
		"no flavors": {VMAgent: "x", Dir: "x"},
		"bad flavor": {VMAgent: "x", Dir: "x", Flavors: []protocol.Flavor{{Name: "a"}}},
	} {
		if c.Validate() == nil {
			t.Errorf("%s: validated", name)
		}
	}
}
