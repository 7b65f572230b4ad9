package localcloud

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Workers configures real workers: each VM is a vmagent in namespaces of
// its own (UTS: its host name is the server's name; mount: a private
// /etc/hosts, hidden directories, the power-off programs replaced; PID:
// the VM ends, every process in it, when its first process does), and
// vmagent starts a real condor_master and condor_startd from the config it
// writes, which join the pool its agent names (condor_host). Linux only,
// as root.
type Workers struct {
	// ReleaseDir is HTCondor's installation: bin, sbin, lib and libexec
	// under it (a relocatable tarball, or /usr for packages). Required.
	ReleaseDir string `yaml:"release_dir"`
	// Domain, when set, makes each VM's host name <server name>.<domain>;
	// empty: the bare server name, as many cloud images have.
	Domain string `yaml:"domain"`
	// Hide are directories the VMs must not see, each covered by an empty
	// tmpfs in the VM's mount namespace: the central manager's state (its
	// signing key, its FS authentication directory) when the pool runs on
	// this machine, so that VMs authenticate with their own tokens only.
	Hide []string `yaml:"hide"`
	// CondorUser owns the startd's state directories; default "condor".
	CondorUser string `yaml:"condor_user"`
	// UpdateInterval is the startd's UPDATE_INTERVAL in seconds; default 5
	// (HTCondor's is 300: a local VM should show its jobs promptly).
	UpdateInterval int `yaml:"update_interval"`
}

var domainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// hostLabelRE is one label of a host name.
var hostLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks the real-worker settings.
func (w *Workers) Validate() error {
	if w.ReleaseDir == "" || !filepath.IsAbs(w.ReleaseDir) {
		return fmt.Errorf("local cloud: real_workers.release_dir %q must be an absolute path", w.ReleaseDir)
	}
	if w.Domain != "" && (!domainRE.MatchString(w.Domain) || len(w.Domain) > 200) {
		return fmt.Errorf("local cloud: real_workers.domain %q is not a DNS domain (lower-case labels)", w.Domain)
	}
	for _, h := range w.Hide {
		if !filepath.IsAbs(h) || filepath.Clean(h) == "/" || strings.ContainsAny(h, "\n") {
			return fmt.Errorf("local cloud: real_workers.hide entry %q must be an absolute directory other than /", h)
		}
	}
	if w.UpdateInterval < 0 {
		return fmt.Errorf("local cloud: real_workers.update_interval %d is negative", w.UpdateInterval)
	}
	return nil
}

// hostname is the host name of the VM called name: lower-case, as DNS
// names are, and dotted with the domain when one is set.
func (w *Workers) hostname(name string) (string, error) {
	h := strings.ToLower(name)
	if !hostLabelRE.MatchString(h) {
		return "", fmt.Errorf("server name %q cannot be a host name label", name)
	}
	if w.Domain != "" {
		h += "." + w.Domain
	}
	return h, nil
}

// powerOffPrograms are replaced inside every VM: vmagent's config has the
// condor_master run /sbin/poweroff as root when it exits, which must end
// the VM, not this machine.
var powerOffPrograms = []string{"/sbin/poweroff", "/usr/sbin/poweroff", "/sbin/halt", "/usr/sbin/halt",
	"/sbin/reboot", "/usr/sbin/reboot", "/sbin/shutdown", "/usr/sbin/shutdown"}

// stubTargets are the files the power-off programs resolve to (on Debian
// all links to systemctl), each once.
func stubTargets() ([]string, error) {
	var out []string
	for _, p := range powerOffPrograms {
		r, err := filepath.EvalSymlinks(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", p, err)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// PoweroffLog is the file, in a real-worker VM's root, where its power-off
// stub appends a line (Unix time, program, arguments) each time it runs.
const PoweroffLog = "poweroff.log"

// vmInit is the first process of a real-worker VM (PID 1 of its PID
// namespace), run by /bin/sh: it sets the host name, mounts /proc for its
// PID namespace, its /etc/hosts, the hidden directories and the power-off
// stub (in its private mount namespace: nothing is seen outside), then
// runs vmagent and stays, as a VM's init does, until it is told to stop
// (SIGTERM: the power-off stub, or the cloud deleting the VM). When it
// exits, the kernel ends every process of the VM. Any setup failure stops
// it before vmagent runs.
const vmInit = `set -e
h=$1 hosts=$2 stub=$3
shift 3
hostname "$h"
mount -t proc canopy-vm-proc /proc
mount --bind "$hosts" /etc/hosts
IFS='
'
for p in $CANOPY_VM_HIDE; do mount -t tmpfs -o size=1m,mode=0755 canopy-vm-hide "$p"; done
for p in $CANOPY_VM_STUB; do mount --bind "$stub" "$p"; done
unset IFS CANOPY_VM_HIDE CANOPY_VM_STUB
set +e
trap 'exit 0' TERM INT
"$@" &
while :; do sleep 86400 & wait; done`

// prepareWorker writes a real-worker VM's HTCondor base config, state
// directories, /etc/hosts and power-off stub under its root, and returns
// the command line, environment and namespaces its init runs with.
func (w *Workers) prepareWorker(root, name string, cpus, memMiB int, vmagent string, args []string) (argv, env []string, attr *syscall.SysProcAttr, err error) {
	host, err := w.hostname(name)
	if err != nil {
		return nil, nil, nil, err
	}
	owner := w.CondorUser
	if owner == "" {
		owner = "condor"
	}
	u, err := user.Lookup(owner)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("real workers: the %s account: %w", owner, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The startd works as the condor user: the directory chain must be
	// traversable and its state directories its own.
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, nil, nil, err
	}
	if err := traversable(filepath.Dir(root)); err != nil {
		return nil, nil, nil, fmt.Errorf("real workers: %w: the %s account must reach the VMs' roots (keep the local cloud's dir out of the agent's state_dir, which is 0700)", err, owner)
	}
	local := filepath.Join(root, "condor")
	for _, d := range []string{"", "log", "spool", "execute", "lock", "run"} {
		p := filepath.Join(local, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, nil, nil, err
		}
		if d != "" {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	confDir := filepath.Join(root, "etc", "condor", "config.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return nil, nil, nil, err
	}
	upd := w.UpdateInterval
	if upd == 0 {
		upd = 5
	}
	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	line("# Written by the local cloud for VM %s: what a packaged HTCondor installs, for this machine.", name)
	line("RELEASE_DIR = %s", w.ReleaseDir)
	line("BIN = $(RELEASE_DIR)/bin")
	line("SBIN = $(RELEASE_DIR)/sbin")
	line("LIB = $(RELEASE_DIR)/lib")
	line("LIBEXEC = $(RELEASE_DIR)/libexec")
	line("use security:recommended")
	line("UPDATE_INTERVAL = %d", upd)
	line("# No CPU benchmarks at start: they hold up a graceful shutdown.")
	line("RunBenchmarks = False")
	line("NUM_CPUS = %d", max(1, cpus))
	line("MEMORY = %d", max(64, memMiB))
	line("CONDOR_ADMIN =")
	line("MAIL = /bin/false")
	line("# vmagent writes its config here (/etc/condor/config.d in a real VM).")
	line("LOCAL_CONFIG_DIR = %s", confDir)
	line("LOCAL_CONFIG_FILE = %s", filepath.Join(local, "last.conf"))
	if err := os.WriteFile(filepath.Join(local, "condor_config"), []byte(b.String()), 0o644); err != nil {
		return nil, nil, nil, err
	}
	b.Reset()
	line("# Read after vmagent's config: what differs between a real VM and this machine.")
	line("# vmagent's token directory is the VM's own /etc/condor/tokens.d, under its root here.")
	line("SEC_TOKEN_DIRECTORY = %s", filepath.Join(root, "etc", "condor", "tokens.d"))
	line("# Every VM shares 127.0.0.1 with the central manager.")
	line("NETWORK_INTERFACE = 127.0.0.1")
	line("BIND_ALL_INTERFACES = False")
	line("ENABLE_IPV6 = False")
	line("USE_SHARED_PORT = False")
	line("# The central manager's daemons would try a family session with a daemon on their")
	line("# own machine, which a VM's daemons do not share.")
	line("SEC_USE_FAMILY_SESSION = False")
	line("LOCAL_DIR = %s", local)
	line("LOG = $(LOCAL_DIR)/log")
	line("SPOOL = $(LOCAL_DIR)/spool")
	line("EXECUTE = $(LOCAL_DIR)/execute")
	line("LOCK = $(LOCAL_DIR)/lock")
	line("RUN = $(LOCAL_DIR)/run")
	if err := os.WriteFile(filepath.Join(local, "last.conf"), []byte(b.String()), 0o644); err != nil {
		return nil, nil, nil, err
	}
	names := host
	if short, _, dotted := strings.Cut(host, "."); dotted {
		names += " " + short
	}
	hosts := filepath.Join(root, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n127.0.0.1 "+names+"\n"), 0o644); err != nil {
		return nil, nil, nil, err
	}
	stub := filepath.Join(root, "poweroff-stub")
	script := fmt.Sprintf("#!/bin/sh\n# The local cloud: powering off a VM ends its init, and so the VM.\n"+
		"echo \"$(date +%%s.%%N) $0 $*\" >>%s\nkill -TERM 1\n", filepath.Join(root, PoweroffLog))
	if err := os.WriteFile(stub, []byte(script), 0o755); err != nil {
		return nil, nil, nil, err
	}
	targets, err := stubTargets()
	if err != nil {
		return nil, nil, nil, err
	}
	args = append(slices.Clone(args), "--condor-bin", filepath.Join(w.ReleaseDir, "bin"), "--condor-sbin", filepath.Join(w.ReleaseDir, "sbin"))
	argv = append([]string{"/bin/sh", "-c", vmInit, "canopy-vm-init", host, hosts, stub, vmagent}, args...)
	env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root",
		"CONDOR_CONFIG=" + filepath.Join(local, "condor_config"),
		"CANOPY_VM_HIDE=" + strings.Join(w.Hide, "\n"), "CANOPY_VM_STUB=" + strings.Join(targets, "\n")}
	attr = &syscall.SysProcAttr{
		// A session of its own, as every local VM; new UTS and PID
		// namespaces, and a mount namespace made private (Go remounts /
		// MS_REC|MS_PRIVATE for Unshareflags CLONE_NEWNS), so that the
		// VM's mounts stay inside it.
		Setsid:       true,
		Cloneflags:   syscall.CLONE_NEWUTS | syscall.CLONE_NEWPID,
		Unshareflags: syscall.CLONE_NEWNS,
	}
	return argv, env, attr, nil
}

// traversable checks that every directory from dir up to / lets others
// through (the x bit for others), as the condor user needs.
func traversable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s (mode %o) is not traversable by other users", d, fi.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}
