package htcondor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/hub/classad"
)

// Job attributes read besides the ones the config adds. Identity and time
// attributes are read for messages only; every other one may change a job's
// shape, so jobs are grouped by their values (the job's signature).
var (
	jobIdentity = []string{"ClusterId", "ProcId", "JobStatus"}
	jobShaping  = []string{
		"Owner", "AcctGroup", "AccountingGroup", "CanopyGroup",
		"RequestCpus", "RequestMemory", "RequestDisk", "RequestGPUs",
		"MemoryUsage", "ImageSize", "DiskUsage",
		"Requirements", "FileSystemDomain", "UidDomain",
		"TargetClouds", "VMKeepAlive", "VMMaxLifetime",
		"VMCPUCores", "VMMem", "VMStorage", "VMJobPerCore",
		"VMImage", "VMAMI", "VMLoc", "VMInstanceType",
	}
)

// JobStatus codes (HTCondor's).
const (
	statusIdle         = 1
	statusRunning      = 2
	statusTransferring = 6
	statusSuspended    = 7
)

// jobConstraint selects the jobs that are demand or hold a VM: idle,
// running, transferring output and suspended. Held, removed and completed
// jobs are left out.
const jobConstraint = "JobStatus == 1 || JobStatus == 2 || JobStatus == 6 || JobStatus == 7"

// projection is the list of job attributes asked of condor_q and how each
// is used.
type projection struct {
	names []string
	index map[string]int // lower-cased name -> position in names
	// shaping marks the attributes that make up a job's signature.
	shaping                 []bool
	status, cluster, procID int
}

func newProjection(cfg Config) *projection {
	p := &projection{index: map[string]int{}}
	add := func(name string, shaping bool) {
		k := strings.ToLower(name)
		if i, ok := p.index[k]; ok {
			p.shaping[i] = p.shaping[i] || shaping
			return
		}
		p.index[k] = len(p.names)
		p.names = append(p.names, name)
		p.shaping = append(p.shaping, shaping)
	}
	for _, n := range jobIdentity {
		add(n, false)
	}
	for _, n := range slices.Concat(jobShaping, cfg.GroupAttributes, []string{cfg.Attributes.VMType}, cfg.ExtraJobAttributes) {
		add(n, true)
	}
	p.status, p.cluster, p.procID = p.index["jobstatus"], p.index["clusterid"], p.index["procid"]
	return p
}

// shapingNames are the projected attributes a job's shape depends on.
func (p *projection) shapingNames() []string {
	var out []string
	for i, n := range p.names {
		if p.shaping[i] {
			out = append(out, n)
		}
	}
	return out
}

// shapeKey is everything that tells one kind of job from another.
type shapeKey struct {
	group, vmType string
	cpus, memMiB  int
	diskKiB       int64
	image         string
	clouds        string // sorted, comma-separated
	flavor        string
	keepAlive     time.Duration
	maxLifetime   time.Duration
	jobsPerVM     int
	// preemptible is the job attribute Preemptible: the job accepts
	// preemptible capacity.
	preemptible bool
	// minHS06 is RequestHS06PerCore: the lowest HS06 rating per core the
	// job accepts; zero means any.
	minHS06 float64
}

// maxHS06PerCore bounds RequestHS06PerCore: far above any CPU's rating.
const maxHS06PerCore = 10000

// maxReps bounds the job ads kept per shape to test matches against.
const maxReps = 4

// shapeAcc counts the jobs of one shape.
type shapeAcc struct {
	key           shapeKey
	idle, running int
	// reps are the distinct job ads (signatures) seen for the shape, up to
	// maxReps, for Matcher and machine capacity checks.
	reps []*classad.Ad
}

// unmatchKey is a group's jobs that cannot run on any VM Canopy can boot,
// and why.
type unmatchKey struct{ group, reason string }

type unmatchAcc struct {
	key           unmatchKey
	idle, running int
	example       string // a job id
}

// sigEntry is what a job signature leads to.
type sigEntry struct {
	shape   *shapeAcc
	unmatch *unmatchAcc
}

// count adds n jobs of the given status.
func (e *sigEntry) count(status int64, n int) {
	idle := status == statusIdle
	switch {
	case e.shape != nil && idle:
		e.shape.idle += n
	case e.shape != nil:
		e.shape.running += n
	case idle:
		e.unmatch.idle += n
	default:
		e.unmatch.running += n
	}
}

// queue reads one schedd's jobs into shapes.
type queue struct {
	src     *Source
	proj    *projection
	sigs    map[string]*sigEntry
	shapes  map[shapeKey]*shapeAcc
	unmatch map[unmatchKey]*unmatchAcc
	// per-job scratch
	slots  []int // attribute index+1 per projected name, 0 if absent
	lower  []byte
	sig    []byte
	picked []rawAttr
	rowIDs string // the JobIds of the group row being read, for messages
	// counts
	jobs, idle, running, ignored int
	// groups counts the group rows read (condor_q -group-by).
	groups int
}

func (s *Source) newQueue() *queue {
	return &queue{src: s, proj: s.proj, sigs: map[string]*sigEntry{}, shapes: map[shapeKey]*shapeAcc{},
		unmatch: map[unmatchKey]*unmatchAcc{}, slots: make([]int, len(s.proj.names))}
}

// read streams condor_q -json output into q.
func (q *queue) read(r io.Reader) error {
	st := newAdStream(r, q.src.cfg.MaxAdBytes)
	for {
		attrs, err := st.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := q.add(attrs); err != nil {
			return &DecodeError{Offset: st.base + int64(st.pos), Ad: st.ads - 1, Msg: err.Error()}
		}
	}
}

// index finds the projected attributes among attrs (q.slots).
func (q *queue) index(attrs []rawAttr) {
	clear(q.slots)
	q.rowIDs = ""
	for i, a := range attrs {
		q.lower = lowerASCII(q.lower[:0], a.name)
		if j, ok := q.proj.index[string(q.lower)]; ok {
			q.slots[j] = i + 1
		}
	}
}

// add counts one job.
func (q *queue) add(attrs []rawAttr) error {
	q.index(attrs)
	q.jobs++
	k := q.slots[q.proj.status]
	if k == 0 {
		return fmt.Errorf("job %s has no JobStatus", q.jobID(attrs))
	}
	status, ok := rawInt(attrs[k-1].kind, attrs[k-1].val)
	if !ok {
		return fmt.Errorf("job %s: JobStatus %s is not an integer", q.jobID(attrs), clip(string(attrs[k-1].val), 40))
	}
	switch status {
	case statusIdle:
		q.idle++
	case statusRunning, statusTransferring, statusSuspended:
		q.running++
	default:
		q.ignored++
		return nil
	}
	return q.count(attrs, status, 1)
}

// ErrNotGrouped is what reading condor_q -group-by output returns when its
// rows carry no JobCount: the schedd did not group the jobs (an HTCondor
// without on-the-fly aggregation answers with plain job ads).
var ErrNotGrouped = errors.New("rows carry no JobCount: the schedd did not group its jobs")

// maxGroupJobs bounds one group row's job count.
const maxGroupJobs = 1 << 31

// readGroups streams condor_q -group-by -json output (one row per group of
// jobs, with JobStatus, JobCount and JobIds) into q.
func (q *queue) readGroups(r io.Reader) error {
	st := newAdStream(r, q.src.cfg.MaxAdBytes)
	for {
		attrs, err := st.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := q.addGroup(attrs); err != nil {
			de := &DecodeError{Offset: st.base + int64(st.pos), Ad: st.ads - 1, Msg: err.Error()}
			if errors.Is(err, ErrNotGrouped) {
				de.Err = ErrNotGrouped
			}
			return de
		}
	}
}

// addGroup counts one group row: JobCount jobs with the row's status and
// attributes.
func (q *queue) addGroup(attrs []rawAttr) error {
	q.index(attrs)
	n := int64(-1)
	for _, a := range attrs {
		switch {
		case bytes.EqualFold(a.name, []byte("JobCount")):
			v, ok := rawInt(a.kind, a.val)
			if !ok || v < 0 || v > maxGroupJobs {
				return fmt.Errorf("group row: JobCount %s is not a count", clip(string(a.val), 40))
			}
			n = v
		case bytes.EqualFold(a.name, []byte("JobIds")) && a.kind == kindString:
			q.rowIDs = strings.Trim(string(a.val), `"`) // ids need no unescaping
		}
	}
	if n < 0 {
		return ErrNotGrouped
	}
	k := q.slots[q.proj.status]
	if k == 0 {
		return fmt.Errorf("group row %s has no JobStatus", q.jobID(attrs))
	}
	status, ok := rawInt(attrs[k-1].kind, attrs[k-1].val)
	if !ok {
		return fmt.Errorf("group row %s: JobStatus %s is not an integer", q.jobID(attrs), clip(string(attrs[k-1].val), 40))
	}
	q.groups++
	q.jobs += int(n)
	switch status {
	case statusIdle:
		q.idle += int(n)
	case statusRunning, statusTransferring, statusSuspended:
		q.running += int(n)
	default:
		q.ignored += int(n)
		return nil
	}
	return q.count(attrs, status, int(n))
}

// count adds n jobs of status whose attributes are attrs (indexed in
// q.slots) to their shape.
func (q *queue) count(attrs []rawAttr, status int64, n int) error {
	sig := q.sig[:0]
	for j, shaping := range q.proj.shaping {
		if k := q.slots[j]; shaping && k > 0 {
			a := attrs[k-1]
			sig = binary.AppendUvarint(sig, uint64(j))
			sig = append(sig, byte(a.kind))
			sig = binary.AppendUvarint(sig, uint64(len(a.val)))
			sig = append(sig, a.val...)
		}
	}
	q.sig = sig
	if e := q.sigs[string(sig)]; e != nil {
		e.count(status, n)
		return nil
	}
	e, err := q.entry(attrs)
	if err != nil {
		return err
	}
	if len(q.sigs) < q.src.cfg.MaxSignatures {
		q.sigs[string(sig)] = e
	}
	e.count(status, n)
	return nil
}

// entry works out the shape of a job not seen before.
func (q *queue) entry(attrs []rawAttr) (*sigEntry, error) {
	q.picked = q.picked[:0]
	for j, shaping := range q.proj.shaping {
		if k := q.slots[j]; shaping && k > 0 {
			q.picked = append(q.picked, attrs[k-1])
		}
	}
	job, err := q.src.exprs.buildAd(q.picked)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", q.jobID(attrs), err)
	}
	key, reason := q.src.shapeOf(job)
	if reason != "" {
		uk := unmatchKey{group: key.group, reason: reason}
		u := q.unmatch[uk]
		if u == nil {
			u = &unmatchAcc{key: uk, example: q.jobID(attrs)}
			q.unmatch[uk] = u
		}
		return &sigEntry{unmatch: u}, nil
	}
	acc := q.shapes[key]
	if acc == nil {
		acc = &shapeAcc{key: key}
		q.shapes[key] = acc
	}
	if len(acc.reps) < maxReps {
		acc.reps = append(acc.reps, job)
	}
	return &sigEntry{shape: acc}, nil
}

// jobID is "cluster.proc" for messages; for a group row, the first of
// its JobIds.
func (q *queue) jobID(attrs []rawAttr) string {
	if q.slots[q.proj.cluster] == 0 && q.rowIDs != "" {
		if f := strings.Fields(q.rowIDs); len(f) > 0 && len(f[0]) <= 32 {
			return f[0]
		}
	}
	id := func(j int) string {
		if k := q.slots[j]; k > 0 {
			if n, ok := rawInt(attrs[k-1].kind, attrs[k-1].val); ok {
				return strconv.FormatInt(n, 10)
			}
		}
		return "?"
	}
	return id(q.proj.cluster) + "." + id(q.proj.procID)
}

// shapeOf works out a job's shape from its ad, or why no VM Canopy boots
// could run it. key.group is set in both cases.
func (s *Source) shapeOf(job *classad.Ad) (shapeKey, string) {
	var key shapeKey
	group, err := s.groupOf(job)
	if err != "" {
		return key, err
	}
	key.group = group

	cpus, ok, bad := evalNumber(job, "RequestCpus")
	switch {
	case bad:
		return key, "RequestCpus is not a number"
	case !ok || cpus < 1:
		cpus = 1
	}
	mem, ok, bad := evalNumber(job, "RequestMemory")
	if bad || !ok {
		return key, "RequestMemory is undefined or not a number"
	}
	disk, ok, bad := evalNumber(job, "RequestDisk")
	if bad || !ok {
		return key, "RequestDisk is undefined or not a number"
	}
	if cpus > 1<<16 || mem > 1<<40 || disk > 1<<50 || mem < 0 || disk < 0 {
		return key, "RequestCpus, RequestMemory or RequestDisk is out of range"
	}
	key.cpus, key.memMiB, key.diskKiB = int(math.Ceil(cpus)), int(math.Ceil(mem)), int64(math.Ceil(disk))

	// cloudscheduler's attributes: the VM must also hold what they ask.
	if v, ok, _ := evalNumber(job, "VMMem"); ok && v > float64(key.memMiB) && v <= 1<<40 {
		key.memMiB = int(math.Ceil(v))
	}
	if v, ok, _ := evalNumber(job, "VMStorage"); ok && v > 0 && v <= 1<<30 {
		key.diskKiB = max(key.diskKiB, int64(math.Ceil(v*1024*1024)))
	}
	if v, ok, _ := evalNumber(job, "VMCPUCores"); ok && v >= 1 && v <= 1<<16 {
		cores := int(v)
		if evalBool(job, "VMJobPerCore") {
			key.jobsPerVM = max(1, cores/key.cpus)
		} else {
			key.cpus = max(key.cpus, cores)
		}
	}

	var why string
	if key.image, why = evalName(job, "VMImage", "VMAMI", "VMLoc"); why != "" {
		return key, why
	}
	if key.flavor, why = evalName(job, "VMInstanceType"); why != "" {
		return key, why
	}
	if key.clouds, why = evalClouds(job); why != "" {
		return key, why
	}
	if key.keepAlive, why = evalDuration(job, "VMKeepAlive"); why != "" {
		return key, why
	}
	if key.maxLifetime, why = evalDuration(job, "VMMaxLifetime"); why != "" {
		return key, why
	}
	// RequestHS06PerCore is read only when the config lists it among
	// ExtraJobAttributes (the recorded condor_q commands stay as they
	// are); unread, it is undefined and the job accepts any rating.
	if v, ok, bad := evalNumber(job, "RequestHS06PerCore"); bad || ok && !(v > 0 && v <= maxHS06PerCore) {
		return key, fmt.Sprintf("RequestHS06PerCore is not an HS06 rating per core (above 0, at most %d)", maxHS06PerCore)
	} else if ok {
		key.minHS06 = v
	}
	// Preemptible too is read only when listed in ExtraJobAttributes.
	key.preemptible = evalBool(job, "Preemptible")

	sz := size{cpus: key.cpus, memMiB: key.memMiB, diskKiB: key.diskKiB}
	names := s.cfg.Attributes
	if t, ok := job.Eval(names.VMType).Str(); ok {
		vt := s.typeByName[t]
		if vt == nil {
			return key, fmt.Sprintf("VM type %s is not configured", clip(t, 64))
		}
		if r := matchReason(job, vt.machineAd(names, group, sz), vt.name); r != "" {
			return key, r
		}
		key.vmType = vt.name
		return key, ""
	} else if v := job.Eval(names.VMType); !v.IsUndefined() {
		return key, names.VMType + " is not a string"
	}
	var matched []string
	for _, vt := range s.types {
		if classad.Match(job, vt.machineAd(names, group, sz)) {
			matched = append(matched, vt.name)
		}
	}
	switch {
	case len(matched) == 0:
		return key, "matches none of the VM types (" + strings.Join(s.typeNames(), ", ") + ")"
	case slices.Contains(matched, s.cfg.DefaultVMType):
		key.vmType = s.cfg.DefaultVMType
	default:
		key.vmType = matched[0]
	}
	return key, ""
}

// groupNameRE is a group name Canopy accepts (it is written on servers).
var groupNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// groupOf is the job's owner group: the first of the configured attributes
// that is a non-empty string. AccountingGroup ("group.user") loses its user.
func (s *Source) groupOf(job *classad.Ad) (string, string) {
	for _, attr := range s.cfg.GroupAttributes {
		v, ok := job.Eval(attr).Str()
		if !ok || v == "" {
			continue
		}
		if strings.EqualFold(attr, "AccountingGroup") {
			if i := strings.LastIndexByte(v, '.'); i > 0 {
				v = v[:i]
			}
		}
		if !groupNameRE.MatchString(v) {
			return "", fmt.Sprintf("group %s (from %s) is not a group name", clip(v, 64), attr)
		}
		return v, ""
	}
	return "", "no group: none of " + strings.Join(s.cfg.GroupAttributes, ", ") + " is set"
}

// evalNumber evaluates attribute name of job on its own: its value, whether
// it is a number, and whether it is something other than a number or
// undefined.
func evalNumber(job *classad.Ad, name string) (v float64, ok, bad bool) {
	val := job.Eval(name)
	if f, ok := val.Number(); ok {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, false, true
		}
		return f, true, false
	}
	if b, ok := val.Bool(); ok { // ClassAd booleans act as 0/1
		if b {
			return 1, true, false
		}
		return 0, true, false
	}
	return 0, false, !val.IsUndefined()
}

// evalBool reads a boolean attribute; the strings "true"/"True" count, as
// cloudscheduler took them.
func evalBool(job *classad.Ad, name string) bool {
	v := job.Eval(name)
	if b, ok := v.Bool(); ok {
		return b
	}
	if s, ok := v.Str(); ok {
		return strings.EqualFold(s, "true")
	}
	if f, ok := v.Number(); ok {
		return f != 0
	}
	return false
}

// nameRE is an image, flavor or cloud name.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/@+=-]{0,254}$`)

// evalName returns the first of the attributes that is a string.
func evalName(job *classad.Ad, attrs ...string) (string, string) {
	for _, a := range attrs {
		v := job.Eval(a)
		if v.IsUndefined() {
			continue
		}
		s, ok := v.Str()
		if !ok || !nameRE.MatchString(s) {
			return "", fmt.Sprintf("%s %s is not a name", a, clip(v.String(), 64))
		}
		return s, ""
	}
	return "", ""
}

// evalClouds reads TargetClouds: a string of names separated by commas or
// spaces, or a list of strings. The result is sorted and comma-separated.
func evalClouds(job *classad.Ad) (string, string) {
	v := job.Eval("TargetClouds")
	var names []string
	if s, ok := v.Str(); ok {
		names = strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	} else if l, ok := v.List(); ok {
		for _, e := range l {
			s, ok := e.Str()
			if !ok {
				return "", "TargetClouds is not a list of names"
			}
			names = append(names, s)
		}
	} else if !v.IsUndefined() {
		return "", "TargetClouds is not a string"
	}
	for _, n := range names {
		if !nameRE.MatchString(n) {
			return "", fmt.Sprintf("TargetClouds entry %s is not a cloud name", clip(n, 64))
		}
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ","), ""
}

// evalDuration reads a duration attribute: a number is minutes (as
// cloudscheduler's VMKeepAlive), a string a Go duration ("90m", "2h").
func evalDuration(job *classad.Ad, name string) (time.Duration, string) {
	v := job.Eval(name)
	if v.IsUndefined() {
		return 0, ""
	}
	if f, ok := v.Number(); ok {
		if f < 0 || f > 1e7 || math.IsNaN(f) {
			return 0, fmt.Sprintf("%s %s is out of range", name, v.String())
		}
		return time.Duration(f * float64(time.Minute)).Round(time.Second), ""
	}
	if s, ok := v.Str(); ok {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, fmt.Sprintf("%s %s is not a duration", name, clip(s, 64))
		}
		return d, ""
	}
	return 0, fmt.Sprintf("%s %s is neither minutes nor a duration", name, clip(v.String(), 64))
}
