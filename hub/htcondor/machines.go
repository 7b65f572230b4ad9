package htcondor

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/hub/classad"
	"github.com/canopy-grid/canopy/hub/demand"
)

// slotAttributes are the slot-ad attributes read besides vmagent's, the VM
// types' machine-ad attributes and the configured extras.
var slotAttributes = []string{
	"MyType", "Name", "Machine", "SlotType", "State", "Activity",
	"Cpus", "Memory", "Disk", "GPUs", "TotalSlotCpus", "TotalSlotMemory", "TotalSlotDisk",
	"Draining", "JobId", "RemoteOwner", "JobStarts", "DaemonStartTime", "LastHeardFrom",
	"Start", "Requirements", "WithinResourceLimits",
}

// slot is one slot ad of a Canopy VM.
type slot struct {
	ad                        *classad.Ad
	name, host                string
	slotType, state, activity string
	cpus, memMiB              int
	diskKiB                   int64
	draining                  bool
	jobStarts                 int
	daemonStart, lastHeard    int64
}

// partitionable reports whether the slot is a partitionable one.
func (s *slot) partitionable() bool { return strings.EqualFold(s.slotType, "Partitionable") }

// dynamic reports whether the slot is a dynamic (claimed part of a
// partitionable) one.
func (s *slot) dynamic() bool { return strings.EqualFold(s.slotType, "Dynamic") }

// readSlots streams condor_status -json output into slots by VM name. Ads
// without the VM-name attribute (not Canopy VMs) are skipped.
func (s *Source) readSlots(r io.Reader, out map[string][]*slot) error {
	st := newAdStream(r, s.cfg.MaxAdBytes)
	for {
		attrs, err := st.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		ad, err := s.exprs.buildAd(attrs)
		if err != nil {
			return &DecodeError{Offset: st.base + int64(st.pos), Ad: st.ads - 1, Msg: "slot ad: " + err.Error()}
		}
		vm, ok := ad.Eval(s.cfg.Attributes.VMName).Str()
		if !ok || vm == "" {
			continue
		}
		if !vmNameRE.MatchString(vm) {
			return &DecodeError{Offset: st.base + int64(st.pos), Ad: st.ads - 1,
				Msg: fmt.Sprintf("slot ad: %s %s is not a VM name", s.cfg.Attributes.VMName, clip(vm, 64))}
		}
		sl := &slot{ad: ad}
		sl.name, _ = ad.Eval("Name").Str()
		sl.host, _ = ad.Eval("Machine").Str()
		sl.slotType, _ = ad.Eval("SlotType").Str()
		sl.state, _ = ad.Eval("State").Str()
		sl.activity, _ = ad.Eval("Activity").Str()
		sl.cpus = int(evalInt(ad, "Cpus"))
		sl.memMiB = int(evalInt(ad, "Memory"))
		sl.diskKiB = evalInt(ad, "Disk")
		sl.draining = ad.Eval("Draining").IsTrue()
		sl.jobStarts = int(evalInt(ad, "JobStarts"))
		sl.daemonStart = evalInt(ad, "DaemonStartTime")
		sl.lastHeard = evalInt(ad, "LastHeardFrom")
		out[vm] = append(out[vm], sl)
	}
}

// evalInt evaluates a numeric attribute, 0 when it is not a number.
func evalInt(ad *classad.Ad, name string) int64 {
	f, ok := ad.Eval(name).Number()
	if !ok || f != f || f > 1<<53 || f < -(1<<53) {
		return 0
	}
	return int64(f)
}

// MachineInfo is what the pool shows of one Canopy VM.
type MachineInfo struct {
	VMName string `json:"vm_name"`
	VMID   string `json:"vm_id,omitempty"`
	Site   string `json:"site,omitempty"`
	Group  string `json:"group,omitempty"`
	VMType string `json:"vm_type,omitempty"`
	// Host is the slots' Machine; Startd the startd's daemon name (what a
	// slot's Name holds after "slotN@").
	Host   string `json:"host"`
	Startd string `json:"startd"`
	// State is idle, busy or draining (a VM with no startd has no entry).
	State       demand.MachineState `json:"state"`
	RunningJobs int                 `json:"running_jobs"`
	Slots       int                 `json:"slots"`
	// FreeCpus, FreeMemoryMiB and FreeDiskKiB are the unclaimed part of the
	// VM's slots that can still take an idle job; zero when the VM is
	// draining or no idle job could match what is left (such a VM is no
	// capacity for the planner).
	FreeCpus      int   `json:"free_cpus"`
	FreeMemoryMiB int   `json:"free_memory_mib"`
	FreeDiskKiB   int64 `json:"free_disk_kib"`
	// TakesIdle is true when some idle job would match one of the VM's
	// unclaimed slots now.
	TakesIdle bool `json:"takes_idle"`
	// RegisteredAt is when the startd started (DaemonStartTime);
	// LastHeardFrom when the collector last heard of it.
	RegisteredAt  time.Time `json:"registered_at"`
	LastHeardFrom time.Time `json:"last_heard_from"`
	IdleSince     time.Time `json:"idle_since,omitzero"`
	JobsStarted   int       `json:"jobs_started"`
}

// maxCapacityChecks bounds the matches tried to tell whether VMs can take
// idle jobs, per poll.
const maxCapacityChecks = 200000

// machines turns slots into one MachineInfo per VM. idleJobs are
// representative ads of the idle shapes; pool says which VMs the hub has
// told to retire.
func (s *Source) machines(slots map[string][]*slot, pool []demand.PoolVM, idleJobs []*classad.Ad, now time.Time) []MachineInfo {
	retiring := map[string]bool{}
	for _, p := range pool {
		if p.Retiring {
			retiring[p.Name] = true
		}
	}
	names := s.cfg.Attributes
	checks := 0
	out := make([]MachineInfo, 0, len(slots))
	for _, vm := range slices.Sorted(maps.Keys(slots)) {
		ss := slots[vm]
		first := ss[0].ad
		m := MachineInfo{VMName: vm, Slots: len(ss), Host: ss[0].host, Startd: startdName(ss[0].name)}
		m.VMID, _ = first.Eval(names.VMID).Str()
		m.Site, _ = first.Eval(names.Site).Str()
		m.Group, _ = first.Eval(names.Group).Str()
		m.VMType, _ = first.Eval(names.VMType).Str()
		draining := retiring[vm]
		var registered, heard int64
		for _, sl := range ss {
			if sl.draining || strings.EqualFold(sl.state, "Drained") || strings.EqualFold(sl.activity, "Retiring") {
				draining = true
			}
			if !sl.partitionable() && strings.EqualFold(sl.state, "Claimed") {
				m.RunningJobs++
			}
			if !sl.dynamic() {
				m.JobsStarted += sl.jobStarts
			}
			if sl.daemonStart > 0 && (registered == 0 || sl.daemonStart < registered) {
				registered = sl.daemonStart
			}
			heard = max(heard, sl.lastHeard)
		}
		if registered > 0 {
			m.RegisteredAt = time.Unix(registered, 0).UTC()
		}
		if heard > 0 {
			m.LastHeardFrom = time.Unix(heard, 0).UTC()
		}
		if !draining {
			for _, sl := range ss {
				if sl.dynamic() || (!sl.partitionable() && !strings.EqualFold(sl.state, "Unclaimed")) {
					continue
				}
				takes := false
				for _, job := range idleJobs {
					if checks >= maxCapacityChecks {
						break
					}
					checks++
					if classad.Match(job, sl.ad) {
						takes = true
						break
					}
				}
				if takes {
					m.TakesIdle = true
					m.FreeCpus += max(sl.cpus, 0)
					m.FreeMemoryMiB += max(sl.memMiB, 0)
					m.FreeDiskKiB += max(sl.diskKiB, 0)
				}
			}
		}
		switch {
		case draining:
			m.State = demand.MachineDraining
		case m.RunningJobs > 0:
			m.State = demand.MachineBusy
		default:
			m.State = demand.MachineIdle
		}
		out = append(out, m)
	}
	s.trackIdle(out, now)
	return out
}

// trackIdle sets IdleSince from what earlier polls saw: when a VM was first
// seen idle after running jobs; for a VM that never ran one, when its startd
// started; for a VM first seen idle (after a hub restart), now.
func (s *Source) trackIdle(ms []MachineInfo, now time.Time) {
	seen := make(map[string]bool, len(ms))
	for i := range ms {
		m := &ms[i]
		seen[m.VMName] = true
		if m.State == demand.MachineBusy {
			delete(s.idleSince, m.VMName)
			continue
		}
		t, ok := s.idleSince[m.VMName]
		if !ok {
			t = now
			if m.JobsStarted == 0 && !m.RegisteredAt.IsZero() && m.RegisteredAt.Before(now) {
				t = m.RegisteredAt
			}
			s.idleSince[m.VMName] = t
		}
		m.IdleSince = t
	}
	for vm := range s.idleSince {
		if !seen[vm] {
			delete(s.idleSince, vm)
		}
	}
}

// startdName is the startd's daemon name in a slot name: "slot1@host" and
// "slot1_3@host" give "host", "slot1@worker1@host" gives "worker1@host".
func startdName(slotName string) string {
	if i := strings.IndexByte(slotName, '@'); i >= 0 && strings.HasPrefix(strings.ToLower(slotName), "slot") {
		return slotName[i+1:]
	}
	return slotName
}

// toDemand is the planner's view of the machines.
func toDemand(ms []MachineInfo) map[string]demand.Machine {
	out := make(map[string]demand.Machine, len(ms))
	for _, m := range ms {
		// Free is the unclaimed part of the VM's partitionable (or
		// unclaimed static) slots that an idle job would match now.
		out[m.VMName] = demand.Machine{VMName: m.VMName, State: m.State, RunningJobs: m.RunningJobs,
			IdleSince: idleTime(m), JobsStarted: m.JobsStarted, FreeCpus: m.FreeCpus, FreeMemoryMiB: m.FreeMemoryMiB}
	}
	return out
}

func idleTime(m MachineInfo) time.Time {
	if m.State == demand.MachineBusy {
		return time.Time{}
	}
	return m.IdleSince
}

// sortMachines orders machines by VM name.
func sortMachines(ms []MachineInfo) {
	slices.SortFunc(ms, func(a, b MachineInfo) int { return strings.Compare(a.VMName, b.VMName) })
}
