package sim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/hub/planner"
	"github.com/canopy-grid/canopy/protocol"
)

// Limits on traces.
const (
	maxClouds   = 10000
	maxLines    = 100000
	maxLineLen  = 64 << 10
	maxSteps    = 10_000_000
	maxArrivals = 10_000_000
	maxCount    = 1_000_000_000
	maxDuration = 3650 * 24 * time.Hour
)

// Range is a duration drawn uniformly from [Lo, Hi].
type Range struct {
	Lo, Hi time.Duration
}

// Trace is a parsed workload trace.
type Trace struct {
	Start    time.Time
	Duration time.Duration
	Step     time.Duration
	Seed     uint64
	// Drain is how long the simulation may run past Duration for the
	// queue to empty.
	Drain time.Duration
	// BootListTimeout is how long a booted server may stay unlisted by its
	// cloud before the hub forgets the boot, as the hub's
	// boot_list_timeout; default 10 min, the hub's default.
	BootListTimeout time.Duration
	Config          planner.Config
	Flavors         []protocol.Flavor
	// HS06PerCore rates flavors by name (flavor key hs06_per_core), on
	// every cloud; unrated flavors count 1 per core.
	HS06PerCore map[string]float64
	Clouds      []CloudSpec
	Groups      []planner.Group
	VMTypes     []planner.VMType
	Aliases     map[string][]string
	Jobs        []JobSpec
	Events      []Event

	sites map[string]bool
}

// CloudSpec is one simulated cloud: what the planner is told about it, and
// how it behaves.
type CloudSpec struct {
	Site     string
	Priority int
	Endpoint string
	// MaxInFlight, KeepAlive and MaxLifetime are passed to the planner.
	MaxInFlight int
	KeepAlive   time.Duration
	MaxLifetime time.Duration
	// Flavors names the flavors offered; empty means all.
	Flavors []string
	// Limits holds the project's maxima (negative: none); usage is
	// simulated.
	Limits    protocol.Limits
	Caps      planner.Caps
	SoftQuota planner.Caps
	Foreign   planner.Usage

	Boot, Register Range
	// SlowFraction of boots take SlowBoot instead of Boot.
	SlowFraction float64
	SlowBoot     Range
	// FailRate of boot commands fail; ErrorRate of servers go to ERROR
	// while booting; NeverRegister of servers never join the pool;
	// UnlistedRate of servers are missing from the listing for
	// UnlistedFor.
	FailRate, ErrorRate, NeverRegister, UnlistedRate float64
	UnlistedFor                                      time.Duration
	// BadImages fail to boot here (an image fault).
	BadImages []string

	Paused, Disabled, Disconnected bool
	// Preemptible clouds, and PreemptibleFlavors of any cloud, may take
	// their servers back; Reclaim, set by an event, is the fraction of the
	// VMs on such capacity the cloud deletes at that moment (their jobs go
	// back to the queue).
	Preemptible        bool
	PreemptibleFlavors []string
	Reclaim            float64
	// Outage, set by an event, makes every boot fail until then (an
	// offset from the start).
	Outage time.Duration
}

// JobSpec is a batch of identical jobs arriving once or repeatedly.
type JobSpec struct {
	// Shape gives the jobs' group, VM type and request; its counts are
	// unused.
	Shape planner.Shape
	At    time.Duration
	// Every repeats the arrival until Until; zero means once.
	Every, Until time.Duration
	Count        int
	Run          Range
}

// Event changes a cloud's or a group's settings at a time, or empties the
// pool's view of the VMs for a while.
type Event struct {
	At time.Duration
	// Cloud is a site, or a prefix ending in '*'; Group a group name.
	Cloud, Group string
	Set          []KeyValue
	// PoolOutage, when positive, is how long the collector lists no
	// machine from At on (an empty view, no error): running jobs go on,
	// nothing new starts, and the hub must not take the VMs for idle.
	PoolOutage time.Duration
	line       int
}

// KeyValue is one key=value field.
type KeyValue struct {
	Key, Value string
}

// ParseTrace reads a trace. Errors name the line and field at fault.
func ParseTrace(r io.Reader) (*Trace, error) {
	tr := &Trace{
		Start:           time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC),
		Step:            time.Minute,
		Seed:            1,
		Drain:           30 * 24 * time.Hour,
		BootListTimeout: 10 * time.Minute,
		Config:          planner.DefaultConfig(),
		Aliases:         map[string][]string{},
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineLen)
	seenSim := false
	n := 0
	for sc.Scan() {
		n++
		if n > maxLines {
			return nil, fmt.Errorf("trace longer than %d lines", maxLines)
		}
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		kvs, err := splitFields(fields[1:])
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, fields[0], err)
		}
		switch fields[0] {
		case "sim":
			if seenSim {
				return nil, fmt.Errorf("line %d: second sim line", n)
			}
			seenSim = true
			err = tr.parseSim(kvs)
		case "config":
			err = parseConfig(&tr.Config, kvs)
		case "flavor":
			err = tr.parseFlavor(kvs)
		case "cloud":
			err = tr.parseCloud(kvs)
		case "group":
			err = tr.parseGroup(kvs)
		case "vmtype":
			err = tr.parseVMType(kvs)
		case "alias":
			err = tr.parseAlias(kvs)
		case "jobs":
			err = tr.parseJobs(kvs)
		case "event":
			err = tr.parseEvent(kvs, n)
		default:
			err = fmt.Errorf("unknown keyword %q", fields[0])
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, fields[0], err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	if err := tr.validate(); err != nil {
		return nil, err
	}
	return tr, nil
}

func splitFields(fields []string) ([]KeyValue, error) {
	out := make([]KeyValue, 0, len(fields))
	seen := make(map[string]bool, len(fields))
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("field %q is not key=value", f)
		}
		if seen[k] {
			return nil, fmt.Errorf("key %q given twice", k)
		}
		seen[k] = true
		out = append(out, KeyValue{k, v})
	}
	return out, nil
}

func (tr *Trace) parseSim(kvs []KeyValue) error {
	for _, kv := range kvs {
		var err error
		switch kv.Key {
		case "start":
			tr.Start, err = time.Parse(time.RFC3339, kv.Value)
		case "duration":
			tr.Duration, err = parseDur(kv.Value)
		case "step":
			tr.Step, err = parseDur(kv.Value)
		case "drain":
			tr.Drain, err = parseDur(kv.Value)
		case "seed":
			tr.Seed, err = strconv.ParseUint(kv.Value, 10, 64)
		case "boot_list_timeout":
			tr.BootListTimeout, err = parseDur(kv.Value)
		default:
			err = errUnknownKey
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	return nil
}

var errUnknownKey = errors.New("unknown key")

func keyErr(kv KeyValue, err error) error {
	return fmt.Errorf("%s=%q: %w", kv.Key, kv.Value, err)
}

func parseConfig(c *planner.Config, kvs []KeyValue) error {
	for _, kv := range kvs {
		var err error
		dur := func(d *time.Duration) { *d, err = parseSignedDur(kv.Value) }
		num := func(n *int) { *n, err = parseInt(kv.Value, -1, maxCount) }
		switch kv.Key {
		case "keep_alive":
			dur(&c.KeepAlive)
		case "min_keep_alive":
			dur(&c.MinKeepAlive)
		case "error_delay":
			dur(&c.ErrorDelay)
		case "retire_deadline":
			dur(&c.RetireDeadline)
		case "max_boots_per_cloud":
			num(&c.MaxBootsPerCloud)
		case "come_alive":
			dur(&c.ComeAlive)
		case "job_alive":
			dur(&c.JobAlive)
		case "max_lifetime":
			dur(&c.MaxLifetime)
		case "idle_throttle_min":
			num(&c.IdleThrottleMin)
		case "idle_throttle_percent":
			num(&c.IdleThrottlePercent)
		case "fairness":
			switch f := planner.Fairness(kv.Value); f {
			case planner.FairRotate, planner.FairShare:
				c.Fairness = f
			default:
				err = errors.New("want rotate or share")
			}
		case "backoff_base":
			dur(&c.BackoffBase)
		case "backoff_max":
			dur(&c.BackoffMax)
		case "failure_window":
			dur(&c.FailureWindow)
		case "freeze_after":
			dur(&c.FreezeAfter)
		case "freeze_min_unlisted":
			num(&c.FreezeMinUnlisted)
		case "over_quota_deadline":
			dur(&c.OverQuotaDeadline)
		case "unknown_deadline":
			dur(&c.UnknownDeadline)
		case "preempt_max":
			c.PreemptMax, err = parseInt(kv.Value, -1, maxCount)
		case "preempt_window":
			dur(&c.PreemptWindow)
		case "preempt_backoff":
			dur(&c.PreemptBackoff)
		case "disruption_budget":
			c.DisruptionBudget, err = parseInt(kv.Value, -1, 100)
		case "disruption_budget_vms":
			num(&c.DisruptionBudgetVMs)
		case "share_in":
			switch u := planner.ShareUnit(kv.Value); u {
			case planner.ShareCores, planner.ShareHS06:
				c.ShareIn = u
			default:
				err = errors.New("want cores or hs06")
			}
		case "retire_order":
			switch o := planner.RetireOrder(kv.Value); o {
			case planner.RetireYoungest, planner.RetireOldest:
				c.RetireOrder = o
			default:
				err = errors.New("want youngest or oldest")
			}
		default:
			err = errUnknownKey
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	return nil
}

func (tr *Trace) parseFlavor(kvs []KeyValue) error {
	var f protocol.Flavor
	var rating float64
	for _, kv := range kvs {
		var err error
		switch kv.Key {
		case "name":
			f.Name, err = parseName(kv.Value)
		case "cpus":
			f.VCPUs, err = parseInt(kv.Value, 0, 1<<16)
		case "memory_mib":
			f.RAMMiB, err = parseInt(kv.Value, 0, 1<<30)
		case "disk_gib":
			f.DiskGiB, err = parseInt(kv.Value, 0, 1<<30)
		case "hs06_per_core":
			rating, err = parseRating(kv.Value)
		default:
			err = errUnknownKey
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	if f.Name == "" {
		return errors.New("name missing")
	}
	if slices.ContainsFunc(tr.Flavors, func(o protocol.Flavor) bool { return o.Name == f.Name }) {
		return fmt.Errorf("flavor %s defined twice", f.Name)
	}
	if rating > 0 {
		if tr.HS06PerCore == nil {
			tr.HS06PerCore = map[string]float64{}
		}
		tr.HS06PerCore[f.Name] = rating
	}
	f.ID = "flavor-" + f.Name
	tr.Flavors = append(tr.Flavors, f)
	return nil
}

// newCloudSpec is a cloud with no limits that always works.
func newCloudSpec() CloudSpec {
	return CloudSpec{
		Limits:      protocol.Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: -1},
		Boot:        Range{time.Minute, 3 * time.Minute},
		Register:    Range{time.Minute, 2 * time.Minute},
		UnlistedFor: 30 * time.Minute,
	}
}

func (tr *Trace) parseCloud(kvs []KeyValue) error {
	c := newCloudSpec()
	count := 0
	for _, kv := range kvs {
		var err error
		switch kv.Key {
		case "site":
			c.Site, err = parseName(kv.Value)
		case "count":
			count, err = parseInt(kv.Value, 1, maxClouds)
		case "reclaim":
			err = errors.New("an event key (the cloud takes back VMs at that time)")
		case "flavors":
			c.Flavors, err = parseList(kv.Value)
		default:
			err = setCloudKey(&c, kv, 0)
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	if c.Site == "" {
		return errors.New("site missing")
	}
	if count == 0 {
		return tr.addCloud(c)
	}
	width := len(strconv.Itoa(count))
	for i := 1; i <= count; i++ {
		cc := c
		cc.Site = fmt.Sprintf("%s-%0*d", c.Site, max(3, width), i)
		if err := tr.addCloud(cc); err != nil {
			return err
		}
	}
	return nil
}

func (tr *Trace) addCloud(c CloudSpec) error {
	if len(tr.Clouds) >= maxClouds {
		return fmt.Errorf("more than %d clouds", maxClouds)
	}
	if tr.sites[c.Site] {
		return fmt.Errorf("cloud %s defined twice", c.Site)
	}
	if tr.sites == nil {
		tr.sites = make(map[string]bool)
	}
	tr.sites[c.Site] = true
	tr.Clouds = append(tr.Clouds, c)
	return nil
}

// setCloudKey applies one cloud setting; at is the time of the event that
// sets it (for outage).
func setCloudKey(c *CloudSpec, kv KeyValue, at time.Duration) error {
	var err error
	num := func(n *int) { *n, err = parseInt(kv.Value, 0, maxCount) }
	limit := func(n *int) { *n, err = parseInt(kv.Value, -1, maxCount) }
	dur := func(d *time.Duration) { *d, err = parseDur(kv.Value) }
	rng := func(r *Range) { *r, err = parseRange(kv.Value) }
	frac := func(f *float64) { *f, err = parseFrac(kv.Value) }
	flag := func(b *bool) { *b, err = strconv.ParseBool(kv.Value) }
	switch kv.Key {
	case "priority":
		c.Priority, err = parseInt(kv.Value, -maxCount, maxCount)
	case "endpoint":
		c.Endpoint, err = parseName(kv.Value)
	case "max_in_flight":
		num(&c.MaxInFlight)
	case "keep_alive":
		dur(&c.KeepAlive)
	case "max_lifetime":
		dur(&c.MaxLifetime)
	case "cores":
		limit(&c.Limits.MaxCores)
	case "ram_mib":
		limit(&c.Limits.MaxRAMMiB)
	case "instances":
		limit(&c.Limits.MaxInstances)
	case "caps_cores":
		num(&c.Caps.Cores)
	case "caps_ram_mib":
		num(&c.Caps.RAMMiB)
	case "caps_vms":
		num(&c.Caps.VMs)
	case "soft_cores":
		num(&c.SoftQuota.Cores)
	case "soft_ram_mib":
		num(&c.SoftQuota.RAMMiB)
	case "soft_vms":
		num(&c.SoftQuota.VMs)
	case "foreign_cores":
		num(&c.Foreign.Cores)
	case "foreign_ram_mib":
		num(&c.Foreign.RAMMiB)
	case "foreign_vms":
		num(&c.Foreign.VMs)
	case "boot":
		rng(&c.Boot)
	case "register":
		rng(&c.Register)
	case "slow":
		frac(&c.SlowFraction)
	case "slow_boot":
		rng(&c.SlowBoot)
	case "fail":
		frac(&c.FailRate)
	case "error":
		frac(&c.ErrorRate)
	case "never_register":
		frac(&c.NeverRegister)
	case "unlisted":
		frac(&c.UnlistedRate)
	case "unlisted_for":
		dur(&c.UnlistedFor)
	case "bad_images":
		c.BadImages, err = parseList(kv.Value)
	case "paused":
		flag(&c.Paused)
	case "preemptible":
		flag(&c.Preemptible)
	case "preemptible_flavors":
		c.PreemptibleFlavors, err = parseList(kv.Value)
	case "reclaim":
		frac(&c.Reclaim)
	case "disabled":
		flag(&c.Disabled)
	case "connected":
		var on bool
		flag(&on)
		c.Disconnected = !on
	case "outage":
		var d time.Duration
		dur(&d)
		c.Outage = at + d
	default:
		return errUnknownKey
	}
	return err
}

func (tr *Trace) parseGroup(kvs []KeyValue) error {
	var g planner.Group
	for _, kv := range kvs {
		var err error
		if kv.Key == "name" {
			g.Name, err = parseName(kv.Value)
		} else {
			err = setGroupKey(&g, kv)
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	if g.Name == "" {
		return errors.New("name missing")
	}
	if slices.ContainsFunc(tr.Groups, func(o planner.Group) bool { return o.Name == g.Name }) {
		return fmt.Errorf("group %s defined twice", g.Name)
	}
	tr.Groups = append(tr.Groups, g)
	return nil
}

func setGroupKey(g *planner.Group, kv KeyValue) error {
	var err error
	num := func(n *int) { *n, err = parseInt(kv.Value, 0, maxCount) }
	switch kv.Key {
	case "share":
		num(&g.Share)
	case "cores":
		num(&g.Caps.Cores)
	case "ram_mib":
		num(&g.Caps.RAMMiB)
	case "vms":
		num(&g.Caps.VMs)
	case "hs06":
		num(&g.Caps.HS06)
	case "clouds":
		g.Clouds, err = parseList(kv.Value)
	case "keep_alive":
		g.KeepAlive, err = parseDur(kv.Value)
	case "paused":
		g.Paused, err = strconv.ParseBool(kv.Value)
	case "parent":
		g.Parent, err = parseName(kv.Value)
	case "preemptible":
		g.Preemptible, err = strconv.ParseBool(kv.Value)
	case "borrow":
		var on bool
		on, err = strconv.ParseBool(kv.Value)
		g.NoBorrow = !on
	default:
		return errUnknownKey
	}
	return err
}

func (tr *Trace) parseVMType(kvs []KeyValue) error {
	var t planner.VMType
	for _, kv := range kvs {
		var err error
		switch kv.Key {
		case "name":
			t.Name, err = parseName(kv.Value)
		case "group":
			t.Group, err = parseName(kv.Value)
		case "jobs_per_vm":
			t.JobsPerVM, err = parseInt(kv.Value, 0, 1<<16)
		default:
			err = errUnknownKey
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	if t.Name == "" {
		return errors.New("name missing")
	}
	tr.VMTypes = append(tr.VMTypes, t)
	return nil
}

func (tr *Trace) parseAlias(kvs []KeyValue) error {
	name := ""
	var sites []string
	for _, kv := range kvs {
		var err error
		switch kv.Key {
		case "name":
			name, err = parseName(kv.Value)
		case "sites":
			sites, err = parseList(strings.ReplaceAll(kv.Value, "*", ""))
			if err == nil {
				sites = strings.Split(kv.Value, ",")
			}
		default:
			err = errUnknownKey
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	if name == "" {
		return errors.New("name missing")
	}
	if _, dup := tr.Aliases[name]; dup {
		return fmt.Errorf("alias %s defined twice", name)
	}
	tr.Aliases[name] = sites
	return nil
}

func (tr *Trace) parseJobs(kvs []KeyValue) error {
	j := JobSpec{Shape: planner.Shape{VMType: "default"}, Run: Range{time.Hour, time.Hour}}
	for _, kv := range kvs {
		var err error
		switch kv.Key {
		case "at":
			j.At, err = parseDur(kv.Value)
		case "every":
			j.Every, err = parseDur(kv.Value)
		case "until":
			j.Until, err = parseDur(kv.Value)
		case "count":
			j.Count, err = parseInt(kv.Value, 0, maxCount)
		case "group":
			j.Shape.Group, err = parseName(kv.Value)
		case "vm_type":
			j.Shape.VMType, err = parseName(kv.Value)
		case "cpus":
			j.Shape.Cpus, err = parseInt(kv.Value, 0, 1<<16)
		case "memory_mib":
			j.Shape.MemoryMiB, err = parseInt(kv.Value, 0, 1<<30)
		case "disk_kib":
			var n int
			n, err = parseInt(kv.Value, 0, 1<<40)
			j.Shape.DiskKiB = int64(n)
		case "image":
			j.Shape.Image, err = parseName(kv.Value)
		case "clouds":
			j.Shape.Clouds, err = parseList(kv.Value)
		case "keep_alive":
			j.Shape.KeepAlive, err = parseDur(kv.Value)
		case "jobs_per_vm":
			j.Shape.JobsPerVM, err = parseInt(kv.Value, 0, 1<<16)
		case "min_hs06_per_core":
			j.Shape.MinHS06PerCore, err = parseRating(kv.Value)
		case "preemptible":
			j.Shape.Preemptible, err = strconv.ParseBool(kv.Value)
		case "run":
			j.Run, err = parseRange(kv.Value)
		default:
			err = errUnknownKey
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	if j.Shape.Group == "" {
		return errors.New("group missing")
	}
	if j.Every > 0 && j.Until < j.At {
		return errors.New("until before at")
	}
	if j.Run.Hi <= 0 {
		return errors.New("run time must be positive")
	}
	tr.Jobs = append(tr.Jobs, j)
	return nil
}

func (tr *Trace) parseEvent(kvs []KeyValue, line int) error {
	ev := Event{line: line}
	for _, kv := range kvs {
		var err error
		switch kv.Key {
		case "at":
			ev.At, err = parseDur(kv.Value)
		case "cloud":
			ev.Cloud, err = parseName(strings.TrimSuffix(kv.Value, "*"))
			ev.Cloud = kv.Value
		case "group":
			ev.Group, err = parseName(kv.Value)
		case "pool_outage":
			ev.PoolOutage, err = parseDur(kv.Value)
			if err == nil && ev.PoolOutage <= 0 {
				err = errors.New("must be positive")
			}
		default:
			ev.Set = append(ev.Set, kv)
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	if ev.PoolOutage > 0 {
		if ev.Cloud != "" || ev.Group != "" || len(ev.Set) > 0 {
			return errors.New("pool_outage goes alone (with at)")
		}
		tr.Events = append(tr.Events, ev)
		return nil
	}
	if (ev.Cloud == "") == (ev.Group == "") {
		return errors.New("want exactly one of cloud= and group=")
	}
	if len(ev.Set) == 0 {
		return errors.New("nothing to set")
	}
	// Check the settings now, on scratch copies.
	for _, kv := range ev.Set {
		var err error
		if ev.Cloud != "" {
			c := newCloudSpec()
			if kv.Key == "site" || kv.Key == "count" || kv.Key == "flavors" {
				err = errors.New("cannot be changed by an event")
			} else {
				err = setCloudKey(&c, kv, ev.At)
			}
		} else if kv.Key == "parent" {
			err = errors.New("cannot be changed by an event")
		} else {
			var g planner.Group
			err = setGroupKey(&g, kv)
		}
		if err != nil {
			return keyErr(kv, err)
		}
	}
	tr.Events = append(tr.Events, ev)
	return nil
}

// validate checks what only the whole trace can tell.
func (tr *Trace) validate() error {
	if tr.Duration <= 0 {
		return errors.New("trace: sim duration missing or not positive")
	}
	if tr.Step < time.Second {
		return fmt.Errorf("trace: step %s shorter than 1s", tr.Step)
	}
	if tr.Duration > maxDuration || tr.Drain > maxDuration {
		return fmt.Errorf("trace: duration or drain longer than %s", maxDuration)
	}
	if steps := (tr.Duration + tr.Drain) / tr.Step; steps > maxSteps {
		return fmt.Errorf("trace: %d steps, more than %d", steps, maxSteps)
	}
	if len(tr.Clouds) == 0 {
		return errors.New("trace: no cloud")
	}
	if len(tr.Flavors) == 0 {
		return errors.New("trace: no flavor")
	}
	for _, c := range tr.Clouds {
		for _, name := range c.Flavors {
			if !slices.ContainsFunc(tr.Flavors, func(f protocol.Flavor) bool { return f.Name == name }) {
				return fmt.Errorf("trace: cloud %s: unknown flavor %s", c.Site, name)
			}
		}
	}
	arrivals := 0
	for i, j := range tr.Jobs {
		n := 1
		if j.Every > 0 {
			n += int((j.Until - j.At) / j.Every)
		}
		arrivals += n
		if arrivals > maxArrivals {
			return fmt.Errorf("trace: jobs line %d: more than %d arrivals in all", i+1, maxArrivals)
		}
	}
	for name, sites := range tr.Aliases {
		var out []string
		for _, site := range sites {
			if strings.HasSuffix(site, "*") {
				for _, ci := range tr.cloudsMatching(site) {
					out = append(out, tr.Clouds[ci].Site)
				}
				continue
			}
			out = append(out, site)
		}
		tr.Aliases[name] = out
	}
	known := func(name string) bool {
		_, alias := tr.Aliases[name]
		return alias || tr.sites[name]
	}
	for _, g := range tr.Groups {
		for _, name := range g.Clouds {
			if !known(name) {
				return fmt.Errorf("trace: group %s: unknown cloud or alias %s", g.Name, name)
			}
		}
		if g.Parent != "" && !slices.ContainsFunc(tr.Groups, func(o planner.Group) bool { return o.Name == g.Parent }) {
			return fmt.Errorf("trace: group %s: parent %s is no group (add a group line)", g.Name, g.Parent)
		}
	}
	for i, j := range tr.Jobs {
		for _, name := range j.Shape.Clouds {
			if !known(name) {
				return fmt.Errorf("trace: jobs line %d of %d: unknown cloud or alias %s", i+1, len(tr.Jobs), name)
			}
		}
	}
	for _, ev := range tr.Events {
		if ev.Cloud != "" && len(tr.cloudsMatching(ev.Cloud)) == 0 {
			return fmt.Errorf("trace: line %d: event for unknown cloud %s", ev.line, ev.Cloud)
		}
		if ev.Group != "" && !slices.ContainsFunc(tr.Groups, func(g planner.Group) bool { return g.Name == ev.Group }) {
			return fmt.Errorf("trace: line %d: event for unknown group %s (add a group line)", ev.line, ev.Group)
		}
	}
	return nil
}

// cloudsMatching lists the indexes of the clouds an event names.
func (tr *Trace) cloudsMatching(name string) []int {
	var out []int
	prefix, glob := strings.CutSuffix(name, "*")
	for i, c := range tr.Clouds {
		if c.Site == name || (glob && strings.HasPrefix(c.Site, prefix)) {
			out = append(out, i)
		}
	}
	return out
}

// parseDur parses a non-negative duration with an optional leading day
// count: "1d12h", "3d", "90m".
func parseDur(s string) (time.Duration, error) {
	d, err := parseSignedDur(s)
	if err == nil && d < 0 {
		err = errors.New("negative duration")
	}
	return d, err
}

func parseSignedDur(s string) (time.Duration, error) {
	neg := strings.HasPrefix(s, "-")
	rest := strings.TrimPrefix(s, "-")
	var d time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		days, err := strconv.Atoi(rest[:i])
		if err != nil || days < 0 || days > int(maxDuration/(24*time.Hour)) {
			return 0, fmt.Errorf("bad day count in %q", s)
		}
		d = time.Duration(days) * 24 * time.Hour
		rest = rest[i+1:]
	}
	if rest != "" {
		more, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		if more < 0 || more > maxDuration {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		d += more
	} else if !strings.Contains(s, "d") {
		if s == "0" || s == "-0" {
			return 0, nil
		}
		return 0, fmt.Errorf("bad duration %q", s)
	}
	if d > maxDuration {
		return 0, fmt.Errorf("duration %q out of range", s)
	}
	if neg {
		d = -d
	}
	return d, nil
}

func parseRange(s string) (Range, error) {
	lo, hi, isRange := strings.Cut(s, "..")
	a, err := parseDur(lo)
	if err != nil {
		return Range{}, err
	}
	b := a
	if isRange {
		if b, err = parseDur(hi); err != nil {
			return Range{}, err
		}
	}
	if b < a {
		return Range{}, fmt.Errorf("range %q: high below low", s)
	}
	return Range{a, b}, nil
}

func parseInt(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("out of range [%d, %d]", lo, hi)
	}
	return n, nil
}

// parseRating accepts an HS06 rating per core: above 0, at most 10,000.
func parseRating(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f > 0 && f <= 10000) {
		return 0, errors.New("want an HS06 rating per core above 0 and at most 10000")
	}
	return f, nil
}

func parseFrac(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
		return 0, errors.New("want a fraction between 0 and 1")
	}
	return f, nil
}

// parseName accepts names of letters, digits and -_.:/@ up to 128 bytes.
func parseName(s string) (string, error) {
	if s == "" || len(s) > 128 {
		return "", errors.New("want a name of 1 to 128 bytes")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/@", r)) {
			return "", fmt.Errorf("character %q not allowed in a name", r)
		}
	}
	return s, nil
}

func parseList(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		name, err := parseName(p)
		if err != nil {
			return nil, err
		}
		parts[i] = name
	}
	return parts, nil
}
