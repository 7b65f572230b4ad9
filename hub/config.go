package hub

import (
	"errors"
	"fmt"
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
	for name := range c.Sites {
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
	if c.PlanEvery < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("plan_every %s is below 100ms", c.PlanEvery))
	}
	errs = append(errs, c.validateDurations()...)
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

// sortedKeys returns m's keys in order, so errors come in a stable order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
