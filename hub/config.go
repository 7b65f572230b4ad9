package hub

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"time"

	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/protocol/pki"
)

// Config is the hub's configuration file (see deploy/examples/hub.yaml).
type Config struct {
	// ID names this hub; it is written on every server Canopy boots.
	ID string `yaml:"id"`
	// Listen is the UDP address agents connect to over QUIC.
	Listen string `yaml:"listen"`
	// HTTP is the address of the status page, /metrics and the JSON API.
	// Loopback by default: put a TLS proxy in front to publish it.
	HTTP string `yaml:"http"`
	// AdminListen is the admin TLS listener's address (the page with its
	// controls and the API with admin actions, for admin client
	// certificates from the hub's CA: `hub tls issue-admin NAME`). Empty:
	// none.
	AdminListen string `yaml:"admin_listen"`
	// AdminSocket is the admin Unix socket (mode 0600) the `hub` commands
	// use on the hub's host. Default: hub.sock next to state_file.
	AdminSocket string `yaml:"admin_socket"`
	// AdminOnHTTP lets anyone who reaches the HTTP listener (loopback: every
	// user of the hub's host) administer the hub. For the demo only.
	AdminOnHTTP bool `yaml:"admin_on_http"`
	// TLSDir holds the CA and the hub's certificate (`hub tls init`).
	TLSDir string `yaml:"tls_dir"`
	// RevokedSerials are agent certificate serial numbers (hex) refused.
	RevokedSerials []string `yaml:"revoked_serials"`
	// StateFile is the embedded store.
	StateFile string `yaml:"state_file"`
	// PlanEvery is how often the hub polls demand and plans.
	PlanEvery time.Duration `yaml:"plan_every"`
	// HeartbeatEvery and InventoryEvery are asked of every agent.
	HeartbeatEvery time.Duration `yaml:"heartbeat_every"`
	InventoryEvery time.Duration `yaml:"inventory_every"`
	// DemandMaxAge is how long the last good demand is used while the job
	// source fails; after it, the hub stops booting.
	DemandMaxAge time.Duration `yaml:"demand_max_age"`
	// BootListTimeout is how long a booted server may stay unlisted by its
	// cloud before the hub forgets it.
	BootListTimeout time.Duration `yaml:"boot_list_timeout"`
	// StartupGrace is how long a starting hub waits for every configured
	// cloud (sites) to report before it plans without them. It plans as
	// soon as all have reported.
	StartupGrace time.Duration `yaml:"startup_grace"`
	// EventsMaxAge is how long lifecycle events are kept (at most 10,000
	// are kept in any case).
	EventsMaxAge time.Duration `yaml:"events_max_age"`
	// Planner holds the provisioning policy's knobs (hub/planner).
	Planner planner.Config `yaml:"planner"`
	// Groups are per-group settings (share, caps, clouds), by group name.
	Groups map[string]GroupConfig `yaml:"groups"`
	// Sites are per-cloud admin settings, by site name. Sites not listed
	// get defaults.
	Sites map[string]SiteConfig `yaml:"sites"`
	// Squid configures squid verification and ranking (hub/squid).
	Squid squid.Config `yaml:"squid"`
	// GeoIPCityDB is a GeoIP2/GeoLite2 City database for squid distances;
	// without it, squids are ranked by load and site only.
	GeoIPCityDB string `yaml:"geoip_city_db"`
	// Demand selects the job source; main wires it.
	Demand DemandConfig `yaml:"demand"`
	// Images configures image distribution: the desired matrix's rows the
	// config holds, transfer limits, backoff and per-site quotas.
	Images ImagesConfig `yaml:"images"`
}

// DemandConfig selects and configures the job source.
type DemandConfig struct {
	// Source is "trace" (a simulated pool) or "htcondor".
	Source string `yaml:"source"`
	// Trace configures the simulated pool.
	Trace TraceConfig `yaml:"trace"`
	// HTCondor configures the real source (schedds, collector, VM types).
	HTCondor htcondor.Config `yaml:"htcondor"`
}

// TraceConfig configures the simulated pool.
type TraceConfig struct {
	File      string  `yaml:"file"`
	TimeScale float64 `yaml:"time_scale"`
}

// GroupConfig is an admin's settings for one job group.
type GroupConfig struct {
	// Share weighs the group's turns under fair-share fairness.
	Share int          `yaml:"share"`
	Caps  planner.Caps `yaml:"caps"`
	// CloudCaps cap the group's VMs per site.
	CloudCaps map[string]planner.Caps `yaml:"cloud_caps"`
	// Clouds restricts the group to these sites.
	Clouds    []string      `yaml:"clouds"`
	KeepAlive time.Duration `yaml:"keep_alive"`
	Paused    bool          `yaml:"paused"`
	// Parent makes the group a subgroup of another configured group: the
	// parent's caps then bound the sum of its own and its subgroups' VMs
	// (a quota tree; see hub/planner).
	Parent string `yaml:"parent"`
	// Borrow lets a subgroup use what its siblings' caps leave unused, up
	// to its parent's; default true, false keeps it within its own caps.
	Borrow *bool `yaml:"borrow"`
	// Preemptible makes all the group's jobs accept preemptible capacity.
	Preemptible bool `yaml:"preemptible"`
}

// PlannerGroup is the group's settings as the planner takes them.
func (g GroupConfig) PlannerGroup(name string) planner.Group {
	return planner.Group{Name: name, Share: g.Share, Caps: g.Caps, CloudCaps: g.CloudCaps,
		Clouds: g.Clouds, KeepAlive: g.KeepAlive, Paused: g.Paused, Parent: g.Parent,
		NoBorrow: g.Borrow != nil && !*g.Borrow, Preemptible: g.Preemptible}
}

// SiteConfig is an admin's settings for one cloud.
type SiteConfig struct {
	Priority int `yaml:"priority"`
	// Paused sites get no new boots; their VMs stay.
	Paused bool `yaml:"paused"`
	// Disabled sites are drained: no boots, idle VMs retired.
	Disabled bool `yaml:"disabled"`
	// Caps are hard caps on Canopy's use of the site.
	Caps planner.Caps `yaml:"caps"`
	// SoftQuota is what Canopy may use of the project, minus what servers
	// Canopy did not boot use.
	SoftQuota planner.Caps `yaml:"soft_quota"`
	// Endpoint names the cloud API endpoint; sites sharing one share its
	// in-flight boot cap (max_in_flight).
	Endpoint    string        `yaml:"endpoint"`
	MaxInFlight int           `yaml:"max_in_flight"`
	KeepAlive   time.Duration `yaml:"keep_alive"`
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// Image is the image VMs boot on this site when a job names none.
	Image string `yaml:"image"`
	// HS06PerCore rates the site's flavors, by flavor name, in HS06 per
	// core; flavors not listed get HS06Default, and without it 1 (a core
	// is one unit). Group caps and shares may then be set in HS06. The
	// accounting ledger counts HS06-hours only for rated flavors (listed
	// here, or all of them once HS06Default is set).
	HS06PerCore map[string]float64 `yaml:"hs06_per_core"`
	HS06Default float64            `yaml:"hs06_default"`
	// Preemptible marks the whole site, PreemptibleFlavors some of its
	// flavors, as capacity the cloud may take back: only jobs that accept
	// it (+Preemptible = True, or their group's preemptible) go there.
	Preemptible        bool     `yaml:"preemptible"`
	PreemptibleFlavors []string `yaml:"preemptible_flavors"`
}

// WithDefaults fills unset fields with the documented defaults.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.ID == "" {
		c.ID = "canopy"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7443"
	}
	if c.HTTP == "" {
		c.HTTP = "127.0.0.1:8080"
	}
	if c.AdminSocket == "" && c.StateFile != "" {
		c.AdminSocket = filepath.Join(filepath.Dir(c.StateFile), "hub.sock")
	}
	def(&c.PlanEvery, 10*time.Second)
	def(&c.HeartbeatEvery, 5*time.Second)
	def(&c.InventoryEvery, 30*time.Second)
	def(&c.DemandMaxAge, 5*time.Minute)
	def(&c.BootListTimeout, 30*time.Minute)
	def(&c.StartupGrace, 2*c.InventoryEvery)
	def(&c.EventsMaxAge, 30*24*time.Hour)
	pd := planner.DefaultConfig()
	def(&c.Planner.KeepAlive, pd.KeepAlive)
	def(&c.Planner.ErrorDelay, pd.ErrorDelay)
	def(&c.Planner.RetireDeadline, pd.RetireDeadline)
	if c.Planner.MaxBootsPerCloud == 0 {
		c.Planner.MaxBootsPerCloud = pd.MaxBootsPerCloud
	}
	if c.Demand.Source == "" {
		c.Demand.Source = "trace"
	}
	if c.Demand.Source == "htcondor" {
		c.Demand.HTCondor = c.Demand.HTCondor.WithDefaults()
	}
	return c
}

// inventoryMaxAge is how old an agent's inventory may be and still count
// as evidence.
func (c Config) inventoryMaxAge() time.Duration { return 3 * c.InventoryEvery }

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.TLSDir == "" {
		errs = append(errs, errors.New("tls_dir is required"))
	}
	if c.StateFile == "" {
		errs = append(errs, errors.New("state_file is required"))
	}
	for _, name := range sortedKeys(c.Sites) {
		if err := pki.ValidSite(name); err != nil {
			errs = append(errs, fmt.Errorf("sites: %w", err))
		}
	}
	switch c.Demand.Source {
	case "trace":
		if c.Demand.Trace.File == "" {
			errs = append(errs, errors.New("demand.trace.file is required for the trace source"))
		}
	case "htcondor":
		if err := c.Demand.HTCondor.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("demand.htcondor: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("demand.source %q: want trace or htcondor", c.Demand.Source))
	}
	if err := checkListen(c.HTTP); err != nil {
		errs = append(errs, err)
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			errs = append(errs, fmt.Errorf("admin_listen %q: %w", c.AdminListen, err))
		}
	}
	if c.AdminOnHTTP && c.AdminListen != "" {
		errs = append(errs, errors.New("admin_on_http and admin_listen together: the admin listener's certificates would protect nothing "+
			"while the http listener administers the hub to every local user; drop admin_on_http"))
	}
	if c.PlanEvery < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("plan_every %s is below 100ms", c.PlanEvery))
	}
	errs = append(errs, c.validateDurations()...)
	errs = append(errs, c.validateGroupTree()...)
	errs = append(errs, c.validateHS06()...)
	if s := c.Planner.ShareIn; s != "" && s != planner.ShareCores && s != planner.ShareHS06 {
		errs = append(errs, fmt.Errorf("planner.share_in %q: want cores or hs06", s))
	}
	if c.Demand.Trace.TimeScale < 0 {
		errs = append(errs, fmt.Errorf("demand.trace.time_scale %v is negative (0: real time)", c.Demand.Trace.TimeScale))
	}
	errs = append(errs, c.Images.validate()...)
	if c.Planner.IdleThrottlePercent < 0 {
		errs = append(errs, fmt.Errorf("planner.idle_throttle_percent %d is negative", c.Planner.IdleThrottlePercent))
	}
	return errors.Join(errs...)
}

// validateDurations refuses periods and ages that make no sense: zero or
// negative for those the hub cannot run without (their zero is replaced
// by the default in WithDefaults, so only a negative value from the file
// reaches here), negative for those where zero means a default or "none".
// planner.come_alive, planner.job_alive and planner.unknown_deadline take
// a negative value for "off" and are not checked.
func (c Config) validateDurations() []error {
	type setting struct {
		key string
		v   time.Duration
	}
	var errs []error
	for _, d := range []setting{
		{"heartbeat_every", c.HeartbeatEvery}, {"inventory_every", c.InventoryEvery},
		{"demand_max_age", c.DemandMaxAge}, {"boot_list_timeout", c.BootListTimeout},
		{"startup_grace", c.StartupGrace}, {"events_max_age", c.EventsMaxAge},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s is %s, want a positive duration", d.key, d.v))
		}
	}
	nonNegative := []setting{
		{"planner.keep_alive", c.Planner.KeepAlive}, {"planner.error_delay", c.Planner.ErrorDelay},
		{"planner.retire_deadline", c.Planner.RetireDeadline}, {"planner.min_keep_alive", c.Planner.MinKeepAlive},
		{"planner.max_lifetime", c.Planner.MaxLifetime}, {"planner.backoff_base", c.Planner.BackoffBase},
		{"planner.backoff_max", c.Planner.BackoffMax}, {"planner.failure_window", c.Planner.FailureWindow},
		{"planner.freeze_after", c.Planner.FreezeAfter}, {"planner.over_quota_deadline", c.Planner.OverQuotaDeadline},
		{"planner.hold_max", c.Planner.HoldMax}, {"planner.preempt_window", c.Planner.PreemptWindow},
		{"planner.preempt_backoff", c.Planner.PreemptBackoff},
	}
	for _, name := range sortedKeys(c.Groups) {
		nonNegative = append(nonNegative, setting{"groups." + name + ".keep_alive", c.Groups[name].KeepAlive})
	}
	for _, name := range sortedKeys(c.Sites) {
		nonNegative = append(nonNegative, setting{"sites." + name + ".keep_alive", c.Sites[name].KeepAlive},
			setting{"sites." + name + ".max_lifetime", c.Sites[name].MaxLifetime})
	}
	for _, d := range nonNegative {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %s, want 0 (the default) or more", d.key, d.v))
		}
	}
	return errs
}

// maxHS06PerCore bounds a rating: far above any CPU's.
const maxHS06PerCore = 10000

// validateHS06 refuses ratings that are not positive numbers below
// maxHS06PerCore, naming the site and flavor.
func (c Config) validateHS06() []error {
	var errs []error
	bad := func(v float64) bool { return !(v > 0 && v <= maxHS06PerCore) }
	for _, site := range sortedKeys(c.Sites) {
		sc := c.Sites[site]
		if sc.HS06Default != 0 && bad(sc.HS06Default) {
			errs = append(errs, fmt.Errorf("sites.%s.hs06_default %v: want a rating above 0 and at most %d", site, sc.HS06Default, maxHS06PerCore))
		}
		for _, flavor := range sortedKeys(sc.HS06PerCore) {
			if v := sc.HS06PerCore[flavor]; bad(v) {
				errs = append(errs, fmt.Errorf("sites.%s.hs06_per_core.%s %v: want a rating above 0 and at most %d", site, flavor, v, maxHS06PerCore))
			}
		}
	}
	return errs
}

// validateGroupTree refuses a parent that names no configured group, the
// group itself, or closes a cycle, and borrow set on a top group.
func (c Config) validateGroupTree() []error {
	var errs []error
	for _, name := range sortedKeys(c.Groups) {
		g := c.Groups[name]
		if g.Parent == "" {
			if g.Borrow != nil {
				errs = append(errs, fmt.Errorf("groups.%s.borrow is set but the group has no parent", name))
			}
			continue
		}
		if _, ok := c.Groups[g.Parent]; !ok {
			errs = append(errs, fmt.Errorf("groups.%s.parent %q names no configured group", name, g.Parent))
			continue
		}
		// Walk up; more steps than groups means a cycle.
		at := name
		for range len(c.Groups) + 1 {
			at = c.Groups[at].Parent
			if at == "" {
				break
			}
			if at == name {
				errs = append(errs, fmt.Errorf("groups.%s.parent %q makes a cycle", name, g.Parent))
				break
			}
		}
	}
	return errs
}

// sortedKeys returns m's keys in order, so errors come in a stable order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
