package vmagent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/sirupsen/logrus"
)

// classadString quotes s as a ClassAd string literal.
func classadString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9.:\[\]_-]+$`)

// CondorConfig renders the startd configuration for this VM: where the
// collector is, the attributes that tie the VM to its site, group and VM
// type, a START expression that admits only jobs of that group, one
// partitionable slot, and shutdown of the whole VM's condor when the master
// exits.
func CondorConfig(md Metadata, s Settings) (string, error) {
	if !hostRE.MatchString(s.CondorHost) {
		return "", fmt.Errorf("condor_host %q is not a host[:port]", s.CondorHost)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by Canopy's vmagent. Do not edit: rewritten at every boot.\n")
	fmt.Fprintf(&b, "CONDOR_HOST = %s\n", s.CondorHost)
	fmt.Fprintf(&b, "DAEMON_LIST = MASTER, STARTD\n")
	fmt.Fprintf(&b, "CanopyVMID = %s\n", classadString(md.UUID))
	fmt.Fprintf(&b, "CanopyVMName = %s\n", classadString(md.Name))
	fmt.Fprintf(&b, "CanopySite = %s\n", classadString(s.Site))
	fmt.Fprintf(&b, "CanopyGroup = %s\n", classadString(s.Group))
	fmt.Fprintf(&b, "VMType = %s\n", classadString(s.VMType))
	fmt.Fprintf(&b, "STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType\n")
	fmt.Fprintf(&b, "START = (TARGET.CanopyGroup =?= MY.CanopyGroup) || (TARGET.AccountingGroup =?= MY.CanopyGroup)\n")
	fmt.Fprintf(&b, "NUM_SLOTS = 1\nNUM_SLOTS_TYPE_1 = 1\nSLOT_TYPE_1 = 100%%\nSLOT_TYPE_1_PARTITIONABLE = True\n")
	fmt.Fprintf(&b, "MASTER_NAME = %s\n", md.Name)
	fmt.Fprintf(&b, "# Let the VM's own root run condor_off/condor_drain locally.\n")
	fmt.Fprintf(&b, "SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS\n")
	fmt.Fprintf(&b, "ALLOW_ADMINISTRATOR = $(ALLOW_ADMINISTRATOR) root@$(FULL_HOSTNAME) condor@$(FULL_HOSTNAME)\n")
	return b.String(), nil
}

// WriteCondorConfig writes the startd config under root if it differs from
// what is there, atomically (temp file and rename). It reports whether the
// file changed.
func WriteCondorConfig(root string, md Metadata, s Settings) (bool, error) {
	text, err := CondorConfig(md, s)
	if err != nil {
		return false, err
	}
	path := filepath.Join(root, CondorConfigPath)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, []byte(text)) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("write condor config: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return false, fmt.Errorf("write condor config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("write condor config: %w", err)
	}
	return true, nil
}

// ExecRunner runs commands for real.
type ExecRunner struct{}

// Run implements CommandRunner.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// LogRunner only logs the commands it is given. The local cloud uses it:
// its "VMs" are processes on a machine without HTCondor.
type LogRunner struct{ Log *logrus.Entry }

// Run implements CommandRunner.
func (l LogRunner) Run(_ context.Context, name string, args ...string) error {
	l.Log.WithField("command", strings.TrimSpace(name+" "+strings.Join(args, " "))).Info("command not run (no HTCondor in a local VM)")
	return nil
}
