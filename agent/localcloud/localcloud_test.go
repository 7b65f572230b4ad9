package localcloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	// A real-worker VM gets a clean environment: it is told apart by
	// being run as vmagent is ("run ..."), which go test never does.
	if os.Getenv("LOCALCLOUD_TEST_VM") == "1" || (len(os.Args) > 1 && os.Args[1] == "run") {
		os.Exit(fakeVM(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeVM(args []string) int {
	fs := flag.NewFlagSet("vm", flag.ContinueOnError)
	url := fs.String("metadata-url", "", "")
	root := fs.String("root", "", "")
	condorBin := fs.String("condor-bin", "", "")
	fs.String("condor-sbin", "", "")
	hide := fs.String("test-hidden", "", "")
	if len(args) == 0 || fs.Parse(args[1:]) != nil {
		return 2
	}
	if *condorBin != "" {
		// A real-worker VM: report what it sees from inside.
		host, _ := os.Hostname()
		hosts, _ := os.ReadFile("/etc/hosts")
		_, err := os.Stat(*hide)
		seen := fmt.Sprintf("hostname=%s\ncondor_config=%s\nhidden_visible=%v\nns_pid=%d\nhosts=%s", host,
			os.Getenv("CONDOR_CONFIG"), err == nil, os.Getpid(), hosts)
		if err := os.WriteFile(filepath.Join(*root, "seen"), []byte(seen), 0o644); err != nil {
			return 5
		}
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

func testConfig(t *testing.T, maxInstances int) Config {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("LOCALCLOUD_TEST_VM", "1")
	return Config{VMAgent: exe, Dir: t.TempDir(), MaxInstances: maxInstances, MaxCores: 100,
		Flavors: []protocol.Flavor{{Name: "c2", VCPUs: 2, RAMMiB: 4096}}}
}

// newTestCloud is a local cloud whose VMs are all stopped when the test ends.
func newTestCloud(t *testing.T, maxInstances int) *Driver {
	t.Helper()
	cfg := testConfig(t, maxInstances)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.Close()
		if _, err := StopAll(cfg.Dir); err != nil {
			t.Errorf("stop VMs: %v", err)
		}
	})
	return d
}

// vmPID waits for a test VM to write its pid.
func vmPID(t *testing.T, d *Driver, s driver.Server) int {
	t.Helper()
	p, err := strconv.Atoi(string(waitFile(t, filepath.Join(d.cfg.Dir, "vms", s.Name+"-"+s.ID[:8], "pid"))))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitGoneT waits until pid is no longer a live process.
func waitGoneT(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _, err := procStat(pid)
		if err != nil || st == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", pid)
		}
		<-time.After(20 * time.Millisecond)
	}
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

// TestCloseLeavesVMsRunning: an agent stopping is not a cloud stopping.
// StopAll stops every VM of the directory, and only those.
func TestCloseLeavesVMsRunning(t *testing.T) {
	cfg := testConfig(t, 0)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var pids []int
	for i := range 3 {
		s, err := d.Boot(ctx, driver.BootSpec{Name: fmt.Sprint("vm-", i), Flavor: "c2"})
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, vmPID(t, d, s))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if syscall.Kill(p, 0) != nil {
			t.Fatalf("VM %d did not survive Close", p)
		}
		// A session of its own: not in the agent's process group.
		if pgid, _ := syscall.Getpgid(p); pgid != p {
			t.Errorf("VM %d is in process group %d, want its own", p, pgid)
		}
	}
	if _, err := d.Boot(ctx, driver.BootSpec{Name: "late", Flavor: "c2"}); err == nil {
		t.Fatal("boot after Close")
	}
	n, err := StopAll(cfg.Dir)
	if err != nil || n != 3 {
		t.Fatalf("StopAll: %d, %v", n, err)
	}
	for _, p := range pids {
		waitGoneT(t, p)
	}
	if n, err := StopAll(cfg.Dir); err != nil || n != 0 {
		t.Fatalf("StopAll again: %d, %v", n, err)
	}
}

// TestNewAdoptsVMs: a driver on the directory of an earlier one finds its
// VMs again: running ones as active servers with the same id, name,
// metadata and creation time; one whose process died as a stopped server
// (SHUTOFF) until deleted; one whose record names a live pid with another
// start time (a recycled pid) as stopped too, and that pid is never
// signalled.
func TestNewAdoptsVMs(t *testing.T) {
	cfg := testConfig(t, 0)
	t.Cleanup(func() { _, _ = StopAll(cfg.Dir) })
	d1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var booted []driver.Server
	var pids []int
	for i := range 3 {
		s, err := d1.Boot(ctx, driver.BootSpec{Name: fmt.Sprint("vm-", i), Flavor: "c2", Image: "img",
			Metadata: map[string]string{"canopy_hub": "h", "n": fmt.Sprint(i)}, UserData: []byte("#cloud-config\n")})
		if err != nil {
			t.Fatal(err)
		}
		booted = append(booted, s)
		pids = append(pids, vmPID(t, d1, s))
	}
	// vm-1 "powers off".
	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGoneT(t, pids[1])
	// vm-2's record names a live process that is not the VM (this test,
	// with a wrong start time): a recycled pid.
	root2 := filepath.Join(cfg.Dir, "vms", "vm-2-"+booted[2].ID[:8])
	var rec record
	b, err := os.ReadFile(filepath.Join(root2, RecordFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	realPID, realStart := rec.PID, rec.PIDStart
	rec.PID, rec.PIDStart = os.Getpid(), 1
	if err := writeRecord(root2, rec); err != nil {
		t.Fatal(err)
	}
	_ = d1.Close() // the "agent" stops; VMs do not

	d2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	list, err := d2.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("adopted %d servers, want 3: %+v", len(list), list)
	}
	want := []struct {
		st   driver.ServerStatus
		word string
	}{{driver.StatusActive, "ACTIVE"}, {driver.StatusStopped, "SHUTOFF"}, {driver.StatusStopped, "SHUTOFF"}}
	for i, s := range list {
		b := booted[i]
		if s.ID != b.ID || s.Name != b.Name || s.Flavor != "c2" || s.Image != "img" || s.Metadata["n"] != fmt.Sprint(i) ||
			!s.CreatedAt.Equal(b.CreatedAt) {
			t.Errorf("adopted %+v, booted %+v", s, b)
		}
		if s.Status != want[i].st || s.CloudStatus != want[i].word {
			t.Errorf("%s: status %s (%s), want %s (%s)", s.Name, s.Status, s.CloudStatus, want[i].st, want[i].word)
		}
	}
	if l, _ := d2.Limits(ctx); l.UsedInstances != 3 || l.UsedCores != 6 {
		t.Errorf("limits %+v: stopped servers still hold quota", l)
	}
	// Deleting the stopped and the "recycled" ones removes their roots
	// and signals nobody (this test is still running).
	for _, i := range []int{1, 2} {
		if err := d2.Delete(ctx, booted[i].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(cfg.Dir, "vms", booted[i].Name+"-"+booted[i].ID[:8])); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("root of %s left: %v", booted[i].Name, err)
		}
	}
	// vm-2's real process was never adopted: it is still there; stop it.
	if procAlive(realPID, realStart) {
		_ = syscall.Kill(realPID, syscall.SIGKILL)
	}
	// Deleting an adopted running VM stops its process.
	if err := d2.Delete(ctx, booted[0].ID); err != nil {
		t.Fatal(err)
	}
	waitGoneT(t, pids[0])
	if list, _ := d2.Servers(ctx); len(list) != 0 {
		t.Fatalf("servers left: %+v", list)
	}
}

func TestProcStat(t *testing.T) {
	st, start, err := procStat(os.Getpid())
	if err != nil || st == 0 || start == 0 {
		t.Fatalf("procStat(self) = %c, %d, %v", st, start, err)
	}
	if !procAlive(os.Getpid(), start) || procAlive(os.Getpid(), start+1) || procAlive(0, 0) {
		t.Fatal("procAlive does not tell a process by its start time")
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
