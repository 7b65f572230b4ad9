package planner

import "time"

// Fairness is how boots are shared out between groups.
type Fairness string

// Fairness modes.
const (
	// FairRotate gives every group with a shortfall one VM per turn, in
	// turn, whatever its queue length or share.
	FairRotate Fairness = "rotate"
	// FairShare gives the next VM to the group holding the fewest cores
	// (running VMs and this plan's boots) per unit of Group.Share.
	FairShare Fairness = "share"
)

// RetireOrder is which VMs go first when the planner must shed some.
type RetireOrder string

// Retirement orders. Within the order, VMs that run no job always go before
// VMs that run jobs, and held VMs never go.
const (
	// RetireYoungest retires the most recently created VM first: its
	// caches are coldest and, if it runs jobs, they started most recently.
	RetireYoungest RetireOrder = "youngest"
	// RetireOldest retires the oldest VM first, renewing the fleet.
	RetireOldest RetireOrder = "oldest"
)

// Config holds the policy's knobs. For every field added after the walking
// skeleton (all but the first four), zero means the documented default;
// durations that can be turned off take a negative value for "off".
type Config struct {
	// KeepAlive is how long an idle VM is kept before retirement, unless a
	// cloud, group or job sets its own (job over group over cloud over
	// this). Default 10 min; never below MinKeepAlive.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// ErrorDelay is how long a VM may sit in error before deletion.
	// Default 5 min.
	ErrorDelay time.Duration `yaml:"error_delay"`
	// RetireDeadline is how long a retiring VM may take to finish its jobs.
	// Default 24 h. A VM still retiring ErrorDelay after it is deleted.
	RetireDeadline time.Duration `yaml:"retire_deadline"`
	// MaxBootsPerCloud caps how many VMs one cloud endpoint may have in
	// flight: booting, or booted but not yet registered with the pool.
	// Default 20; zero or negative means no cap.
	MaxBootsPerCloud int `yaml:"max_boots_per_cloud"`

	// MinKeepAlive is the floor for every keep-alive setting. Default 2 min.
	MinKeepAlive time.Duration `yaml:"min_keep_alive"`
	// ComeAlive is how long a VM may take from boot to registering with
	// the pool before it is deleted. Default 2 h; negative turns it off.
	ComeAlive time.Duration `yaml:"come_alive"`
	// JobAlive is how long a registered VM may go without starting its
	// first job before it is retired. Default 30 min; negative: off.
	JobAlive time.Duration `yaml:"job_alive"`
	// MaxLifetime retires VMs this old, running jobs or not (they may
	// finish within RetireDeadline). Default zero: no maximum.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// IdleThrottleMin and IdleThrottlePercent stop a group's boots while
	// max(IdleThrottleMin, busy VMs × IdleThrottlePercent / 100) of its VMs
	// sit idle. Defaults 10 and 10; a negative IdleThrottleMin turns the
	// throttle off.
	IdleThrottleMin     int `yaml:"idle_throttle_min"`
	IdleThrottlePercent int `yaml:"idle_throttle_percent"`
	// Fairness shares boots out between groups. Default FairRotate.
	Fairness Fairness `yaml:"fairness"`
	// BackoffBase and BackoffMax bound the backoff after boot failures: n
	// failures within FailureWindow (since the last good boot) stop boots
	// until the last failure + min(BackoffBase × 2^(n-1), BackoffMax).
	// Defaults 1 min, 30 min and 1 h.
	BackoffBase   time.Duration `yaml:"backoff_base"`
	BackoffMax    time.Duration `yaml:"backoff_max"`
	FailureWindow time.Duration `yaml:"failure_window"`
	// FreezeAfter and FreezeMinUnlisted freeze a cloud (no boots) while at
	// least FreezeMinUnlisted servers it said it booted have been missing
	// from its listing for FreezeAfter. Defaults 10 min and 1.
	FreezeAfter       time.Duration `yaml:"freeze_after"`
	FreezeMinUnlisted int           `yaml:"freeze_min_unlisted"`
	// OverQuotaDeadline is how long a cloud or group may stay over its
	// quota, after its idle VMs are gone, before VMs running jobs are
	// retired too. Default zero: never retire running jobs for quota.
	OverQuotaDeadline time.Duration `yaml:"over_quota_deadline"`
	// RetireOrder picks which VMs go first when a quota shrinks. Default
	// RetireYoungest.
	RetireOrder RetireOrder `yaml:"retire_order"`
	// UnknownDeadline is how long a VM's evidence may stay unknown (its
	// cloud not reporting, the pool not listing it while it reports jobs,
	// ...) before it is retired gracefully; its retire deadline then
	// deletes it if it never drains. Default 24 h; negative: never.
	UnknownDeadline time.Duration `yaml:"unknown_deadline"`
	// ShareIn is what FairShare counts a group's holding in: ShareCores
	// [default] or ShareHS06 (cores weighted by their HS06 rating).
	ShareIn ShareUnit `yaml:"share_in"`
	// DisruptionBudget bounds the VMs of one cloud that reclaiming
	// (idle capacity yielding to waiting demand) retires while VMs there
	// are retiring: at most DisruptionBudget percent of the cloud's VMs,
	// at least one. Default 10; negative turns reclaiming off.
	// DisruptionBudgetVMs, when positive, is the bound in VMs instead.
	DisruptionBudget    int `yaml:"disruption_budget"`
	DisruptionBudgetVMs int `yaml:"disruption_budget_vms"`
	// PreemptMax, PreemptWindow and PreemptBackoff back off a cloud that
	// takes back PreemptMax VMs or more within PreemptWindow: no boots
	// until PreemptBackoff after the last. Defaults 20, 1 h and 30 min;
	// a negative PreemptMax turns it off.
	PreemptMax     int           `yaml:"preempt_max"`
	PreemptWindow  time.Duration `yaml:"preempt_window"`
	PreemptBackoff time.Duration `yaml:"preempt_backoff"`
	// HoldMax is how long a manual hold lasts unless an admin renews it
	// (holds it again); past it the VM is under the planner's rules again
	// (which never retire a busy VM for being idle). Zero, the default:
	// holds never expire. The hub's snapshot builder applies it.
	HoldMax time.Duration `yaml:"hold_max"`
}

// ShareUnit is the unit fair share counts in.
type ShareUnit string

// Share units.
const (
	ShareCores ShareUnit = "cores"
	ShareHS06  ShareUnit = "hs06"
)

// Defaults of the knobs, as DefaultConfig returns them.
const (
	DefaultKeepAlive           = 10 * time.Minute
	DefaultErrorDelay          = 5 * time.Minute
	DefaultRetireDeadline      = 24 * time.Hour
	DefaultMaxBootsPerCloud    = 20
	DefaultMinKeepAlive        = 2 * time.Minute
	DefaultComeAlive           = 2 * time.Hour
	DefaultJobAlive            = 30 * time.Minute
	DefaultIdleThrottleMin     = 10
	DefaultIdleThrottlePercent = 10
	DefaultBackoffBase         = time.Minute
	DefaultBackoffMax          = 30 * time.Minute
	DefaultFailureWindow       = time.Hour
	DefaultFreezeAfter         = 10 * time.Minute
	DefaultFreezeMinUnlisted   = 1
	DefaultUnknownDeadline     = 24 * time.Hour
	DefaultDisruptionBudget    = 10
	DefaultPreemptMax          = 20
	DefaultPreemptWindow       = time.Hour
	DefaultPreemptBackoff      = 30 * time.Minute
)

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		KeepAlive:        DefaultKeepAlive,
		ErrorDelay:       DefaultErrorDelay,
		RetireDeadline:   DefaultRetireDeadline,
		MaxBootsPerCloud: DefaultMaxBootsPerCloud,
	}.withDefaults()
}

// WithDefaults returns c with every zero field that has a documented
// default set to it.
func (c Config) WithDefaults() Config { return c.withDefaults() }

// withDefaults fills the zero fields added after the walking skeleton.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.MinKeepAlive, DefaultMinKeepAlive)
	def(&c.ComeAlive, DefaultComeAlive)
	def(&c.JobAlive, DefaultJobAlive)
	def(&c.BackoffBase, DefaultBackoffBase)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.FailureWindow, DefaultFailureWindow)
	def(&c.FreezeAfter, DefaultFreezeAfter)
	def(&c.UnknownDeadline, DefaultUnknownDeadline)
	if c.IdleThrottleMin == 0 {
		c.IdleThrottleMin = DefaultIdleThrottleMin
	}
	if c.IdleThrottlePercent == 0 {
		c.IdleThrottlePercent = DefaultIdleThrottlePercent
	}
	def(&c.PreemptWindow, DefaultPreemptWindow)
	def(&c.PreemptBackoff, DefaultPreemptBackoff)
	if c.PreemptMax == 0 {
		c.PreemptMax = DefaultPreemptMax
	}
	if c.DisruptionBudget == 0 {
		c.DisruptionBudget = DefaultDisruptionBudget
	}
	if c.FreezeMinUnlisted <= 0 {
		c.FreezeMinUnlisted = DefaultFreezeMinUnlisted
	}
	if c.Fairness != FairShare {
		c.Fairness = FairRotate
	}
	if c.ShareIn != ShareHS06 {
		c.ShareIn = ShareCores
	}
	if c.RetireOrder != RetireOldest {
		c.RetireOrder = RetireYoungest
	}
	return c
}
