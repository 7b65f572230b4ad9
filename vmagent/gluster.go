package vmagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// GlusterMount is a GlusterFS volume the VM mounts read-only.
type GlusterMount struct {
	// Servers are the volume's volfile servers: the first is asked first,
	// the others are backups (backup-volfile-servers).
	Servers []string `yaml:"servers"`
	// Volume is the volume's name.
	Volume string `yaml:"volume"`
	// MountPoint is where the volume appears in the VM, e.g. /mnt/canopy.
	MountPoint string `yaml:"mount_point"`
}

// FstabPath is the file system table, under the vmagent's root.
const FstabPath = "/etc/fstab"

var (
	glusterHostRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$`)
	glusterVolumeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	mountPointRE    = regexp.MustCompile(`^(/[A-Za-z0-9._-]+)+$`)
)

// systemDirs are directories a volume must not be mounted on or under.
var systemDirs = []string{"/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var/lib/condor", "/cvmfs"}

const maxGlusterServers = 8

// Validate checks the mount's fields; they end up in /etc/fstab.
func (g GlusterMount) Validate() error {
	if len(g.Servers) == 0 || len(g.Servers) > maxGlusterServers {
		return fmt.Errorf("want 1 to %d servers, got %d", maxGlusterServers, len(g.Servers))
	}
	for _, s := range g.Servers {
		// Host names and IPv4 only: backup-volfile-servers separates with
		// colons, so an IPv6 literal cannot be written there.
		if !glusterHostRE.MatchString(s) {
			return fmt.Errorf("server %.100q is not a host name or IPv4 address", s)
		}
	}
	if !glusterVolumeRE.MatchString(g.Volume) {
		return fmt.Errorf("volume %.100q is not a volume name (letters, digits, _ -)", g.Volume)
	}
	if !mountPointRE.MatchString(g.MountPoint) || filepath.Clean(g.MountPoint) != g.MountPoint {
		return fmt.Errorf("mount point %.100q is not a clean absolute path of letters, digits and . _ -", g.MountPoint)
	}
	for _, d := range systemDirs {
		if g.MountPoint == d || strings.HasPrefix(g.MountPoint, d+"/") {
			return fmt.Errorf("mount point %s is a system directory", g.MountPoint)
		}
	}
	return nil
}

// FstabLine is the volume's /etc/fstab entry: read-only, mounted once the
// network is up, with the other servers as backup volfile servers.
func (g GlusterMount) FstabLine() string {
	opts := "ro,_netdev"
	if len(g.Servers) > 1 {
		opts += ",backup-volfile-servers=" + strings.Join(g.Servers[1:], ":")
	}
	return fmt.Sprintf("%s:/%s %s glusterfs %s 0 0", g.Servers[0], g.Volume, g.MountPoint, opts)
}

// mergeFstab returns fstab with line as the only entry for mountPoint:
// an existing entry for it is replaced in place, else line is appended.
func mergeFstab(fstab []byte, mountPoint, line string) []byte {
	return replaceLine(fstab, func(l string) bool {
		f := strings.Fields(l)
		return len(f) >= 2 && !strings.HasPrefix(f[0], "#") && f[1] == mountPoint
	}, line)
}

// MountGluster makes the volume's fstab entry (idempotently) and mounts it
// through r unless it is mounted already. It reports whether fstab changed.
// A volume that is mounted is left alone even if its entry changed:
// remounting under running jobs would break them; the next boot uses the
// new entry.
func MountGluster(ctx context.Context, root string, g GlusterMount, r CommandRunner) (bool, error) {
	if err := g.Validate(); err != nil {
		return false, fmt.Errorf("gluster mount: %w", err)
	}
	old, err := readManaged(root, FstabPath)
	if err != nil {
		return false, fmt.Errorf("gluster mount: %w", err)
	}
	changed, err := writeFile(root, FstabPath, mergeFstab(old, g.MountPoint, g.FstabLine()), 0o644)
	if err != nil {
		return false, fmt.Errorf("gluster mount: %w", err)
	}
	mounted, err := isMounted(root, g.MountPoint)
	if err != nil {
		return changed, fmt.Errorf("gluster mount: %w", err)
	}
	if mounted {
		return changed, nil
	}
	if err := os.MkdirAll(filepath.Join(root, g.MountPoint), 0o755); err != nil {
		return changed, fmt.Errorf("gluster mount: %w", err)
	}
	if _, err := run(ctx, r, "mount", g.MountPoint); err != nil {
		return changed, fmt.Errorf("gluster mount %s:/%s: %w", g.Servers[0], g.Volume, err)
	}
	return changed, nil
}

// isMounted reports whether something is mounted on mountPoint, by
// root/proc/self/mounts; no such file (a test root) means nothing is.
func isMounted(root, mountPoint string) (bool, error) {
	b, err := readLimited(filepath.Join(root, "proc", "self", "mounts"), maxManagedFile)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == mountPoint {
			return true, nil
		}
	}
	return false, nil
}
