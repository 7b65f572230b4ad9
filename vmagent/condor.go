package vmagent

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// HTCondor paths, under the vmagent's root.
const (
	// CondorConfigPath is where the startd configuration is written.
	CondorConfigPath = "/etc/condor/config.d/50-canopy.conf"
	// CondorTokenDir is the startd's IDTOKEN directory (SEC_TOKEN_DIRECTORY).
	CondorTokenDir = "/etc/condor/tokens.d"
	// CondorTokenPath holds the IDTOKEN from the VM's settings.
	CondorTokenPath = CondorTokenDir + "/canopy"
	// CondorPasswordDir is SEC_PASSWORD_DIRECTORY.
	CondorPasswordDir = "/etc/condor/passwords.d"
	// PoolSigningKeyPath holds the pool signing key from the settings.
	PoolSigningKeyPath = CondorPasswordDir + "/POOL"
	// PoweroffProgram is what the condor_master runs instead of exiting.
	PoweroffProgram = "/sbin/poweroff"
)

// classadString quotes s as a ClassAd string literal.
func classadString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9.:\[\]_-]+$`)

// CondorConfig renders the startd configuration for this VM: where the
// collector is and how to authenticate to it, the attributes that tie the
// VM to its site, group and VM type (advertised in its slot ads), a START
// expression that admits only jobs of that group, one partitionable slot
// holding the whole VM, local administration by the VM's own root (for
// retirement), and power-off when the condor_master exits: it then runs
// PoweroffProgram instead of exiting. vmagent stops the master as soon as
// a retirement has drained the VM (Retirer.Shutdown); the master also
// exits by itself once its startd is gone, but only notices that when it
// next updates its ad (MASTER_UPDATE_INTERVAL, 5 minutes by default), so
// that is only the backstop for a vmagent that died. A shorter
// MASTER_UPDATE_INTERVAL was the other way to power off promptly; it was
// not taken because every VM's master would update the collector that
// much more often all the time, to save minutes once per VM.
func CondorConfig(md Metadata, s vmproto.Settings) (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	if !uuidRE.MatchString(md.UUID) || !serverNameRE.MatchString(md.Name) {
		return "", fmt.Errorf("condor config: metadata uuid %.80q or name %.80q is malformed", md.UUID, md.Name)
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# Written by Canopy's vmagent for server %s. Do not edit: rewritten at every boot.", md.UUID)
	line("CONDOR_HOST = %s", s.CondorHost)
	line("DAEMON_LIST = MASTER, STARTD")
	line("")
	line("# What this VM is for, advertised in its slot ads.")
	line("CanopyVMID = %s", classadString(md.UUID))
	line("CanopyVMName = %s", classadString(md.Name))
	line("CanopySite = %s", classadString(s.Site))
	line("CanopyGroup = %s", classadString(s.Group))
	line("VMType = %s", classadString(s.VMType))
	line("STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType")
	line("")
	line("# Only jobs of the group this VM was booted for.")
	line("START = (TARGET.CanopyGroup =?= MY.CanopyGroup) || (TARGET.AcctGroup =?= MY.CanopyGroup)")
	line("")
	line("# One partitionable slot holding the whole VM.")
	line("NUM_SLOTS = 1")
	line("NUM_SLOTS_TYPE_1 = 1")
	line("SLOT_TYPE_1 = 100%%")
	line("SLOT_TYPE_1_PARTITIONABLE = True")
	line("")
	line("# Authentication. FS lets the VM's own root run condor_off and condor_drain.")
	methods := "FS"
	if s.CondorIDToken != "" || s.PoolSigningKey != "" {
		methods += ", IDTOKENS"
		line("SEC_TOKEN_DIRECTORY = %s", CondorTokenDir)
	}
	if s.PoolSigningKey != "" {
		methods += ", PASSWORD"
		line("SEC_PASSWORD_DIRECTORY = %s", CondorPasswordDir)
		line("SEC_TOKEN_POOL_SIGNING_KEY_FILE = %s", PoolSigningKeyPath)
	}
	line("SEC_DEFAULT_AUTHENTICATION_METHODS = %s", methods)
	line("ALLOW_ADMINISTRATOR = $(ALLOW_ADMINISTRATOR) root@$(FULL_HOSTNAME) condor@$(FULL_HOSTNAME)")
	line("")
	line("# Power the VM off when the master exits. vmagent stops the master as soon as the")
	line("# retirement has drained the VM; as a backstop the master exits by itself once its")
	line("# startd is gone, which it evaluates at its next ad update (MASTER_UPDATE_INTERVAL,")
	line("# 5 minutes by default) and never in the first minute after it started.")
	line("MASTER.DAEMON_SHUTDOWN = (STARTD_StartTime =?= 0) && ((CurrentTime - DaemonStartTime) > 60)")
	line("DEFAULT_MASTER_SHUTDOWN_SCRIPT = %s", PoweroffProgram)
	return b.String(), nil
}

// condorFile is one file of the VM's HTCondor configuration.
type condorFile struct {
	path    string
	content []byte
	mode    os.FileMode
}

// condorFiles returns the files that configure HTCondor for this VM: the
// config, and the secrets the settings carry.
func condorFiles(md Metadata, s vmproto.Settings) ([]condorFile, error) {
	conf, err := CondorConfig(md, s)
	if err != nil {
		return nil, err
	}
	files := []condorFile{{path: CondorConfigPath, content: []byte(conf), mode: 0o644}}
	if s.CondorIDToken != "" {
		files = append(files, condorFile{path: CondorTokenPath, content: []byte(s.CondorIDToken + "\n"), mode: 0o600})
	}
	if s.PoolSigningKey != "" {
		key, err := base64.StdEncoding.DecodeString(s.PoolSigningKey)
		if err != nil {
			return nil, fmt.Errorf("pool signing key: %w", err)
		}
		files = append(files, condorFile{path: PoolSigningKeyPath, content: key, mode: 0o600})
	}
	return files, nil
}

// WriteCondorConfig writes the startd config and the secrets the settings
// carry under root, each only if it differs from what is there and
// atomically. It reports whether any file changed.
func WriteCondorConfig(root string, md Metadata, s vmproto.Settings) (bool, error) {
	files, err := condorFiles(md, s)
	if err != nil {
		return false, err
	}
	// Secret directories are the owner's only.
	for _, d := range []string{CondorTokenDir, CondorPasswordDir} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return false, fmt.Errorf("condor config: %w", err)
		}
	}
	changed := false
	for _, f := range files {
		c, err := writeFile(root, f.path, f.content, f.mode)
		if err != nil {
			return changed, fmt.Errorf("condor config: %w", err)
		}
		changed = changed || c
	}
	return changed, nil
}
