package localcloud

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
)

// TestRealWorkerNamespaces: with real_workers, a VM runs in namespaces of
// its own: its host name is the server's name (bare, or dotted with the
// domain), its /etc/hosts names it, hidden directories are empty, its
// vmagent gets HTCondor's directories and config; the machine's own host
// name and /etc/hosts are untouched; the power-off program run inside the
// VM ends the VM (listed stopped) and nothing of it is left running; a
// deleted VM leaves no process either. (The test binary plays vmagent; the
// live test in deploy/demo runs a real one with HTCondor.)
func TestRealWorkerNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("real workers need root (namespaces, mounts); the tests run as root")
	}
	hostBefore, _ := os.Hostname()
	hostsBefore, _ := os.ReadFile("/etc/hosts")
	secret := t.TempDir()
	if err := os.WriteFile(filepath.Join(secret, "POOL"), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, domain, server, host, hostsLine string
	}{
		{name: "bare", server: "canopy-west-p1-0-0", host: "canopy-west-p1-0-0", hostsLine: "127.0.0.1 canopy-west-p1-0-0\n"},
		{name: "dotted", domain: "west.example.test", server: "Canopy-West-p2-0-1", host: "canopy-west-p2-0-1.west.example.test",
			hostsLine: "127.0.0.1 canopy-west-p2-0-1.west.example.test canopy-west-p2-0-1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, 0)
			cfg.RealWorkers = &Workers{ReleaseDir: "/opt/htcondor-test", Domain: tt.domain, Hide: []string{secret}, CondorUser: "root"}
			cfg.VMArgs = []string{"--test-hidden", filepath.Join(secret, "POOL")}
			// The condor user must reach the VMs' roots.
			for _, dir := range []string{filepath.Dir(cfg.Dir), cfg.Dir} {
				if err := os.Chmod(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			d, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Close(); _, _ = StopAll(cfg.Dir) })
			ctx := context.Background()
			s, err := d.Boot(ctx, driver.BootSpec{Name: tt.server, Flavor: "c2", UserData: []byte("#cloud-config\n")})
			if err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(cfg.Dir, "vms", tt.server+"-"+s.ID[:8])
			seen := string(waitFile(t, filepath.Join(root, "seen")))
			for _, want := range []string{
				"hostname=" + tt.host + "\n",
				"condor_config=" + filepath.Join(root, "condor", "condor_config") + "\n",
				"hidden_visible=false\n",
				tt.hostsLine,
			} {
				if !strings.Contains(seen, want) {
					t.Errorf("the VM saw:\n%s\nwant %q", seen, want)
				}
			}
			if md := string(waitFile(t, filepath.Join(root, "got-meta_data.json"))); !strings.Contains(md, `"hostname":"`+tt.host+`"`) {
				t.Errorf("metadata hostname: %s", md)
			}
			conf, _ := os.ReadFile(filepath.Join(root, "condor", "condor_config"))
			for _, want := range []string{"RELEASE_DIR = /opt/htcondor-test", "NUM_CPUS = 2", "MEMORY = 4096",
				"LOCAL_CONFIG_DIR = " + filepath.Join(root, "etc", "condor", "config.d")} {
				if !strings.Contains(string(conf), want+"\n") {
					t.Errorf("condor_config lacks %q:\n%s", want, conf)
				}
			}
			if h, _ := os.Hostname(); h != hostBefore {
				t.Fatalf("the machine's host name changed: %q, was %q", h, hostBefore)
			}
			if b, _ := os.ReadFile("/etc/hosts"); string(b) != string(hostsBefore) {
				t.Fatal("the machine's /etc/hosts changed")
			}
			// The VM's processes: its init (the recorded pid) and the
			// vmagent below it.
			d.mu.Lock()
			initPID := d.servers[s.ID].rec.PID
			d.mu.Unlock()
			kids := childrenOf(initPID)
			if len(kids) == 0 {
				t.Fatal("no vmagent below the VM's init")
			}
			if tt.name == "bare" {
				// The VM's root powers it off: the init ends, and with it
				// every process of the VM; the cloud lists it stopped.
				cmd := exec.Command("nsenter", "--target", strconv.Itoa(kids[0]), "--pid", "--mount", "--", "/sbin/poweroff")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("poweroff inside the VM: %v: %s", err, out)
				}
				waitGoneT(t, initPID)
				for _, k := range kids {
					waitGoneT(t, k)
				}
				if b := waitFile(t, filepath.Join(root, PoweroffLog)); !strings.Contains(string(b), "poweroff") {
					t.Errorf("poweroff log: %q", b)
				}
				waitStatus(t, d, s.ID, driver.StatusStopped)
			}
			if err := d.Delete(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			for _, p := range append(kids, initPID) {
				if err := syscall.Kill(p, 0); err == nil {
					t.Errorf("process %d of the VM still runs after delete", p)
				}
			}
		})
	}
}

// TestRealWorkerUnreachableRoot: a VM whose root the condor user could
// not reach (the local cloud under a 0700 directory) is not booted, and
// the error names the directory.
func TestRealWorkerUnreachableRoot(t *testing.T) {
	cfg := testConfig(t, 0)
	cfg.RealWorkers = &Workers{ReleaseDir: "/opt/htcondor-test", CondorUser: "root"}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(); _, _ = StopAll(cfg.Dir) })
	if err := os.Chmod(filepath.Dir(cfg.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = d.Boot(context.Background(), driver.BootSpec{Name: "vm-1", Flavor: "c2"})
	if err == nil || !strings.Contains(err.Error(), filepath.Dir(cfg.Dir)+" (mode 700) is not traversable") {
		t.Fatalf("boot under a 0700 directory: %v", err)
	}
	if srvs, _ := d.Servers(context.Background()); len(srvs) != 0 {
		t.Fatalf("servers after a failed boot: %+v", srvs)
	}
}

// TestRealWorkersConfig: what a real-worker config refuses.
func TestRealWorkersConfig(t *testing.T) {
	base := func() Config {
		return Config{VMAgent: "/bin/vmagent", Dir: "/tmp/x", Flavors: testConfig(t, 0).Flavors, RealWorkers: &Workers{ReleaseDir: "/opt/condor"}}
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{name: "ok", mod: func(*Config) {}},
		{name: "relative release", mod: func(c *Config) { c.RealWorkers.ReleaseDir = "opt/condor" }, want: "release_dir"},
		{name: "bad domain", mod: func(c *Config) { c.RealWorkers.Domain = "Example..org" }, want: "domain"},
		{name: "hide /", mod: func(c *Config) { c.RealWorkers.Hide = []string{"/"} }, want: "hide"},
		{name: "no-condor", mod: func(c *Config) { c.VMArgs = []string{"--no-condor"} }, want: "--no-condor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			err := c.Validate()
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.want)
			}
		})
	}
	w := &Workers{ReleaseDir: "/opt/condor"}
	if _, err := w.hostname("bad_name"); err == nil {
		t.Error("a server name with _ became a host name")
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var out []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			p, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, p)
			}
		}
		// The init runs vmagent and a sleep; vmagent is the one whose
		// command line names --root.
		var vm []int
		for _, p := range out {
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline"); strings.Contains(string(b), "\x00--root\x00") {
				vm = append(vm, p)
			}
		}
		if len(vm) > 0 {
			return vm
		}
		<-time.After(20 * time.Millisecond)
	}
	return nil
}

func waitStatus(t *testing.T, d *Driver, id string, want driver.ServerStatus) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		srvs, _ := d.Servers(context.Background())
		for _, s := range srvs {
			if s.ID == id && s.Status == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %s never %s: %+v", id, want, srvs)
		}
		<-time.After(20 * time.Millisecond)
	}
}
