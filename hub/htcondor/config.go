package htcondor

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/hub/classad"
)

// Config configures the HTCondor demand source (the hub config's
// `demand.htcondor` section). Zero values take the defaults that
// WithDefaults documents.
type Config struct {
	// Schedds names the schedds whose queues are read (condor_q -name).
	// Empty means the one schedd condor_q finds by default (the local one).
	// Each is read on its own: see Source.Poll.
	Schedds []string `yaml:"schedds"`
	// DemandMaxAge is how long a schedd that cannot be read keeps
	// contributing its last good demand; after that its jobs count as
	// gone. Either way the poll says the schedd is not fresh
	// (demand.Demand.Schedds). Default 5m.
	DemandMaxAge time.Duration `yaml:"demand_max_age"`
	// DemandQuery is how queues are read: "autocluster" (the default)
	// has each schedd group its jobs by status and by the attributes
	// shapes depend on and send one row per group with its job count
	// (condor_q -group-by); "jobs" reads every job one by one (condor_q
	// -json -attributes). A schedd that cannot group is read one by one,
	// and the status says so.
	DemandQuery string `yaml:"demand_query"`
	// Pool is the central manager, "host[:port]", passed as -pool to every
	// tool. Empty means the tools' own COLLECTOR_HOST.
	Pool string `yaml:"pool"`
	// BinDir is where the user tools live (condor_q, condor_status);
	// SbinDir where the administration tools do (condor_advertise, which
	// installations put in sbin). When only one is set the other is its
	// sibling (/usr/bin and /usr/sbin); a tool missing from its directory
	// is looked for in the other, then in PATH. Both empty: PATH, then
	// the standard sbin directories for condor_advertise.
	BinDir  string `yaml:"bin_dir"`
	SbinDir string `yaml:"sbin_dir"`
	// CommandTimeout bounds one run of one tool. Default 60s.
	CommandTimeout time.Duration `yaml:"command_timeout"`
	// GroupAttributes are the job attributes tried, in order, for a job's
	// owner group; the first that is a non-empty string wins
	// (AccountingGroup loses its ".user" suffix). Default CanopyGroup,
	// AcctGroup, AccountingGroup, Owner.
	GroupAttributes []string `yaml:"group_attributes"`
	// VMTypes are the VM types Canopy can boot, with the machine-ad
	// attributes their startds advertise. A job that names no VM type is
	// given the first type (DefaultVMType first) whose machine ad it
	// matches. At least one is required.
	VMTypes []VMTypeConfig `yaml:"vm_types"`
	// DefaultVMType is preferred when a job that names no VM type matches
	// several. Default: the first of VMTypes.
	DefaultVMType string `yaml:"default_vm_type"`
	// MachineAd holds machine-ad attributes common to every VM type, as
	// ClassAd expression text (`FileSystemDomain: '"example.org"'`); a VM
	// type's own Attributes override them, and both override the built-in
	// defaults (Arch "X86_64", OpSys "LINUX", HasFileTransfer true, START as
	// vmagent writes it, Requirements START && WithinResourceLimits).
	MachineAd map[string]string `yaml:"machine_ad"`
	// Attributes names the slot-ad attributes vmagent advertises
	// (STARTD_ATTRS). Defaults: CanopyVMName, CanopyVMID, CanopySite,
	// CanopyGroup, VMType.
	Attributes AttributeNames `yaml:"attributes"`
	// ExtraJobAttributes are more job attributes to read: those that
	// users' Requirements refer to with MY. (anything not read is
	// undefined when Requirements is evaluated). List RequestHS06PerCore
	// here to honour jobs' minimum HS06 rating per core, and Preemptible
	// for jobs to accept preemptible capacity (+Preemptible = True).
	ExtraJobAttributes []string `yaml:"extra_job_attributes"`
	// ExtraMachineAttributes are more slot-ad attributes to read, for
	// Requirements that refer to machine attributes not named in
	// MachineAd or a VM type.
	ExtraMachineAttributes []string `yaml:"extra_machine_attributes"`
	// MaxSignatures bounds the distinct job signatures (jobs that differ in
	// an attribute the shape depends on) remembered while one queue is read;
	// past it, jobs are evaluated one by one. Default 100000.
	MaxSignatures int `yaml:"max_signatures"`
	// MaxAdBytes bounds one ad in the tools' output. Default 4 MiB.
	MaxAdBytes int `yaml:"max_ad_bytes"`
}

// Runner is the ExecRunner that runs the tools where the configuration
// says they are (BinDir, SbinDir).
func (c Config) Runner() ExecRunner {
	return ExecRunner{BinDir: c.BinDir, SbinDir: c.SbinDir}
}

// VMTypeConfig is one VM type and the machine ad its startds advertise.
type VMTypeConfig struct {
	// Name is the VM type's name, as jobs write it (+VMType = "name") and
	// vmagent advertises it.
	Name string `yaml:"name"`
	// Attributes are machine-ad attributes of this type, as ClassAd
	// expression text (`OpSysAndVer: '"AlmaLinux9"'`, `HasDocker: 'true'`).
	Attributes map[string]string `yaml:"attributes"`
}

// AttributeNames are the names of the attributes vmagent advertises in the
// slot ads of the VMs it configures (keep them in step with
// vmagent/condor.go).
type AttributeNames struct {
	VMName string `yaml:"vm_name"`
	VMID   string `yaml:"vm_id"`
	Site   string `yaml:"site"`
	Group  string `yaml:"group"`
	VMType string `yaml:"vm_type"`
}

// DefaultStart is the START expression vmagent writes into every VM's
// startd config (vmagent/condor.go): only jobs of the VM's group.
const DefaultStart = `(TARGET.CanopyGroup =?= MY.CanopyGroup) || (TARGET.AcctGroup =?= MY.CanopyGroup)`

// Demand queries (Config.DemandQuery).
const (
	QueryAutocluster = "autocluster"
	QueryJobs        = "jobs"
)

// Defaults.
const (
	DefaultDemandMaxAge   = 5 * time.Minute
	DefaultCommandTimeout = 60 * time.Second
	DefaultMaxSignatures  = 100000
	DefaultMaxAdBytes     = 4 << 20
)

// WithDefaults fills unset fields with the documented defaults.
func (c Config) WithDefaults() Config {
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.DemandMaxAge == 0 {
		c.DemandMaxAge = DefaultDemandMaxAge
	}
	if c.DemandQuery == "" {
		c.DemandQuery = QueryAutocluster
	}
	if len(c.GroupAttributes) == 0 {
		c.GroupAttributes = []string{"CanopyGroup", "AcctGroup", "AccountingGroup", "Owner"}
	}
	if c.DefaultVMType == "" && len(c.VMTypes) > 0 {
		c.DefaultVMType = c.VMTypes[0].Name
	}
	a := &c.Attributes
	for _, f := range []struct {
		p *string
		v string
	}{{&a.VMName, "CanopyVMName"}, {&a.VMID, "CanopyVMID"}, {&a.Site, "CanopySite"}, {&a.Group, "CanopyGroup"}, {&a.VMType, "VMType"}} {
		if *f.p == "" {
			*f.p = f.v
		}
	}
	if c.MaxSignatures == 0 {
		c.MaxSignatures = DefaultMaxSignatures
	}
	if c.MaxAdBytes == 0 {
		c.MaxAdBytes = DefaultMaxAdBytes
	}
	return c
}

var (
	// attrNameRE is a ClassAd attribute name that needs no quoting.
	attrNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	// daemonNameRE is a schedd name or a pool address.
	daemonNameRE = regexp.MustCompile(`^[A-Za-z0-9_.@:\[\]-]{1,255}$`)
	// vmTypeNameRE is a VM type name.
	vmTypeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// Validate checks the configuration (after WithDefaults); every problem is
// reported.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	seen := map[string]bool{}
	for _, s := range c.Schedds {
		switch {
		case !daemonNameRE.MatchString(s):
			bad("schedds: %q is not a schedd name", s)
		case seen[s]:
			bad("schedds: %q is listed twice", s)
		}
		seen[s] = true
	}
	if c.Pool != "" && !daemonNameRE.MatchString(c.Pool) {
		bad("pool: %q is not host[:port]", c.Pool)
	}
	if c.BinDir != "" && !strings.HasPrefix(c.BinDir, "/") {
		bad("bin_dir: %q must be an absolute path", c.BinDir)
	}
	if c.SbinDir != "" && !strings.HasPrefix(c.SbinDir, "/") {
		bad("sbin_dir: %q must be an absolute path", c.SbinDir)
	}
	if c.CommandTimeout < time.Second {
		bad("command_timeout %s is below 1s", c.CommandTimeout)
	}
	if c.DemandMaxAge < 0 {
		bad("demand_max_age %s is negative", c.DemandMaxAge)
	}
	if c.DemandQuery != QueryAutocluster && c.DemandQuery != QueryJobs {
		bad("demand_query %q is neither %q nor %q", c.DemandQuery, QueryAutocluster, QueryJobs)
	}
	for _, a := range c.GroupAttributes {
		if !attrNameRE.MatchString(a) {
			bad("group_attributes: %q is not an attribute name", a)
		}
	}
	for _, a := range slices.Concat(c.ExtraJobAttributes, c.ExtraMachineAttributes) {
		if !attrNameRE.MatchString(a) {
			bad("extra attributes: %q is not an attribute name", a)
		}
	}
	for key, name := range map[string]string{"vm_name": c.Attributes.VMName, "vm_id": c.Attributes.VMID,
		"site": c.Attributes.Site, "group": c.Attributes.Group, "vm_type": c.Attributes.VMType} {
		if !attrNameRE.MatchString(name) {
			bad("attributes.%s: %q is not an attribute name", key, name)
		}
	}
	if len(c.VMTypes) == 0 {
		bad("vm_types: at least one VM type is required")
	}
	names := map[string]bool{}
	for i, t := range c.VMTypes {
		if !vmTypeNameRE.MatchString(t.Name) {
			bad("vm_types[%d]: name %q is not a VM type name", i, t.Name)
		}
		if names[t.Name] {
			bad("vm_types[%d]: %q is listed twice", i, t.Name)
		}
		names[t.Name] = true
		errs = append(errs, checkAttributes(fmt.Sprintf("vm_types[%d].attributes", i), t.Attributes)...)
	}
	errs = append(errs, checkAttributes("machine_ad", c.MachineAd)...)
	if c.DefaultVMType != "" && !names[c.DefaultVMType] {
		bad("default_vm_type %q is not one of vm_types", c.DefaultVMType)
	}
	if c.MaxSignatures < 1 {
		bad("max_signatures %d is below 1", c.MaxSignatures)
	}
	if c.MaxAdBytes < 64<<10 {
		bad("max_ad_bytes %d is below 64 KiB", c.MaxAdBytes)
	}
	return errors.Join(errs...)
}

// checkAttributes checks that every key is an attribute name and every value
// parses as a ClassAd expression.
func checkAttributes(where string, attrs map[string]string) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		if !attrNameRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("%s: %q is not an attribute name", where, k))
			continue
		}
		if _, err := classad.Parse(attrs[k]); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", where, k, err))
		}
	}
	return errs
}
