package htcondor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/classad"
	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/planner"
)

// Source reads demand from HTCondor: the queues of the configured schedds
// (condor_q) and the slots of Canopy's VMs (condor_status). It implements the
// hub's Source. Poll and Invalidate may be called from different goroutines.
type Source struct {
	cfg        Config
	run        Runner
	log        *logrus.Entry
	types      []*vmType
	typeByName map[string]*vmType
	proj       *projection
	slotAttrs  []string
	exprs      *exprCache

	// Manual reports whether a VM is under manual control; Invalidate
	// never touches such a VM. Set it before the first call; nil means no
	// VM is.
	Manual func(vmName string) bool

	mu        sync.Mutex
	schedds   map[string]*scheddState // by configured name, across polls
	idleSince map[string]time.Time    // by VM name, across polls
	startds   map[string]seenStartd   // by VM name, for Invalidate
	status    Status
	matcher   *Matcher
}

// New returns a Source. cfg gets its defaults and is validated; run runs the
// tools (cfg.Runner() for real).
func New(cfg Config, run Runner, log *logrus.Entry) (*Source, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("htcondor config: %w", err)
	}
	types, err := compileVMTypes(cfg)
	if err != nil {
		return nil, fmt.Errorf("htcondor config: %w", err)
	}
	s := &Source{cfg: cfg, run: run, log: log, types: types, typeByName: map[string]*vmType{},
		proj: newProjection(cfg), exprs: newExprCache(4096),
		schedds: map[string]*scheddState{}, idleSince: map[string]time.Time{}, startds: map[string]seenStartd{}}
	for _, t := range types {
		s.typeByName[t.name] = t
	}
	a := cfg.Attributes
	s.slotAttrs = dedupFold(slices.Concat(slotAttributes, []string{a.VMName, a.VMID, a.Site, a.Group, a.VMType},
		attributeNames(types), cfg.ExtraMachineAttributes))
	return s, nil
}

// dedupFold drops names repeated in another case, keeping the first.
func dedupFold(names []string) []string {
	seen := map[string]bool{}
	out := names[:0:0]
	for _, n := range names {
		if k := strings.ToLower(n); !seen[k] {
			seen[k] = true
			out = append(out, n)
		}
	}
	return out
}

func (s *Source) typeNames() []string {
	out := make([]string, len(s.types))
	for i, t := range s.types {
		out[i] = t.name
	}
	return out
}

// poolArgs are the -pool arguments, if a pool is configured.
func (s *Source) poolArgs() []string {
	if s.cfg.Pool == "" {
		return nil
	}
	return []string{"-pool", s.cfg.Pool}
}

// QueueCommand is the condor_q command line that reads schedd's jobs one by
// one ("" for the default schedd): the "jobs" query.
func (s *Source) QueueCommand(schedd string) Cmd {
	args := append(s.scheddArgs(schedd), "-allusers", "-json", "-constraint", jobConstraint, "-attributes", strings.Join(s.proj.names, ","))
	return Cmd{Name: "condor_q", Args: args}
}

// scheddArgs are the -pool and -name arguments for schedd.
func (s *Source) scheddArgs(schedd string) []string {
	args := s.poolArgs()
	if schedd != "" {
		args = append(args, "-name", schedd)
	}
	return args
}

// GroupsCommand is the condor_q command line that has schedd ("" for the
// default one) group its jobs that are demand or hold a VM (idle, running,
// transferring, suspended) by their status and by every attribute a shape
// depends on (the schedd's autoclustering done on the fly, condor_q
// -group-by), and send one row per group with JobCount and JobIds: the
// "autocluster" query. condor_q applies -constraint to the rows it gets
// back too; they carry JobStatus, so the job constraint lets them through.
func (s *Source) GroupsCommand(schedd string) Cmd {
	args := append(s.scheddArgs(schedd), "-allusers", "-group-by", "-json", "-constraint", jobConstraint,
		"-attributes", strings.Join(append([]string{"JobStatus"}, s.proj.shapingNames()...), ","))
	return Cmd{Name: "condor_q", Args: args}
}

// SlotsCommand is the condor_status command line that reads the slots of
// Canopy's VMs.
func (s *Source) SlotsCommand() Cmd {
	args := append(s.poolArgs(), "-json", "-constraint", s.cfg.Attributes.VMName+" =!= undefined",
		"-attributes", strings.Join(s.slotAttrs, ","))
	return Cmd{Name: "condor_status", Args: args}
}

// ScheddStatus is how reading one schedd's queue went.
type ScheddStatus struct {
	// Name is the schedd ("" for the default one).
	Name string `json:"name"`
	// Query is how the queue was read: QueryAutocluster or QueryJobs.
	Query string `json:"query"`
	// QueryNote says why the schedd is read job by job although
	// demand_query asks for autoclusters.
	QueryNote string `json:"query_note,omitempty"`
	// Idle and Running count its jobs (the kept ones when Stale).
	Idle    int `json:"idle"`
	Running int `json:"running"`
	// Signatures counts distinct job signatures (jobs that differ in an
	// attribute their shape depends on); Groups the group rows read.
	Signatures int           `json:"signatures"`
	Groups     int           `json:"groups,omitempty"`
	Took       time.Duration `json:"took"`
	Err        string        `json:"error,omitempty"`
	// Stale is true when this poll could not read the schedd; Kept when
	// its last good jobs still count (not older than demand_max_age).
	Stale bool `json:"stale,omitempty"`
	Kept  bool `json:"kept,omitempty"`
	// LastGood is when it was last read in full; FailingSince when it
	// started failing.
	LastGood     time.Time `json:"last_good,omitzero"`
	FailingSince time.Time `json:"failing_since,omitzero"`
}

// ShapeInfo is one shape as the status page shows it. The jobs'
// +VMInstanceType, +VMKeepAlive and +VMMaxLifetime are the Shape's Flavor,
// KeepAlive and MaxLifetime: they reach the planner, the boot command and
// the VM.
type ShapeInfo struct {
	planner.Shape
}

// Unmatchable counts one group's jobs that no VM Canopy can boot would run,
// and why.
type Unmatchable struct {
	Group   string `json:"group"`
	Reason  string `json:"reason"`
	Idle    int    `json:"idle"`
	Running int    `json:"running"`
	// Example is one such job's id (cluster.proc).
	Example string `json:"example"`
}

// Status is what the last poll saw, for the status page.
type Status struct {
	// TakenAt is when the last good poll was taken; Took how long it took.
	TakenAt time.Time     `json:"taken_at"`
	Took    time.Duration `json:"took"`
	// Err is the last poll's error; empty when it succeeded. The other
	// fields then still describe the last good poll.
	Err     string         `json:"error,omitempty"`
	Schedds []ScheddStatus `json:"schedds"`
	// Stale names the schedds the last good poll could not read.
	Stale []string `json:"stale,omitempty"`
	// PoolErr is why the last good poll could not read the pool's slots
	// (Machines is then empty: unknown, not none).
	PoolErr     string        `json:"pool_error,omitempty"`
	Shapes      []ShapeInfo   `json:"shapes"`
	Unmatchable []Unmatchable `json:"unmatchable"`
	Machines    []MachineInfo `json:"machines"`
}

// Status returns what the last poll saw.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Matcher returns the last good poll's Matcher (nil before the first).
func (s *Source) Matcher() *Matcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.matcher
}

// scheddRead is one schedd's queue as one poll read it.
type scheddRead struct {
	q     *queue
	query string // QueryAutocluster or QueryJobs: how it was read
	// noGroup, when set, says why the schedd was read job by job although
	// the autocluster query was asked for.
	noGroup string
	err     error
	took    time.Duration
}

// scheddState is what the Source remembers of one schedd across polls.
type scheddState struct {
	good         *queue    // the last queue read in full
	goodAt       time.Time // when (the poll's now)
	failingSince time.Time // zero while it answers
	// noGroup says why the schedd is read job by job ("" while the
	// autocluster query works, or before it was tried).
	noGroup string
}

// scheddLabel names a schedd in messages and Status.Stale.
func scheddLabel(name string) string {
	if name == "" {
		return "(default schedd)"
	}
	return name
}

// Poll reads every configured schedd's queue and the pool's Canopy slots.
//
// Each schedd is read on its own. One that fails (exit status, failure
// text, timeout, unreadable output) does not fail the poll: its last good
// jobs keep counting until they are older than DemandMaxAge, then they
// are dropped, while the other schedds are read fresh. Either way the
// result says it is not fresh (Demand.Schedds, Demand.Fresh; Status says
// how each schedd went), so that the hub does not retire on a view that
// misses a schedd. condor_status failing is a failed pool view:
// Demand.PoolErr says why and Machines is nil (unknown, not empty). The
// poll fails as a whole, with an error naming the command and the reason
// and no demand, when no schedd could be read at all.
func (s *Source) Poll(ctx context.Context, now time.Time, pool []demand.PoolVM) (demand.Demand, error) {
	start := time.Now()
	schedds := s.cfg.Schedds
	if len(schedds) == 0 {
		schedds = []string{""}
	}
	s.mu.Lock()
	noGroup := make([]string, len(schedds))
	for i, name := range schedds {
		if st := s.schedds[name]; st != nil {
			noGroup[i] = st.noGroup
		}
	}
	s.mu.Unlock()
	reads := make([]scheddRead, len(schedds))
	slots := map[string][]*slot{}
	var slotsErr error
	var wg sync.WaitGroup
	for i, name := range schedds {
		wg.Go(func() { reads[i] = s.readSchedd(ctx, name, noGroup[i]) })
	}
	wg.Go(func() {
		stderr, err := runTool(ctx, s.run, s.cfg.CommandTimeout, s.SlotsCommand(), func(r io.Reader) error {
			return s.readSlots(r, slots)
		})
		s.warn("", stderr)
		slotsErr = err
	})
	wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	var queues []*queue
	var stale []string
	var errs []error
	stats := make([]ScheddStatus, len(schedds))
	states := make([]demand.ScheddState, len(schedds))
	fresh := 0
	for i, name := range schedds {
		r := reads[i]
		st := s.schedds[name]
		if st == nil {
			st = &scheddState{}
			s.schedds[name] = st
		}
		if r.noGroup != st.noGroup && s.log != nil {
			if r.noGroup != "" {
				s.log.WithFields(logrus.Fields{"schedd": scheddLabel(name), "reason": r.noGroup}).Warn(
					"schedd cannot group its idle jobs: reading its queue job by job")
			} else {
				s.log.WithField("schedd", scheddLabel(name)).Info("schedd groups its idle jobs again")
			}
		}
		if r.noGroup != "" || r.err == nil {
			st.noGroup = r.noGroup
		}
		ss := ScheddStatus{Name: name, Query: r.query, QueryNote: st.noGroup, Took: r.took}
		if r.err == nil {
			st.good, st.goodAt, st.failingSince = r.q, now, time.Time{}
			queues = append(queues, r.q)
			fresh++
		} else {
			errs = append(errs, r.err)
			if st.failingSince.IsZero() {
				st.failingSince = now
			}
			stale = append(stale, scheddLabel(name))
			ss.Err, ss.Stale, ss.FailingSince = r.err.Error(), true, st.failingSince
			if st.good != nil && now.Sub(st.goodAt) <= s.cfg.DemandMaxAge {
				queues = append(queues, st.good)
				ss.Kept = true
			}
		}
		ss.LastGood = st.goodAt
		states[i] = demand.ScheddState{Name: name, Fresh: r.err == nil, TakenAt: st.goodAt, Err: ss.Err}
		if q := r.q; r.err != nil {
			q = nil
			if ss.Kept {
				q = st.good
			}
			if q != nil {
				ss.Idle, ss.Running, ss.Signatures, ss.Groups = q.idle, q.running, len(q.sigs), q.groups
			}
		} else {
			ss.Idle, ss.Running, ss.Signatures, ss.Groups = q.idle, q.running, len(q.sigs), q.groups
		}
		stats[i] = ss
	}
	if fresh == 0 {
		if slotsErr != nil {
			errs = append(errs, slotsErr)
		}
		err := errors.Join(errs...)
		s.status.Err = err.Error()
		s.status.Schedds = stats
		return demand.Demand{}, fmt.Errorf("htcondor poll: %w", err)
	}
	poolErr := ""
	if slotsErr != nil {
		poolErr = slotsErr.Error()
		if s.log != nil {
			s.log.WithError(slotsErr).Warn("the pool's view of Canopy's VMs could not be read: their states are unknown this poll")
		}
	}
	if len(errs) > 0 && s.log != nil {
		s.log.WithError(errors.Join(errs...)).WithField("stale", stale).Warn(
			"some schedds could not be read: their last good jobs count until demand_max_age; no retirement on this poll")
	}

	shapes, unmatch := merge(queues)
	matcher := &Matcher{names: s.cfg.Attributes, types: s.typeByName, reps: map[string][]*classad.Ad{}}
	var idleJobs []*classad.Ad
	infos := make([]ShapeInfo, 0, len(shapes))
	for _, acc := range shapes {
		info := acc.info()
		infos = append(infos, info)
		k := plannerKey(info.Shape)
		for _, rep := range acc.reps {
			if len(matcher.reps[k]) < maxReps {
				matcher.reps[k] = append(matcher.reps[k], rep)
			}
			if acc.idle > 0 {
				idleJobs = append(idleJobs, rep)
			}
		}
	}
	slices.SortFunc(infos, func(a, b ShapeInfo) int { return compareShapes(a.Shape, b.Shape) })

	var machines []MachineInfo
	if slotsErr == nil {
		machines = s.machines(slots, pool, idleJobs, now)
		sortMachines(machines)
		for _, m := range machines {
			s.startds[m.VMName] = seenStartd{name: m.Startd, at: now}
		}
		for vm, sd := range s.startds {
			if now.Sub(sd.at) > forgetStartdAfter {
				delete(s.startds, vm)
			}
		}
	}
	s.status = Status{TakenAt: now, Took: time.Since(start), Schedds: stats, Stale: stale, PoolErr: poolErr, Shapes: infos,
		Unmatchable: unmatch, Machines: machines}
	s.matcher = matcher
	d := demand.Demand{Shapes: plannerShapes(infos), PoolErr: poolErr, Schedds: states, TakenAt: now}
	if slotsErr == nil {
		d.Machines = toDemand(machines)
	}
	return d, nil
}

// readSchedd reads one schedd's queue. With the autocluster query (unless
// noGroup says the schedd cannot answer it) the schedd groups the jobs and
// sends one row per group (GroupsCommand). A schedd that does not group
// (its condor_q does not know -group-by, or its rows carry no JobCount) is
// read job by job (QueueCommand) in the same poll, and the result says why.
func (s *Source) readSchedd(ctx context.Context, name, noGroup string) scheddRead {
	t0 := time.Now()
	if s.cfg.DemandQuery == QueryAutocluster && noGroup == "" {
		q := s.newQueue()
		stderr, err := runTool(ctx, s.run, s.cfg.CommandTimeout, s.GroupsCommand(name), q.readGroups)
		if why := notGrouped(err); why != "" {
			noGroup = why
		} else {
			s.warn(name, stderr)
			return scheddRead{q: q, query: QueryAutocluster, err: err, took: time.Since(t0)}
		}
	}
	q := s.newQueue()
	stderr, err := runTool(ctx, s.run, s.cfg.CommandTimeout, s.QueueCommand(name), q.read)
	s.warn(name, stderr)
	if s.cfg.DemandQuery != QueryAutocluster {
		noGroup = ""
	}
	return scheddRead{q: q, query: QueryJobs, noGroup: noGroup, err: err, took: time.Since(t0)}
}

// notGrouped says why err means that the schedd (or its condor_q) cannot
// answer the autocluster query at all, or "" when it does not.
func notGrouped(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, ErrNotGrouped) {
		return "its answer to condor_q -group-by has no JobCount: the schedd does not group jobs on the fly"
	}
	var ce *CommandError
	if errors.As(err, &ce) && ce.Kind != FailTimeout && strings.Contains(ce.Stderr, "unrecognized argument") {
		return "condor_q does not know -group-by: " + ce.Stderr
	}
	return ""
}

// warn logs what a tool printed on standard error although it succeeded.
func (s *Source) warn(schedd string, stderr []byte) {
	if len(stderr) == 0 || s.log == nil {
		return
	}
	s.log.WithFields(logrus.Fields{"schedd": schedd, "stderr": summarize(stderr)}).Warn("HTCondor tool printed warnings")
}

// merge sums the schedds' shapes and unmatchable jobs.
func merge(queues []*queue) ([]*shapeAcc, []Unmatchable) {
	shapes := map[shapeKey]*shapeAcc{}
	unmatch := map[unmatchKey]*unmatchAcc{}
	for _, q := range queues {
		for k, acc := range q.shapes {
			if acc.idle == 0 && acc.running == 0 {
				continue
			}
			m := shapes[k]
			if m == nil {
				m = &shapeAcc{key: k}
				shapes[k] = m
			}
			m.idle += acc.idle
			m.running += acc.running
			for _, r := range acc.reps {
				if len(m.reps) < maxReps {
					m.reps = append(m.reps, r)
				}
			}
		}
		for k, acc := range q.unmatch {
			m := unmatch[k]
			if m == nil {
				m = &unmatchAcc{key: k, example: acc.example}
				unmatch[k] = m
			}
			m.idle += acc.idle
			m.running += acc.running
		}
	}
	out := make([]*shapeAcc, 0, len(shapes))
	for _, acc := range shapes {
		out = append(out, acc)
	}
	var um []Unmatchable
	for _, u := range unmatch {
		um = append(um, Unmatchable{Group: u.key.group, Reason: u.key.reason, Idle: u.idle, Running: u.running, Example: u.example})
	}
	slices.SortFunc(um, func(a, b Unmatchable) int {
		return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Reason, b.Reason))
	})
	return out, um
}

func (acc *shapeAcc) info() ShapeInfo {
	k := acc.key
	var clouds []string
	if k.clouds != "" {
		clouds = strings.Split(k.clouds, ",")
	}
	return ShapeInfo{
		Shape: planner.Shape{Group: k.group, VMType: k.vmType, Cpus: k.cpus, MemoryMiB: k.memMiB, DiskKiB: k.diskKiB,
			Image: k.image, Clouds: clouds, Idle: acc.idle, Running: acc.running, KeepAlive: k.keepAlive, JobsPerVM: k.jobsPerVM,
			Flavor: k.flavor, MaxLifetime: k.maxLifetime, MinHS06PerCore: k.minHS06, Preemptible: k.preemptible},
	}
}

// plannerKey identifies a planner.Shape without its counts.
func plannerKey(sh planner.Shape) string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%d\x00%d\x00%s\x00%s\x00%d\x00%d\x00%s\x00%d\x00%v\x00%v", sh.Group, sh.VMType, sh.Cpus, sh.MemoryMiB,
		sh.DiskKiB, sh.Image, strings.Join(sh.Clouds, ","), sh.KeepAlive, sh.JobsPerVM, sh.Flavor, sh.MaxLifetime, sh.MinHS06PerCore, sh.Preemptible)
}

// plannerShapes merges shapes that differ only in what planner.Shape does
// not carry (the job signatures behind one shape).
func plannerShapes(infos []ShapeInfo) []planner.Shape {
	var out []planner.Shape
	at := map[string]int{}
	for _, in := range infos {
		k := plannerKey(in.Shape)
		if i, ok := at[k]; ok {
			out[i].Idle += in.Idle
			out[i].Running += in.Running
			continue
		}
		at[k] = len(out)
		out = append(out, in.Shape)
	}
	return out
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func compareShapes(a, b planner.Shape) int {
	return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.VMType, b.VMType),
		cmp.Compare(a.Cpus, b.Cpus), cmp.Compare(a.MemoryMiB, b.MemoryMiB), cmp.Compare(a.DiskKiB, b.DiskKiB),
		strings.Compare(a.Image, b.Image), strings.Compare(strings.Join(a.Clouds, ","), strings.Join(b.Clouds, ",")),
		cmp.Compare(a.KeepAlive, b.KeepAlive), cmp.Compare(a.JobsPerVM, b.JobsPerVM),
		strings.Compare(a.Flavor, b.Flavor), cmp.Compare(a.MaxLifetime, b.MaxLifetime), cmp.Compare(a.MinHS06PerCore, b.MinHS06PerCore),
		boolCompare(a.Preemptible, b.Preemptible))
}

// Matcher tells whether the jobs of a shape would match a VM of the shape's
// VM type and a given size, by ClassAd matchmaking between the jobs' ads and
// the machine ad such a VM's startd would advertise. It is safe for
// concurrent use.
type Matcher struct {
	names AttributeNames
	types map[string]*vmType
	reps  map[string][]*classad.Ad
}

// Matches reports whether some job of shape sh (as the poll that made the
// Matcher saw it) would match a VM of type sh.VMType with cpus, memMiB and
// diskKiB, booted for sh.Group. A shape the poll did not see matches (there
// is nothing to test it with); an unknown VM type does not.
func (m *Matcher) Matches(sh planner.Shape, cpus, memMiB int, diskKiB int64) bool {
	if m == nil {
		return true
	}
	t := m.types[sh.VMType]
	if t == nil {
		return false
	}
	reps := m.reps[plannerKey(sh)]
	if len(reps) == 0 {
		return true
	}
	machine := t.machineAd(m.names, sh.Group, size{cpus: cpus, memMiB: memMiB, diskKiB: diskKiB})
	for _, job := range reps {
		if classad.Match(job, machine) {
			return true
		}
	}
	return false
}

// seenStartd is a VM's startd daemon name and when a poll last saw it.
type seenStartd struct {
	name string
	at   time.Time
}

// forgetStartdAfter is how long a VM's startd name is kept after its slots
// are last seen, so that Invalidate can name its master.
const forgetStartdAfter = 24 * time.Hour

// ErrManual is returned by Invalidate for a VM under manual control.
var ErrManual = errors.New("VM is under manual control")

// vmNameRE is a VM (server) name Canopy accepts.
var vmNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// InvalidateCommands are the condor_advertise commands Invalidate runs for
// vmName: the VM's slot ads, selected by the VM-name attribute vmagent
// advertises, and its master's ad, selected by the startd's daemon name
// (the master's Name) when the VM was seen in the pool, else by the same
// VM-name attribute (if the master advertises it).
func (s *Source) InvalidateCommands(vmName, startd string) []Cmd {
	attr := s.cfg.Attributes.VMName
	slotAd := fmt.Sprintf("MyType = \"Query\"\nTargetType = \"Machine\"\nRequirements = %s =?= %s\n",
		attr, classad.StringValue(vmName))
	master := fmt.Sprintf("%s =?= %s", attr, classad.StringValue(vmName))
	if startd != "" {
		master = fmt.Sprintf("(Name =?= %s) || (%s)", classad.StringValue(startd), master)
	}
	masterAd := fmt.Sprintf("MyType = \"Query\"\nTargetType = \"DaemonMaster\"\nRequirements = %s\n", master)
	// HTCondor 24's startd also advertises a daemon ad of its own
	// (MyType "StartD", carrying the STARTD_ATTRS) beside its slot ads;
	// INVALIDATE_STARTD_ADS forgets it only when asked for that type. A
	// startd that shuts down withdraws it itself; one that was killed
	// leaves it (measured on the live pool).
	daemonAd := fmt.Sprintf("MyType = \"Query\"\nTargetType = \"StartD\"\nRequirements = %s\n", master)
	return []Cmd{
		{Name: "condor_advertise", Args: append(s.poolArgs(), "INVALIDATE_STARTD_ADS", "-"), Stdin: []byte(slotAd)},
		{Name: "condor_advertise", Args: append(s.poolArgs(), "INVALIDATE_STARTD_ADS", "-"), Stdin: []byte(daemonAd)},
		{Name: "condor_advertise", Args: append(s.poolArgs(), "INVALIDATE_MASTER_ADS", "-"), Stdin: []byte(masterAd)},
	}
}

// Invalidate makes the collector forget a deleted VM at once: its slot ads,
// its startd's daemon ad and its master's ad (otherwise they linger until they expire, and the
// negotiator may match jobs to a VM that is gone). VMs under manual control
// (Manual) are never touched: the result is ErrManual. Every command is
// tried; failures are *CommandError.
func (s *Source) Invalidate(ctx context.Context, vmName string) error {
	if !vmNameRE.MatchString(vmName) {
		return fmt.Errorf("invalidate: %s is not a VM name", clip(vmName, 64))
	}
	if s.Manual != nil && s.Manual(vmName) {
		return fmt.Errorf("invalidate %s: %w", vmName, ErrManual)
	}
	s.mu.Lock()
	startd := s.startds[vmName].name
	s.mu.Unlock()
	if startd != "" && !daemonNameRE.MatchString(startd) {
		startd = ""
	}
	var errs []error
	for _, c := range s.InvalidateCommands(vmName, startd) {
		if _, err := runTool(ctx, s.run, s.cfg.CommandTimeout, c, drain); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalidate %s: %w", vmName, err)
	}
	s.mu.Lock()
	delete(s.startds, vmName)
	delete(s.idleSince, vmName)
	s.mu.Unlock()
	return nil
}

// drain reads and drops a tool's output (bounded by the command timeout).
func drain(r io.Reader) error {
	_, err := io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	return err
}
