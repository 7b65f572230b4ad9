// Package localcloud is a cloud driver whose servers are local processes:
// each "VM" is a vmagent process with its own root directory, and the
// driver serves that VM's metadata the way OpenStack's metadata service does
// (/openstack/latest/meta_data.json and /openstack/latest/user_data) on a
// loopback port of its own, so vmagent runs its real code path.
//
// It backs `make demo` and the end-to-end tests. The cloud lives as long as
// the driver: Close stops every VM, and VMs die with their agent (Linux
// parent-death signal), so nothing outlives a crashed agent.
package localcloud

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
)

// Config configures a local cloud.
type Config struct {
	// VMAgent is the path of the vmagent binary each VM runs.
	VMAgent string `yaml:"vmagent"`
	// Dir holds the VMs' root directories and the image store.
	Dir string `yaml:"dir"`
	// Flavors are the sizes the cloud offers.
	Flavors []protocol.Flavor `yaml:"flavors"`
	// MaxCores, MaxRAMMiB and MaxInstances are the project's quota; 0 means unlimited.
	MaxCores     int `yaml:"max_cores"`
	MaxRAMMiB    int `yaml:"max_ram_mib"`
	MaxInstances int `yaml:"max_instances"`
	// VMArgs are extra arguments for every vmagent.
	VMArgs []string `yaml:"vm_args"`
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.VMAgent == "" {
		return errors.New("local cloud: vmagent path is required")
	}
	if c.Dir == "" {
		return errors.New("local cloud: dir is required")
	}
	if len(c.Flavors) == 0 {
		return errors.New("local cloud: at least one flavor is required")
	}
	for _, f := range c.Flavors {
		if f.Name == "" || f.VCPUs <= 0 || f.RAMMiB <= 0 {
			return fmt.Errorf("local cloud: flavor %q needs a name, vcpus > 0 and ram_mib > 0", f.Name)
		}
	}
	return nil
}

// Driver is a local cloud. It implements driver.Driver.
type Driver struct {
	cfg Config

	mu      sync.Mutex
	servers map[string]*server
	images  map[string]images.Image
	closed  bool
}

type server struct {
	driver.Server
	flavor protocol.Flavor
	root   string
	cmd    *exec.Cmd
	meta   *http.Server
	exited chan struct{}
}

// ErrQuota is returned when a boot would exceed the project's quota.
var ErrQuota error = quotaError{}

type quotaError struct{}

func (quotaError) Error() string { return "quota exceeded" }

// ErrorClass tells the agent what kind of failure this is.
func (quotaError) ErrorClass() protocol.ErrorClass { return protocol.ErrClassQuota }

// New returns a local cloud.
func New(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{"vms", "images"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("local cloud: %w", err)
		}
	}
	return &Driver{cfg: cfg, servers: map[string]*server{}, images: map[string]images.Image{}}, nil
}

// Flavors implements driver.Driver.
func (d *Driver) Flavors(context.Context) ([]protocol.Flavor, error) {
	out := make([]protocol.Flavor, len(d.cfg.Flavors))
	copy(out, d.cfg.Flavors)
	for i := range out {
		if out[i].ID == "" {
			out[i].ID = out[i].Name
		}
	}
	return out, nil
}

func orUnlimited(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// Limits implements driver.Driver.
func (d *Driver) Limits(context.Context) (protocol.Limits, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := protocol.Limits{
		MaxCores:     orUnlimited(d.cfg.MaxCores),
		MaxRAMMiB:    orUnlimited(d.cfg.MaxRAMMiB),
		MaxInstances: orUnlimited(d.cfg.MaxInstances),
	}
	for _, s := range d.servers {
		l.UsedCores += s.flavor.VCPUs
		l.UsedRAMMiB += s.flavor.RAMMiB
		l.UsedInstances++
	}
	return l, nil
}

// Servers implements driver.Driver.
func (d *Driver) Servers(context.Context) ([]driver.Server, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]driver.Server, 0, len(d.servers))
	for _, s := range d.servers {
		srv := s.Server
		srv.Metadata = maps.Clone(s.Metadata)
		select {
		case <-s.exited:
			srv.Status = driver.StatusOther // powered off
		default:
		}
		out = append(out, srv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Boot implements driver.Driver: it starts a vmagent process.
func (d *Driver) Boot(ctx context.Context, spec driver.BootSpec) (driver.Server, error) {
	var f protocol.Flavor
	found := false
	for _, fl := range d.cfg.Flavors {
		if fl.Name == spec.Flavor {
			f, found = fl, true
		}
	}
	if !found {
		return driver.Server{}, fmt.Errorf("boot %s: no flavor %q", spec.Name, spec.Flavor)
	}
	id, err := newID()
	if err != nil {
		return driver.Server{}, fmt.Errorf("boot %s: %w", spec.Name, err)
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return driver.Server{}, fmt.Errorf("boot %s: cloud is shut down", spec.Name)
	}
	if err := d.checkQuotaLocked(f); err != nil {
		d.mu.Unlock()
		return driver.Server{}, fmt.Errorf("boot %s: %w", spec.Name, err)
	}
	s := &server{
		Server: driver.Server{ID: id, Name: spec.Name, Flavor: f.Name, Image: spec.Image, Status: driver.StatusBuild,
			Metadata: maps.Clone(spec.Metadata), CreatedAt: time.Now().UTC()},
		flavor: f,
		root:   filepath.Join(d.cfg.Dir, "vms", spec.Name+"-"+id[:8]),
		exited: make(chan struct{}),
	}
	d.servers[id] = s // reserve quota while starting
	d.mu.Unlock()

	if err := d.start(s, spec.UserData); err != nil {
		d.mu.Lock()
		delete(d.servers, id)
		d.mu.Unlock()
		return driver.Server{}, fmt.Errorf("boot %s: %w", spec.Name, err)
	}
	d.mu.Lock()
	s.Status = driver.StatusActive
	srv := s.Server
	d.mu.Unlock()
	return srv, nil
}

func (d *Driver) checkQuotaLocked(f protocol.Flavor) error {
	var cores, ram, n int
	for _, s := range d.servers {
		cores += s.flavor.VCPUs
		ram += s.flavor.RAMMiB
		n++
	}
	switch {
	case d.cfg.MaxInstances > 0 && n+1 > d.cfg.MaxInstances:
		return fmt.Errorf("%w for instances: requested 1, already used %d of %d", ErrQuota, n, d.cfg.MaxInstances)
	case d.cfg.MaxCores > 0 && cores+f.VCPUs > d.cfg.MaxCores:
		return fmt.Errorf("%w for cores: requested %d, already used %d of %d", ErrQuota, f.VCPUs, cores, d.cfg.MaxCores)
	case d.cfg.MaxRAMMiB > 0 && ram+f.RAMMiB > d.cfg.MaxRAMMiB:
		return fmt.Errorf("%w for ram: requested %d, already used %d of %d", ErrQuota, f.RAMMiB, ram, d.cfg.MaxRAMMiB)
	}
	return nil
}

// metaData is the subset of OpenStack's meta_data.json that vmagent reads.
type metaData struct {
	UUID             string            `json:"uuid"`
	Name             string            `json:"name"`
	Hostname         string            `json:"hostname"`
	AvailabilityZone string            `json:"availability_zone"`
	ProjectID        string            `json:"project_id"`
	Meta             map[string]string `json:"meta"`
	LaunchIndex      int               `json:"launch_index"`
}

func (d *Driver) start(s *server, userData []byte) error {
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return err
	}
	md, err := json.Marshal(metaData{UUID: s.ID, Name: s.Name, Hostname: s.Name, AvailabilityZone: "local",
		ProjectID: "local", Meta: s.Metadata})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openstack/latest/meta_data.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(md)
	})
	mux.HandleFunc("GET /openstack/latest/user_data", func(w http.ResponseWriter, _ *http.Request) {
		if len(userData) == 0 {
			http.NotFound(w, nil)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(userData)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("metadata listener: %w", err)
	}
	s.meta = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.meta.Serve(ln) }()

	console, err := os.OpenFile(filepath.Join(s.root, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		_ = s.meta.Close()
		return err
	}
	args := append([]string{"run", "--metadata-url", "http://" + ln.Addr().String(), "--root", s.root}, d.cfg.VMArgs...)
	cmd := exec.Command(d.cfg.VMAgent, args...)
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Dir = s.root
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = console.Close()
		_ = s.meta.Close()
		return fmt.Errorf("start vmagent: %w", err)
	}
	s.cmd = cmd
	go func() {
		_ = cmd.Wait()
		_ = console.Close()
		close(s.exited)
	}()
	return nil
}

// Delete implements driver.Driver: it stops the VM's process (SIGTERM, then
// SIGKILL after 5 s) and removes its root directory.
func (d *Driver) Delete(ctx context.Context, id string) error {
	d.mu.Lock()
	s, ok := d.servers[id]
	if ok {
		delete(d.servers, id)
	}
	d.mu.Unlock()
	if !ok {
		return nil
	}
	stop(s)
	if err := os.RemoveAll(s.root); err != nil {
		return fmt.Errorf("delete %s: %w", s.Name, err)
	}
	return nil
}

func stop(s *server) {
	if s.meta != nil {
		_ = s.meta.Close()
	}
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// Close stops every VM. The cloud accepts no boots afterwards.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	all := make([]*server, 0, len(d.servers))
	for id, s := range d.servers {
		all = append(all, s)
		delete(d.servers, id)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { stop(s) })
	}
	wg.Wait()
	return nil
}

// Images implements driver.Driver.
func (d *Driver) Images(context.Context) ([]images.Image, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]images.Image, 0, len(d.images))
	for _, im := range d.images {
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// UploadImage implements driver.Driver: it streams r into the image store,
// computing md5 and sha256 on the way.
func (d *Driver) UploadImage(ctx context.Context, meta images.Image, r io.Reader) (images.Image, error) {
	id, err := newID()
	if err != nil {
		return images.Image{}, err
	}
	path := filepath.Join(d.cfg.Dir, "images", id)
	f, err := os.Create(path)
	if err != nil {
		return images.Image{}, fmt.Errorf("upload image %s: %w", meta.Name, err)
	}
	sums := map[string]hash.Hash{"md5": md5.New(), "sha256": sha256.New()}
	w := io.MultiWriter(f, sums["md5"], sums["sha256"])
	n, err := io.Copy(w, readerCtx{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return images.Image{}, fmt.Errorf("upload image %s: %w", meta.Name, err)
	}
	im := meta
	im.ID, im.SizeBytes, im.Status = id, n, images.StatusActive
	im.Checksums = []images.Checksum{
		{Algorithm: "md5", Hex: hex.EncodeToString(sums["md5"].Sum(nil))},
		{Algorithm: "sha256", Hex: hex.EncodeToString(sums["sha256"].Sum(nil))},
	}
	d.mu.Lock()
	d.images[id] = im
	d.mu.Unlock()
	return im, nil
}

// DownloadImage implements driver.Driver.
func (d *Driver) DownloadImage(ctx context.Context, id string) (io.ReadCloser, error) {
	d.mu.Lock()
	_, ok := d.images[id]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("download image %s: no such image", id)
	}
	f, err := os.Open(filepath.Join(d.cfg.Dir, "images", id))
	if err != nil {
		return nil, fmt.Errorf("download image %s: %w", id, err)
	}
	return f, nil
}

type readerCtx struct {
	ctx context.Context
	r   io.Reader
}

func (r readerCtx) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func newID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
