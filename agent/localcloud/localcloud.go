// Package localcloud is a cloud driver whose servers are local processes:
// each "VM" is a vmagent process with its own root directory, and the
// driver serves that VM's metadata the way OpenStack's metadata service does
// (/openstack/latest/meta_data.json and /openstack/latest/user_data) on a
// loopback port of its own, so vmagent runs its real code path.
//
// It backs `make demo` and the end-to-end tests, and behaves like a real
// cloud where it matters to Canopy: a VM outlives the agent that booted it
// (its own session and process group, no parent-death signal), and a new
// driver on the same directory finds every VM again. Each VM's root holds
// a record (server.json: id, name, flavor, image, metadata, creation time,
// the process id and the process's start time from /proc, so a recycled
// pid is never taken for the VM). A VM whose process is gone is listed as
// stopped (a powered-off server, which the hub deletes after its error
// delay) until it is deleted. Close does not stop VMs (an agent stopping is
// not a cloud stopping); StopAll, or `agent local-cloud stop --dir DIR`,
// does.
package localcloud

import (
	"bytes"
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
	"slices"
	"sort"
	"strconv"
	"strings"
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
	// RealWorkers, when set, makes every VM a real HTCondor worker: a
	// vmagent in namespaces of its own (host name = the server's name)
	// that starts a real condor_master and condor_startd (see Workers).
	// Nil: VMs run no HTCondor (vm_args then carry --no-condor), as in
	// `make demo`.
	RealWorkers *Workers `yaml:"real_workers"`
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
	if c.RealWorkers != nil {
		if err := c.RealWorkers.Validate(); err != nil {
			return err
		}
		if slices.Contains(c.VMArgs, "--no-condor") {
			return errors.New("local cloud: real_workers run HTCondor: drop --no-condor from vm_args")
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

// RecordFile is the name of a VM's record inside its root.
const RecordFile = "server.json"

// userDataFile keeps a VM's user-data in its root, so that a driver that
// adopts the VM can serve its metadata again.
const userDataFile = "user_data.canopy"

// record is what a VM's root says about it (RecordFile).
type record struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Flavor   string            `json:"flavor"`
	Image    string            `json:"image"`
	Metadata map[string]string `json:"metadata"`
	Created  time.Time         `json:"created"`
	// PID is the vmagent's process id and PIDStart its start time (clock
	// ticks after boot, /proc/PID/stat field 22): together they name the
	// process; a pid alone could be another process's after a recycle.
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"`
	// MetadataAddr is the loopback address its metadata is served on.
	MetadataAddr string `json:"metadata_addr"`
}

type server struct {
	driver.Server
	flavor protocol.Flavor
	root   string
	rec    record
	meta   *http.Server
	// exited is closed when the VM's process ends, for VMs this driver
	// started (it is their parent); nil for adopted VMs, whose process is
	// looked up in /proc.
	exited chan struct{}
}

// ErrQuota is returned when a boot would exceed the project's quota.
var ErrQuota error = quotaError{}

type quotaError struct{}

func (quotaError) Error() string { return "quota exceeded" }

// ErrorClass tells the agent what kind of failure this is.
func (quotaError) ErrorClass() protocol.ErrorClass { return protocol.ErrClassQuota }

// New returns a local cloud. It adopts every VM whose root it finds under
// cfg.Dir: running ones become its servers again, those whose process is
// gone are listed as stopped.
func New(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{"vms", "images"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("local cloud: %w", err)
		}
	}
	d := &Driver{cfg: cfg, servers: map[string]*server{}, images: map[string]images.Image{}}
	if err := d.adopt(); err != nil {
		return nil, err
	}
	return d, nil
}

// adopt finds the VMs of an earlier driver on the same directory.
func (d *Driver) adopt() error {
	recs, err := readRecords(d.cfg.Dir)
	if err != nil {
		return err
	}
	for _, r := range recs {
		f := protocol.Flavor{Name: r.rec.Flavor}
		for _, fl := range d.cfg.Flavors {
			if fl.Name == r.rec.Flavor {
				f = fl
			}
		}
		s := &server{
			Server: driver.Server{ID: r.rec.ID, Name: r.rec.Name, Flavor: r.rec.Flavor, Image: r.rec.Image,
				Status: driver.StatusActive, CloudStatus: "ACTIVE", Metadata: maps.Clone(r.rec.Metadata), CreatedAt: r.rec.Created},
			flavor: f, root: r.root, rec: r.rec,
		}
		if r.rec.PID == 0 {
			// Started, but the record was not completed: find the
			// process by its root.
			if pid, start, ok := findByRoot(r.root); ok {
				s.rec.PID, s.rec.PIDStart = pid, start
				_ = writeRecord(r.root, s.rec)
			}
		}
		if procAlive(s.rec.PID, s.rec.PIDStart) {
			if ud, err := os.ReadFile(filepath.Join(r.root, userDataFile)); err == nil {
				// Serve its metadata again, where the VM knows to find it
				// (best effort: a vmagent reads it at boot).
				if ln, err := net.Listen("tcp", s.rec.MetadataAddr); err == nil {
					s.meta = serveMetadata(ln, s.ID, s.Name, d.hostname(s.Name), s.Metadata, ud)
				}
			}
		} else {
			s.Status, s.CloudStatus = driver.StatusStopped, "SHUTOFF"
		}
		d.servers[s.ID] = s
	}
	return nil
}

type foundRecord struct {
	root string
	rec  record
}

// readRecords reads every VM record under dir/vms. Roots without a
// record (a boot interrupted before its record was written) are skipped.
func readRecords(dir string) ([]foundRecord, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "vms"))
	if err != nil {
		return nil, fmt.Errorf("local cloud: %w", err)
	}
	var out []foundRecord
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		root := filepath.Join(dir, "vms", e.Name())
		b, err := os.ReadFile(filepath.Join(root, RecordFile))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("local cloud: VM record: %w", err)
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
			return nil, fmt.Errorf("local cloud: VM record %s is unreadable: %v", filepath.Join(root, RecordFile), err)
		}
		out = append(out, foundRecord{root: root, rec: r})
	}
	return out, nil
}

// writeRecord writes a VM's record atomically.
func writeRecord(root string, r record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(root, RecordFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(root, RecordFile))
}

// procStat returns a process's state letter and start time
// (/proc/PID/stat fields 3 and 22).
func procStat(pid int) (byte, uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return f[0][0], start, nil
}

// procAlive reports whether pid is still the process that started at
// start, and not a zombie.
func procAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, s, err := procStat(pid)
	return err == nil && s == start && st != 'Z' && st != 'X'
}

// findByRoot finds a VM process by the --root argument on its command line.
func findByRoot(root string) (int, uint64, bool) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte("\x00--root\x00"+root+"\x00")) {
			continue
		}
		if st, start, err := procStat(pid); err == nil && st != 'Z' {
			return pid, start, true
		}
	}
	return 0, 0, false
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

// running reports whether a server's process still runs. d.mu is held.
func (s *server) running() bool {
	if s.exited != nil {
		select {
		case <-s.exited:
			return false
		default:
			return true
		}
	}
	return procAlive(s.rec.PID, s.rec.PIDStart)
}

// Servers implements driver.Driver. A VM whose process ended is listed
// as stopped (SHUTOFF), like a powered-off server.
func (d *Driver) Servers(context.Context) ([]driver.Server, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]driver.Server, 0, len(d.servers))
	for _, s := range d.servers {
		if s.Status == driver.StatusActive && !s.running() {
			s.Status, s.CloudStatus = driver.StatusStopped, "SHUTOFF"
		}
		srv := s.Server
		srv.Metadata = maps.Clone(s.Metadata)
		out = append(out, srv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Boot implements driver.Driver: it starts a vmagent process in a session
// of its own, so that it outlives the agent.
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
			CloudStatus: "BUILD", Metadata: maps.Clone(spec.Metadata), CreatedAt: time.Now().UTC()},
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
		_ = os.RemoveAll(s.root)
		return driver.Server{}, fmt.Errorf("boot %s: %w", spec.Name, err)
	}
	d.mu.Lock()
	s.Status, s.CloudStatus = driver.StatusActive, "ACTIVE"
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

// hostname is the host name the metadata gives the VM called name: with
// real workers the one it runs under, else its name.
func (d *Driver) hostname(name string) string {
	if w := d.cfg.RealWorkers; w != nil {
		if h, err := w.hostname(name); err == nil {
			return h
		}
	}
	return name
}

// serveMetadata serves one VM's metadata and user-data on ln.
func serveMetadata(ln net.Listener, id, name, hostname string, meta map[string]string, userData []byte) *http.Server {
	md, _ := json.Marshal(metaData{UUID: id, Name: name, Hostname: hostname, AvailabilityZone: "local",
		ProjectID: "local", Meta: meta})
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv
}

func (d *Driver) start(s *server, userData []byte) error {
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.root, userDataFile), userData, 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("metadata listener: %w", err)
	}
	s.rec = record{ID: s.ID, Name: s.Name, Flavor: s.Flavor, Image: s.Image, Metadata: maps.Clone(s.Metadata),
		Created: s.CreatedAt, MetadataAddr: ln.Addr().String()}
	// The record exists before the process: a driver that adopts the root
	// later finds the process by its root if the pid was never written.
	if err := writeRecord(s.root, s.rec); err != nil {
		_ = ln.Close()
		return err
	}
	s.meta = serveMetadata(ln, s.ID, s.Name, d.hostname(s.Name), s.Metadata, userData)

	console, err := os.OpenFile(filepath.Join(s.root, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		_ = s.meta.Close()
		return err
	}
	args := append([]string{"run", "--metadata-url", "http://" + ln.Addr().String(), "--root", s.root}, d.cfg.VMArgs...)
	cmd := exec.Command(d.cfg.VMAgent, args...)
	// A session of its own: no signal meant for the agent's process group
	// or terminal reaches the VM, and no parent-death signal ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if w := d.cfg.RealWorkers; w != nil {
		argv, env, attr, err := w.prepareWorker(s.root, s.Name, s.flavor.VCPUs, s.flavor.RAMMiB, d.cfg.VMAgent, args)
		if err != nil {
			_ = console.Close()
			_ = s.meta.Close()
			return fmt.Errorf("real worker: %w", err)
		}
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Env, cmd.SysProcAttr = env, attr
	}
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Dir = s.root
	if err := cmd.Start(); err != nil {
		_ = console.Close()
		_ = s.meta.Close()
		return fmt.Errorf("start vmagent: %w", err)
	}
	_ = console.Close() // the VM holds its own copy
	exited := s.exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.rec.PID = cmd.Process.Pid
	if _, start, err := procStat(cmd.Process.Pid); err == nil {
		s.rec.PIDStart = start
	}
	if err := writeRecord(s.root, s.rec); err != nil {
		stopProcess(s.rec.PID, s.rec.PIDStart, exited)
		_ = s.meta.Close()
		return fmt.Errorf("write VM record: %w", err)
	}
	return nil
}

// Delete implements driver.Driver: it stops the VM's process (SIGTERM to
// its process group, then SIGKILL after 5 s) and removes its root.
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
	if s.meta != nil {
		_ = s.meta.Close()
	}
	stopProcess(s.rec.PID, s.rec.PIDStart, s.exited)
	if err := os.RemoveAll(s.root); err != nil {
		return fmt.Errorf("delete %s: %w", s.Name, err)
	}
	return nil
}

// stopGrace is how long a VM gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// stopProcess ends a VM's process group: SIGTERM, then SIGKILL after
// stopGrace. It signals only while pid is still the process that started
// at start. exited, if not nil, is closed when the process has been reaped
// (the driver is its parent); otherwise /proc is polled.
func stopProcess(pid int, start uint64, exited <-chan struct{}) {
	if !procAlive(pid, start) {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	if waitGone(pid, start, exited, stopGrace) {
		return
	}
	if procAlive(pid, start) {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	waitGone(pid, start, exited, stopGrace)
}

// waitGone waits up to limit for the process to end.
func waitGone(pid int, start uint64, exited <-chan struct{}, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	if exited != nil {
		select {
		case <-exited:
			return true
		case <-deadline.C:
			return false
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for procAlive(pid, start) {
		select {
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// Close releases the driver: it stops serving the VMs' metadata and
// accepts no boots afterwards. It does not stop the VMs: they are the
// cloud's, not the agent's (see StopAll).
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for _, s := range d.servers {
		if s.meta != nil {
			_ = s.meta.Close()
		}
	}
	return nil
}

// StopAll stops every VM of the local cloud in dir (the directory of its
// Config) and returns how many it stopped: the demo and tests call it (or
// `agent local-cloud stop --dir DIR`) to leave no process behind. The VMs'
// roots stay, listed as stopped by the next driver.
func StopAll(dir string) (int, error) {
	recs, err := readRecords(dir)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	n := 0
	for _, r := range recs {
		pid, start := r.rec.PID, r.rec.PIDStart
		if pid == 0 {
			var ok bool
			if pid, start, ok = findByRoot(r.root); !ok {
				continue
			}
		}
		if !procAlive(pid, start) {
			continue
		}
		n++
		wg.Go(func() { stopProcess(pid, start, nil) })
	}
	wg.Wait()
	return n, nil
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
