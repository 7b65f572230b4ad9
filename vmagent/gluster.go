package vmagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// FstabPath is the file system table, under the vmagent's root.
const FstabPath = "/etc/fstab"

// FstabLine is the volume's /etc/fstab entry: read-only, mounted once the
// network is up, with the other servers as backup volfile servers.
func FstabLine(g vmproto.GlusterMount) string {
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
func MountGluster(ctx context.Context, root string, g vmproto.GlusterMount, r CommandRunner) (bool, error) {
	if err := g.Validate(); err != nil {
		return false, fmt.Errorf("gluster mount: %w", err)
	}
	old, err := readManaged(root, FstabPath)
	if err != nil {
		return false, fmt.Errorf("gluster mount: %w", err)
	}
	changed, err := writeFile(root, FstabPath, mergeFstab(old, g.MountPoint, FstabLine(g)), 0o644)
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
