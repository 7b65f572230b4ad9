package vmagent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// HTCondor paths, under the vmagent's root.
const (
	// CondorConfigPath is where the startd configuration is written.
	CondorConfigPath = "/etc/condor/config.d/50-canopy.conf"
	// CondorTokenDir is the startd's IDTOKEN directory (SEC_TOKEN_DIRECTORY),
	// mode 0700.
	CondorTokenDir = "/etc/condor/tokens.d"
	// CondorTokenPath holds the VM's IDTOKEN, from its enrollment and
	// renewed through check-ins (mode 0600, replaced atomically: the
	// daemons read whichever file is whole, never a half-written one, and
	// never an old token next to a new one).
	CondorTokenPath = CondorTokenDir + "/canopy"
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
// collector is and how to authenticate to it (the VM's own IDTOKEN, for
// the pool's TRUST_DOMAIN; FS for the VM's root), UID_DOMAIN and
// CCB_ADDRESS when the site sets them, the attributes that tie the
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
	if s.CondorTrustDomain != "" {
		line("TRUST_DOMAIN = %s", s.CondorTrustDomain)
	}
	if s.CondorUIDDomain != "" {
		line("# Jobs run as their owners: the VM has the submitters' accounts.")
		line("UID_DOMAIN = %s", s.CondorUIDDomain)
	}
	if s.CondorCCBAddress != "" {
		line("# Behind NAT: the central manager reaches this startd through the CCB.")
		line("CCB_ADDRESS = %s", s.CondorCCBAddress)
	}
	line("")
	line("# What this VM is for, advertised in its slot ads.")
	line("CanopyVMID = %s", classadString(md.UUID))
	line("CanopyVMName = %s", classadString(md.Name))
	line("CanopySite = %s", classadString(s.Site))
	line("CanopyGroup = %s", classadString(s.Group))
	line("VMType = %s", classadString(s.VMType))
	attrs := "CanopyVMID CanopyVMName CanopySite CanopyGroup VMType"
	if s.KeepAlive > 0 {
		line("CanopyKeepAlive = %d", int64(s.KeepAlive/time.Second))
		attrs += " CanopyKeepAlive"
	}
	if s.MaxLifetime > 0 {
		line("CanopyMaxLifetime = %d", int64(s.MaxLifetime/time.Second))
		attrs += " CanopyMaxLifetime"
	}
	line("STARTD_ATTRS = $(STARTD_ATTRS) %s", attrs)
	if s.HS06PerCore > 0 {
		line("# The flavor's HS06 rating per core, as the site rates it.")
		line("HS06PerCore = %s", strconv.FormatFloat(s.HS06PerCore, 'f', -1, 64))
		line("STARTD_ATTRS = $(STARTD_ATTRS) HS06PerCore")
	}
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
	line("# Authentication: the VM's own IDTOKEN (from its agent, renewed before it expires)")
	line("# towards the collector; FS lets the VM's own root run condor_off and condor_drain.")
	line("SEC_TOKEN_DIRECTORY = %s", CondorTokenDir)
	line("SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS")
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

// WriteCondorConfig writes the startd config under root, only if it
// differs from what is there and atomically, and makes the token
// directory (mode 0700). It reports whether the config changed.
func WriteCondorConfig(root string, md Metadata, s vmproto.Settings) (bool, error) {
	conf, err := CondorConfig(md, s)
	if err != nil {
		return false, err
	}
	if err := ensurePrivateDir(root, CondorTokenDir); err != nil {
		return false, fmt.Errorf("condor config: %w", err)
	}
	changed, err := writeFile(root, CondorConfigPath, []byte(conf), 0o644)
	if err != nil {
		return false, fmt.Errorf("condor config: %w", err)
	}
	return changed, nil
}

// WriteCondorToken replaces the VM's IDTOKEN file (CondorTokenPath) with
// tok, atomically, mode 0600 in a 0700 directory.
func WriteCondorToken(root, tok string) (bool, error) {
	if err := vmproto.ValidIDToken(tok); err != nil {
		return false, fmt.Errorf("HTCondor token: %w", err)
	}
	if err := ensurePrivateDir(root, CondorTokenDir); err != nil {
		return false, fmt.Errorf("HTCondor token: %w", err)
	}
	changed, err := writeFile(root, CondorTokenPath, []byte(tok+"\n"), 0o600)
	if err != nil {
		return false, fmt.Errorf("HTCondor token: %w", err)
	}
	return changed, nil
}

// ensurePrivateDir makes root+dir a directory only its owner can enter.
func ensurePrivateDir(root, dir string) error {
	full := filepath.Join(root, dir)
	if err := os.MkdirAll(full, 0o700); err != nil {
		return err
	}
	return os.Chmod(full, 0o700)
}
