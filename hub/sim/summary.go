package sim

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/canopy-grid/canopy/hub/planner"
)

// Summary is what a run did.
type Summary struct {
	Seed     uint64        `json:"seed"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Step     time.Duration `json:"step"`
	// Steps is how many plans were made; Elapsed the simulated time run,
	// drain included.
	Steps   int           `json:"steps"`
	Elapsed time.Duration `json:"elapsed"`

	Days   []DayStats   `json:"days"`
	Clouds []CloudStats `json:"clouds"`
	// Groups sums up every group the planner reported, by name.
	Groups   []GroupStats `json:"groups"`
	Jobs     JobStats     `json:"jobs"`
	Failures FailureStats `json:"failures"`
	// Violations counts boots that broke a limit or went where they must
	// not; FirstViolations describes the first few.
	Violations      int      `json:"violations"`
	FirstViolations []string `json:"first_violations,omitempty"`
	// VMsLeft is how many VMs were still up at the end.
	VMsLeft int `json:"vms_left"`
}

// DayStats sums up one simulated day.
type DayStats struct {
	Day   int `json:"day"`
	Boots int `json:"boots"`
	// PeakVMs is the most VMs up at once.
	PeakVMs     int `json:"peak_vms"`
	AvgRunning  int `json:"avg_running"`
	PeakRunning int `json:"peak_running"`
	AvgIdle     int `json:"avg_idle"`
	PeakIdle    int `json:"peak_idle"`
	Started     int `json:"started"`
	Finished    int `json:"finished"`
	// WaitP50 and WaitP95 are the waits of the jobs that started that day.
	WaitP50 time.Duration `json:"wait_p50"`
	WaitP95 time.Duration `json:"wait_p95"`
	// Utilisation is the share of the VMs' cores that ran jobs.
	Utilisation float64 `json:"utilisation"`

	busyCoreSteps, coreSteps int64
}

// CloudStats sums up one cloud.
type CloudStats struct {
	Site  string `json:"site"`
	Boots int    `json:"boots"`
	// BootFailures are failed boots; Errors servers that went to ERROR.
	BootFailures int `json:"boot_failures"`
	Errors       int `json:"errors"`
	// NeverRegistered were deleted by come-alive; NeverRanJob retired by
	// job-alive; Unlisted servers the listing missed for a while.
	NeverRegistered int `json:"never_registered"`
	NeverRanJob     int `json:"never_ran_job"`
	Unlisted        int `json:"unlisted"`
	Retired         int `json:"retired"`
	Deleted         int `json:"deleted"`
	PeakVMs         int `json:"peak_vms"`
	// BootsByGroup splits Boots by owner group.
	BootsByGroup map[string]int `json:"boots_by_group"`
	// FrozenSteps and BackoffSteps count plans in which the planner had
	// the cloud frozen or backing off.
	FrozenSteps  int `json:"frozen_steps"`
	BackoffSteps int `json:"backoff_steps"`
	// Preempted counts VMs the cloud took back (preemptible capacity).
	Preempted int `json:"preempted"`
}

// GroupStats sums up one group.
type GroupStats struct {
	Name string `json:"name"`
	// PeakVMs is the most VMs of the group (its own, not its subgroups')
	// up at once.
	PeakVMs int `json:"peak_vms"`
	// OverQuotaSteps counts plans that reported the group over quota
	// (its caps, or for a parent its subtree's or its subgroups' pool);
	// LastOverQuota is the offset from the start of the last one.
	OverQuotaSteps int           `json:"over_quota_steps"`
	LastOverQuota  time.Duration `json:"last_over_quota"`
	// OverQuotaRetires counts the group's VMs retired or deleted by the
	// over-quota rule, OverQuotaBusy those of them that ran jobs.
	OverQuotaRetires int `json:"over_quota_retires"`
	OverQuotaBusy    int `json:"over_quota_busy"`
}

// JobStats sums up the jobs.
type JobStats struct {
	Submitted int           `json:"submitted"`
	Started   int           `json:"started"`
	Finished  int           `json:"finished"`
	Left      int           `json:"left"`
	WaitP50   time.Duration `json:"wait_p50"`
	WaitP95   time.Duration `json:"wait_p95"`
	WaitMax   time.Duration `json:"wait_max"`
}

// FailureStats sums up the trouble the planner absorbed.
type FailureStats struct {
	BootFailures    int `json:"boot_failures"`
	ErrorVMs        int `json:"error_vms"`
	NeverRegistered int `json:"never_registered"`
	NeverRanJob     int `json:"never_ran_job"`
	Unlisted        int `json:"unlisted"`
	FrozenSteps     int `json:"frozen_steps"`
	BackoffSteps    int `json:"backoff_steps"`
	KilledJobs      int `json:"killed_jobs"`
	// PreemptedJobs went back to the queue when a preemptible cloud took
	// their VM back: the cloud's doing, not Canopy's.
	PreemptedJobs int `json:"preempted_jobs"`
}

// dayAcc accumulates one day.
type dayAcc struct {
	DayStats
	steps               int
	sumRunning, sumIdle int64
	started, finished   int
	boots               int
	waits               waitHist
}

// waitHist counts job waits by whole minute.
type waitHist map[int64]int

func (h *waitHist) add(d time.Duration, n int) {
	if *h == nil {
		*h = waitHist{}
	}
	(*h)[int64(d/time.Minute)] += n
}

// quantile is the wait below which a fraction q of the jobs started.
func (h waitHist) quantile(q float64) time.Duration {
	total := 0
	keys := make([]int64, 0, len(h))
	for k, n := range h {
		keys = append(keys, k)
		total += n
	}
	if total == 0 {
		return 0
	}
	slices.Sort(keys)
	want := int(q*float64(total) + 0.5)
	seen := 0
	for _, k := range keys {
		seen += h[k]
		if seen >= max(1, want) {
			return time.Duration(k) * time.Minute
		}
	}
	return time.Duration(keys[len(keys)-1]) * time.Minute
}

// enterDay makes e.day the accumulator of the day the current step is in.
func (e *engine) enterDay() {
	dayIx := int(e.now.Sub(e.start.Add(e.tr.Step)) / (24 * time.Hour))
	for len(e.days) <= dayIx {
		e.days = append(e.days, &dayAcc{DayStats: DayStats{Day: len(e.days) + 1}})
	}
	e.day = e.days[dayIx]
}

// record takes the step's figures.
func (e *engine) record(p planner.Plan) {
	d := e.day
	running, idle := 0, 0
	busyCores := 0
	for i := range e.shapes {
		s := &e.shapes[i]
		running += s.running
		idle += s.idle
		busyCores += s.running * s.sh.Cpus
	}
	cores := 0
	for _, vm := range e.vms {
		cores += vm.flavor.VCPUs
	}
	d.steps++
	d.sumRunning += int64(running)
	d.sumIdle += int64(idle)
	d.PeakRunning = max(d.PeakRunning, running)
	d.PeakIdle = max(d.PeakIdle, idle)
	d.PeakVMs = max(d.PeakVMs, len(e.vms))
	d.busyCoreSteps += int64(min(busyCores, cores))
	d.coreSteps += int64(cores)
	perGroup := map[string]int{}
	for _, vm := range e.vms {
		perGroup[vm.group]++
	}
	for _, gs := range p.Groups {
		st := e.groupStats(gs.Name)
		st.PeakVMs = max(st.PeakVMs, perGroup[gs.Name])
		if gs.OverQuota {
			st.OverQuotaSteps++
			st.LastOverQuota = e.offset()
		}
	}
	for _, cs := range p.Clouds {
		ci, ok := e.cloudOf[cs.Site]
		if !ok {
			continue
		}
		switch cs.State {
		case planner.CloudFrozen:
			e.clouds[ci].stats.FrozenSteps++
		case planner.CloudBackoff:
			e.clouds[ci].stats.BackoffSteps++
		}
	}
}

// groupStats returns the named group's figures, creating them.
func (e *engine) groupStats(name string) *GroupStats {
	if e.groupStat == nil {
		e.groupStat = map[string]*GroupStats{}
	}
	st, ok := e.groupStat[name]
	if !ok {
		st = &GroupStats{Name: name}
		e.groupStat[name] = st
	}
	return st
}

// summary finishes the figures.
func (e *engine) summary() *Summary {
	s := e.sum
	s.Elapsed = e.now.Sub(e.start)
	for _, d := range e.days {
		ds := d.DayStats
		if d.steps > 0 {
			ds.AvgRunning = int(d.sumRunning / int64(d.steps))
			ds.AvgIdle = int(d.sumIdle / int64(d.steps))
		}
		ds.Boots = d.boots
		ds.Started, ds.Finished = d.started, d.finished
		ds.WaitP50, ds.WaitP95 = d.waits.quantile(0.5), d.waits.quantile(0.95)
		if d.coreSteps > 0 {
			ds.Utilisation = float64(d.busyCoreSteps) / float64(d.coreSteps)
		}
		s.Days = append(s.Days, ds)
	}
	for _, c := range e.clouds {
		s.Clouds = append(s.Clouds, c.stats)
		f := &s.Failures
		f.BootFailures += c.stats.BootFailures
		f.ErrorVMs += c.stats.Errors
		f.NeverRegistered += c.stats.NeverRegistered
		f.NeverRanJob += c.stats.NeverRanJob
		f.Unlisted += c.stats.Unlisted
		f.FrozenSteps += c.stats.FrozenSteps
		f.BackoffSteps += c.stats.BackoffSteps
	}
	slices.SortStableFunc(s.Clouds, func(a, b CloudStats) int { return cmp.Compare(a.Site, b.Site) })
	for _, name := range slices.Sorted(maps.Keys(e.groupStat)) {
		s.Groups = append(s.Groups, *e.groupStat[name])
	}
	s.Jobs.Left = e.jobsLeft()
	s.Jobs.WaitP50 = e.allWaits.quantile(0.5)
	s.Jobs.WaitP95 = e.allWaits.quantile(0.95)
	for k := range e.allWaits {
		s.Jobs.WaitMax = max(s.Jobs.WaitMax, time.Duration(k)*time.Minute)
	}
	s.VMsLeft = len(e.vms)
	return &s
}

// AllFinished reports whether every submitted job ran to the end.
func (s *Summary) AllFinished() bool {
	return s.Jobs.Left == 0 && s.Jobs.Finished == s.Jobs.Submitted
}

// BootsPerDay is the mean and the most VMs booted in one day.
func (s *Summary) BootsPerDay() (mean float64, peak int) {
	total := 0
	for _, d := range s.Days {
		total += d.Boots
		peak = max(peak, d.Boots)
	}
	if len(s.Days) > 0 {
		mean = float64(total) / float64(len(s.Days))
	}
	return mean, peak
}

// Means sums the days up: mean running and idle jobs and utilisation over
// the whole run (each day weighed equally), and the peaks.
func (s *Summary) Means() DayStats {
	var m DayStats
	var util float64
	for _, d := range s.Days {
		m.AvgRunning += d.AvgRunning
		m.AvgIdle += d.AvgIdle
		util += d.Utilisation
		m.PeakVMs = max(m.PeakVMs, d.PeakVMs)
		m.PeakRunning = max(m.PeakRunning, d.PeakRunning)
		m.PeakIdle = max(m.PeakIdle, d.PeakIdle)
		m.Boots += d.Boots
		m.Started += d.Started
		m.Finished += d.Finished
	}
	if n := len(s.Days); n > 0 {
		m.AvgRunning /= n
		m.AvgIdle /= n
		m.Utilisation = util / float64(n)
	}
	return m
}

// WriteTable prints the summary as text tables. maxClouds bounds the
// per-cloud table (the busiest clouds first when it is cut); 0 means all.
func (s *Summary) WriteTable(w io.Writer, maxClouds int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "simulated %s from %s in %s steps (%d plans, seed %d)\n\n",
		fmtDuration(s.Elapsed), s.Start.UTC().Format(time.RFC3339), fmtDuration(s.Step), s.Steps, s.Seed)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "day\tboots\tpeak VMs\trunning avg\trunning peak\tidle avg\tidle peak\tutilisation\tstarted\tfinished\twait p50\twait p95\t")
	for _, d := range s.Days {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f%%\t%d\t%d\t%s\t%s\t\n", d.Day, d.Boots, d.PeakVMs, d.AvgRunning, d.PeakRunning,
			d.AvgIdle, d.PeakIdle, 100*d.Utilisation, d.Started, d.Finished, fmtDuration(d.WaitP50), fmtDuration(d.WaitP95))
	}
	mean, peak := s.BootsPerDay()
	m := s.Means()
	fmt.Fprintf(tw, "mean\t%.0f\t\t%d\t\t%d\t\t%.1f%%\t\t\t\t\t\n", mean, m.AvgRunning, m.AvgIdle, 100*m.Utilisation)
	fmt.Fprintf(tw, "peak\t%d\t%d\t\t%d\t\t%d\t\t\t\t\t\t\n", peak, m.PeakVMs, m.PeakRunning, m.PeakIdle)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("format days: %w", err)
	}

	clouds := slices.Clone(s.Clouds)
	cut := 0
	if maxClouds > 0 && len(clouds) > maxClouds {
		slices.SortStableFunc(clouds, func(a, b CloudStats) int { return cmp.Compare(b.Boots, a.Boots) })
		cut = len(clouds) - maxClouds
		clouds = clouds[:maxClouds]
	}
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cloud\tboots\tpeak VMs\tboot failures\terrors\tnever registered\tnever ran a job\tunlisted\tfrozen plans\tbackoff plans\t")
	for _, c := range clouds {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", c.Site, c.Boots, c.PeakVMs, c.BootFailures, c.Errors,
			c.NeverRegistered, c.NeverRanJob, c.Unlisted, c.FrozenSteps, c.BackoffSteps)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("format clouds: %w", err)
	}
	if cut > 0 {
		fmt.Fprintf(&b, "(%d more clouds)\n", cut)
	}

	j := s.Jobs
	f := s.Failures
	fmt.Fprintf(&b, "\njobs: %d submitted, %d started, %d finished, %d left; wait p50 %s, p95 %s, max %s\n",
		j.Submitted, j.Started, j.Finished, j.Left, fmtDuration(j.WaitP50), fmtDuration(j.WaitP95), fmtDuration(j.WaitMax))
	fmt.Fprintf(&b, "failures absorbed: %d boot failures, %d servers in error, %d never registered, %d never ran a job, %d unlisted for a while, %d frozen and %d backoff cloud-plans, %d jobs killed\n",
		f.BootFailures, f.ErrorVMs, f.NeverRegistered, f.NeverRanJob, f.Unlisted, f.FrozenSteps, f.BackoffSteps, f.KilledJobs)
	finished := "yes"
	if !s.AllFinished() {
		finished = fmt.Sprintf("no, %d still queued or running at the end", j.Left)
	}
	fmt.Fprintf(&b, "invariants: %d limit or placement violations; all jobs finished: %s; %d VMs up at the end\n",
		s.Violations, finished, s.VMsLeft)
	for _, v := range s.FirstViolations {
		fmt.Fprintf(&b, "  violation: %s\n", v)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// fmtDuration prints durations briefly: "3d4h", "2h5m", "45s".
func fmtDuration(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	sec := (d - m*time.Minute) / time.Second
	var b strings.Builder
	if days > 0 {
		fmt.Fprintf(&b, "%dd", days)
	}
	if h > 0 {
		fmt.Fprintf(&b, "%dh", h)
	}
	if m > 0 && days == 0 {
		fmt.Fprintf(&b, "%dm", m)
	}
	if sec > 0 && days == 0 && h == 0 {
		fmt.Fprintf(&b, "%ds", sec)
	}
	if b.Len() == 0 {
		return "0"
	}
	return b.String()
}
