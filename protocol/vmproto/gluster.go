package vmproto

import (
	"fmt"
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
