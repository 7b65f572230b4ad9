// Package condortools finds HTCondor's programs for the hub and vmagent.
// Installations split them over two directories: bin/ holds the user
// tools (condor_q, condor_status, condor_drain, condor_config_val, ...),
// sbin/ the daemons and a few administration tools that packages put in
// /usr/sbin: condor_advertise, condor_off, condor_on, condor_reconfig and
// condor_restart. Code that runs them must not assume one directory.
package condortools

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// sbinTools are the tools (besides the daemons) that installations put in
// sbin: HTCondor's own relocatable builds, and the Debian and RPM packages.
var sbinTools = map[string]bool{
	"condor_advertise": true,
	"condor_off":       true,
	"condor_on":        true,
	"condor_reconfig":  true,
	"condor_restart":   true,
}

// InSbin reports whether name is a program installations put in sbin: one
// of the administration tools above, or a daemon (condor_master,
// condor_startd, ...).
func InSbin(name string) bool {
	switch name {
	case "condor_master", "condor_collector", "condor_negotiator", "condor_schedd", "condor_startd",
		"condor_starter", "condor_shadow", "condor_procd":
		return true
	}
	return sbinTools[name]
}

// standardSbin are searched for sbin programs when no directory is
// configured and PATH does not have them (the PATH of a service account,
// unlike root's, often lacks the sbin directories).
var standardSbin = []string{"/usr/sbin", "/usr/local/sbin", "/sbin"}

// Dirs says where an installation's programs are. The zero value means
// PATH.
type Dirs struct {
	// Bin holds the user tools; Sbin the daemons and administration tools.
	// When only one is set, the other is taken to be its sibling ("bin"
	// next to "sbin": /usr/bin and /usr/sbin, or a relocatable build's
	// DIR/bin and DIR/sbin).
	Bin, Sbin string
}

// Resolved returns d with a missing directory derived from the other one.
func (d Dirs) Resolved() Dirs {
	switch {
	case d.Bin != "" && d.Sbin == "":
		d.Sbin = filepath.Join(filepath.Dir(filepath.Clean(d.Bin)), "sbin")
	case d.Sbin != "" && d.Bin == "":
		d.Bin = filepath.Join(filepath.Dir(filepath.Clean(d.Sbin)), "bin")
	}
	return d
}

// Path returns the program to run for the HTCondor tool name. A name with
// a slash is returned as it is. Otherwise, with directories configured,
// the tool's own directory is tried first (sbin for InSbin tools, bin for
// the others), then the other one; then, as without directories, PATH,
// and for sbin tools the standard sbin directories. When the tool is
// nowhere, the path in its own directory (or the bare name, without
// directories) is returned, so that running it fails with an error naming
// where it was expected.
func (d Dirs) Path(name string) string {
	if name == "" || strings.ContainsRune(name, '/') {
		return name
	}
	d = d.Resolved()
	first, second := d.Bin, d.Sbin
	if InSbin(name) {
		first, second = d.Sbin, d.Bin
	}
	for _, dir := range []string{first, second} {
		if dir == "" {
			continue
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if InSbin(name) {
		for _, dir := range standardSbin {
			if p := filepath.Join(dir, name); isExecutable(p) {
				return p
			}
		}
	}
	if first != "" {
		return filepath.Join(first, name)
	}
	return name
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
