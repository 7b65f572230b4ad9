// Package trace is a SIMULATED job source: it reads a workload file (job
// shapes, how many arrive when, how long each runs) and plays HTCondor's
// part on the VMs that are really up, starting jobs on ready VMs with free
// cores and memory and finishing them when their run time has passed.
//
// It exists for the demo, the end-to-end tests and trying policies without
// a batch system. It is not HTCondor: no matchmaking beyond group, VM type
// and size, no priorities, no preemption. The real source is hub/htcondor.
package trace

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/hub/demand"
	"github.com/canopy-grid/canopy/hub/planner"
)

// Workload is the file format.
//
//	jobs:
//	  - group: atlas          # job group (HTCondor accounting group)
//	    vm_type: default      # VM type the jobs need
//	    cpus: 1
//	    memory_mib: 2048
//	    disk_kib: 1048576     # optional
//	    clouds: [west]        # optional: only these sites
//	    arrivals:
//	      - at: 0s            # trace time after start
//	        count: 10
//	        runtime: 30s      # trace time each job runs
//	pool_outages:             # optional
//	  - {at: 2m, for: 5m}     # the collector lists no machine for 5 min
type Workload struct {
	Jobs []JobSpec `yaml:"jobs"`
	// PoolOutages are times when the simulated collector lists no machine
	// (an empty pool view, without an error) while jobs go on running
	// where they are; nothing new starts meanwhile.
	PoolOutages []PoolOutage `yaml:"pool_outages"`
}

// PoolOutage is one stretch of trace time with an empty pool view.
type PoolOutage struct {
	At  time.Duration `yaml:"at"`
	For time.Duration `yaml:"for"`
}

// poolDown reports whether the pool view is empty at trace time t.
func (w Workload) poolDown(t time.Duration) bool {
	for _, o := range w.PoolOutages {
		if t >= o.At && t < o.At+o.For {
			return true
		}
	}
	return false
}

// JobSpec is one job shape and its arrivals.
type JobSpec struct {
	Group     string    `yaml:"group"`
	VMType    string    `yaml:"vm_type"`
	Cpus      int       `yaml:"cpus"`
	MemoryMiB int       `yaml:"memory_mib"`
	DiskKiB   int64     `yaml:"disk_kib"`
	Clouds    []string  `yaml:"clouds"`
	Arrivals  []Arrival `yaml:"arrivals"`
}

// Arrival is a batch of jobs submitted together.
type Arrival struct {
	At      time.Duration `yaml:"at"`
	Count   int           `yaml:"count"`
	Runtime time.Duration `yaml:"runtime"`
}

// Load reads and checks a workload file.
func Load(path string) (Workload, error) {
	var w Workload
	if err := config.Load(path, &w); err != nil {
		return w, err
	}
	return w, w.Validate()
}

// Validate checks a workload.
func (w Workload) Validate() error {
	if len(w.Jobs) == 0 {
		return fmt.Errorf("workload has no jobs")
	}
	for i, j := range w.Jobs {
		if j.Group == "" || j.VMType == "" {
			return fmt.Errorf("jobs[%d]: group and vm_type are required", i)
		}
		if j.Cpus <= 0 || j.MemoryMiB <= 0 {
			return fmt.Errorf("jobs[%d]: cpus and memory_mib must be positive", i)
		}
		for k, a := range j.Arrivals {
			if a.Count <= 0 || a.Runtime <= 0 || a.At < 0 {
				return fmt.Errorf("jobs[%d].arrivals[%d]: count and runtime must be positive, at not negative", i, k)
			}
		}
	}
	for i, o := range w.PoolOutages {
		if o.At < 0 || o.For <= 0 {
			return fmt.Errorf("pool_outages[%d]: for must be positive, at not negative", i)
		}
	}
	return nil
}

// Total is the number of jobs in the workload.
func (w Workload) Total() int {
	n := 0
	for _, j := range w.Jobs {
		for _, a := range j.Arrivals {
			n += a.Count
		}
	}
	return n
}

// Config selects a workload file for the hub's demand section.
type Config struct {
	// File is the workload file.
	File string `yaml:"file"`
	// TimeScale is how many seconds of trace time pass per real second.
	TimeScale float64 `yaml:"time_scale"`
}

// Source simulates a pool running a workload. Scale is how many seconds of
// trace time pass per real second (1 = real time).
type Source struct {
	mu    sync.Mutex
	w     Workload
	scale float64
	start time.Time

	released []int // per job spec: arrivals released so far
	idle     [][]batch
	runs     []run
	vms      map[string]*vmState
	finished int
}

type batch struct {
	count   int
	runtime time.Duration
}

type run struct {
	vm      string
	shape   int
	end     time.Time
	runtime time.Duration
}

type vmState struct {
	usedCpus, usedMem int
	running           int
	started           int
	idleSince         time.Time
}

// New returns a simulated pool for w.
func New(w Workload, scale float64) (*Source, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if scale <= 0 {
		scale = 1
	}
	return &Source{w: w, scale: scale, released: make([]int, len(w.Jobs)), idle: make([][]batch, len(w.Jobs)), vms: map[string]*vmState{}}, nil
}

// SimulatesPool tells the hub this source needs its VM list at every poll.
func (s *Source) SimulatesPool() bool { return true }

// Done reports whether every job of the workload has finished.
func (s *Source) Done() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finished == s.w.Total()
}

// Poll advances the simulation to now and returns the demand.
func (s *Source) Poll(_ context.Context, now time.Time, pool []demand.PoolVM) (demand.Demand, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.IsZero() {
		s.start = now
	}
	elapsed := time.Duration(float64(now.Sub(s.start)) * s.scale)

	// Arrivals.
	for i, j := range s.w.Jobs {
		for s.released[i] < len(j.Arrivals) && j.Arrivals[s.released[i]].At <= elapsed {
			a := j.Arrivals[s.released[i]]
			s.idle[i] = append(s.idle[i], batch{a.Count, a.Runtime})
			s.released[i]++
		}
	}

	byName := make(map[string]demand.PoolVM, len(pool))
	for _, p := range pool {
		byName[p.Name] = p
	}
	// Completions, and evictions from VMs that are gone.
	kept := s.runs[:0]
	for _, r := range s.runs {
		_, alive := byName[r.vm]
		switch {
		case !r.end.After(now):
			s.finished++
			s.release(r, r.end)
		case !alive:
			s.idle[r.shape] = append([]batch{{1, r.runtime}}, s.idle[r.shape]...)
			s.release(r, now)
		default:
			kept = append(kept, r)
		}
	}
	s.runs = kept
	for name := range s.vms {
		if _, ok := byName[name]; !ok {
			delete(s.vms, name)
		}
	}

	// Matchmaking: ready, non-retiring VMs take jobs of their group and
	// type; none while the collector is out.
	down := s.w.poolDown(elapsed)
	names := make([]string, 0, len(pool))
	for _, p := range pool {
		if p.Ready && !down {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		p := byName[name]
		st := s.vms[name]
		if st == nil {
			st = &vmState{idleSince: now}
			s.vms[name] = st
		}
		if p.Retiring {
			continue
		}
		for i, j := range s.w.Jobs {
			if j.Group != p.Group || j.VMType != p.VMType || (len(j.Clouds) > 0 && !slices.Contains(j.Clouds, p.Site)) {
				continue
			}
			for len(s.idle[i]) > 0 && p.Cpus-st.usedCpus >= j.Cpus && p.MemoryMiB-st.usedMem >= j.MemoryMiB {
				b := &s.idle[i][0]
				st.usedCpus += j.Cpus
				st.usedMem += j.MemoryMiB
				st.running++
				st.started++
				st.idleSince = time.Time{}
				s.runs = append(s.runs, run{vm: name, shape: i, runtime: b.runtime, end: now.Add(time.Duration(float64(b.runtime) / s.scale))})
				b.count--
				if b.count == 0 {
					s.idle[i] = s.idle[i][1:]
				}
			}
		}
	}

	d := demand.Demand{Machines: make(map[string]demand.Machine, len(s.vms)), Finished: s.finished, TakenAt: now}
	running := make([]int, len(s.w.Jobs))
	for _, r := range s.runs {
		running[r.shape]++
	}
	for i, j := range s.w.Jobs {
		idle := 0
		for _, b := range s.idle[i] {
			idle += b.count
		}
		if idle == 0 && running[i] == 0 {
			continue
		}
		d.Shapes = append(d.Shapes, planner.Shape{Group: j.Group, VMType: j.VMType, Cpus: j.Cpus, MemoryMiB: j.MemoryMiB,
			DiskKiB: j.DiskKiB, Clouds: j.Clouds, Idle: idle, Running: running[i]})
	}
	for name, st := range s.vms {
		if down {
			break
		}
		p := byName[name]
		m := demand.Machine{VMName: name, RunningJobs: st.running, IdleSince: st.idleSince, JobsStarted: st.started, State: demand.MachineIdle}
		switch {
		case p.Retiring:
			m.State = demand.MachineDraining
		case st.running > 0:
			m.State = demand.MachineBusy
		}
		// What is left free, where an idle job would match it (as the
		// pool's partitionable slot shows it).
		if free, mem := p.Cpus-st.usedCpus, p.MemoryMiB-st.usedMem; !p.Retiring && s.takesIdle(p, free, mem) {
			m.FreeCpus, m.FreeMemoryMiB = free, mem
		}
		d.Machines[name] = m
	}
	slices.SortFunc(d.Shapes, func(a, b planner.Shape) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.VMType, b.VMType))
	})
	return d, nil
}

// takesIdle reports whether an idle job would fit in a VM's free part.
func (s *Source) takesIdle(p demand.PoolVM, cpus, mem int) bool {
	for i, j := range s.w.Jobs {
		if len(s.idle[i]) > 0 && j.Group == p.Group && j.VMType == p.VMType && j.Cpus <= cpus && j.MemoryMiB <= mem &&
			(len(j.Clouds) == 0 || slices.Contains(j.Clouds, p.Site)) {
			return true
		}
	}
	return false
}

func (s *Source) release(r run, at time.Time) {
	st := s.vms[r.vm]
	if st == nil {
		return
	}
	j := s.w.Jobs[r.shape]
	st.usedCpus -= j.Cpus
	st.usedMem -= j.MemoryMiB
	st.running--
	if st.running == 0 {
		st.idleSince = at
	}
}
