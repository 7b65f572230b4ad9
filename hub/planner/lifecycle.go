package planner

import (
	"fmt"
	"strings"
	"time"
)

// lifecycle applies the per-VM timers and the disabled-cloud drain. Held
// VMs, and VMs the cloud does not list yet (no ID to act on), are skipped.
// A VM whose evidence is unknown goes only by a deadline an admin set: its
// retire deadline, its maximum lifetime or Config.UnknownDeadline.
func (p *planner) lifecycle() {
	cfg := &p.cfg
	p.pastKeep = make([]bool, len(p.vms))
	p.kept = make([]bool, len(p.vms))
	for i := range p.vms {
		vm := &p.vms[i]
		if vm.Held || vm.ID == "" {
			continue
		}
		var c *Cloud
		if ci := p.vmCl[i]; ci >= 0 {
			c = &p.clouds[ci]
		}
		age := p.now.Sub(vm.CreatedAt)
		busy := vm.RunningJobs > 0 || vm.State == VMBusy
		unknown := vm.Evidence == EvidenceUnknown

		switch vm.State {
		case VMRetiring:
			if !vm.RetiringSince.IsZero() {
				limit := cfg.RetireDeadline + cfg.ErrorDelay
				if d := p.now.Sub(vm.RetiringSince); d >= limit {
					p.removeByDeadline(i, RuleRetireTimeout, fmt.Sprintf("retiring for %s since %s, past retire deadline %s + error delay %s",
						fmtDur(d), p.clock(vm.RetiringSince), fmtDur(cfg.RetireDeadline), fmtDur(cfg.ErrorDelay)))
				}
			}
			continue
		case VMError:
			if unknown {
				p.unknownDeadline(i)
				continue
			}
			since := vm.ErrorSince
			if since.IsZero() {
				since = vm.CreatedAt
			}
			if d := p.now.Sub(since); d >= cfg.ErrorDelay {
				p.remove(i, RuleErrorDelay, fmt.Sprintf("in error for %s since %s, past error delay %s",
					fmtDur(d), p.clock(since), fmtDur(cfg.ErrorDelay)))
			}
			continue
		case VMBooting, VMStarting, VMIdle, VMBusy:
		default:
			continue // a state the planner does not know: leave it be
		}
		notUp := vm.State == VMBooting || vm.State == VMStarting

		if unknown {
			// Only deadlines: the maximum lifetime, then the unknown one.
			if lt, from := p.maxLifetime(vm, c); !notUp && lt > 0 && age >= lt {
				p.retire(i, RuleMaxLifetime, fmt.Sprintf("up %s since %s, reached %smax lifetime %s; state unknown (%s), its jobs may finish within %s",
					fmtDur(age), p.clock(vm.CreatedAt), from, fmtDur(lt), vm.Why, fmtDur(cfg.RetireDeadline)))
				continue
			}
			p.unknownDeadline(i)
			continue
		}

		if c != nil && c.Disabled {
			if busy {
				p.retire(i, RuleDisabled, fmt.Sprintf("cloud %s disabled: draining, %d running jobs may finish within %s",
					c.Site, vm.RunningJobs, fmtDur(cfg.RetireDeadline)))
			} else if notUp {
				p.remove(i, RuleDisabled, fmt.Sprintf("cloud %s disabled: draining, VM not yet registered", c.Site))
			} else {
				p.retire(i, RuleDisabled, fmt.Sprintf("cloud %s disabled: draining", c.Site))
			}
			continue
		}

		if notUp {
			// Come-alive counts time with fresh evidence that the VM is up
			// and not in the pool (its whole age when no evidence is given).
			unreg := vm.Unregistered
			if vm.Evidence == "" {
				unreg = age
			}
			if cfg.ComeAlive > 0 && unreg >= cfg.ComeAlive && !busy {
				p.remove(i, RuleComeAlive, fmt.Sprintf("not registered with the pool for %s since boot at %s, past come-alive %s",
					fmtDur(unreg), p.clock(vm.CreatedAt), fmtDur(cfg.ComeAlive)))
			}
			continue
		}

		if lt, from := p.maxLifetime(vm, c); lt > 0 && age >= lt {
			why := fmt.Sprintf("up %s since %s, reached %smax lifetime %s", fmtDur(age), p.clock(vm.CreatedAt), from, fmtDur(lt))
			if busy {
				why += fmt.Sprintf("; %d running jobs may finish within %s", vm.RunningJobs, fmtDur(cfg.RetireDeadline))
			}
			p.retire(i, RuleMaxLifetime, why)
			continue
		}
		if busy {
			continue
		}
		if cfg.JobAlive > 0 && !vm.RegisteredAt.IsZero() && vm.JobsStarted <= 0 {
			if d := p.now.Sub(vm.RegisteredAt); d >= cfg.JobAlive {
				p.retire(i, RuleJobAlive, fmt.Sprintf("registered %s ago at %s and never started a job, past job-alive %s",
					fmtDur(d), p.clock(vm.RegisteredAt), fmtDur(cfg.JobAlive)))
				continue
			}
		}
		if vm.IdleSince.IsZero() {
			continue
		}
		if keep, _ := p.keepAlive(vm, c); p.now.Sub(vm.IdleSince) >= keep {
			p.pastKeep[i] = true // retired after the shortfall, unless needed
		}
	}
}

// unknownDeadline retires VM i, whose evidence is unknown, once it has been
// unknown for Config.UnknownDeadline.
func (p *planner) unknownDeadline(i int) {
	vm := &p.vms[i]
	if dl := p.cfg.UnknownDeadline; dl > 0 && vm.UnknownFor >= dl {
		p.retire(i, RuleUnknownDeadline, fmt.Sprintf("state unknown for %s (%s), past unknown deadline %s; %d jobs last known may finish within %s",
			fmtDur(vm.UnknownFor), vm.Why, fmtDur(dl), max(0, vm.RunningJobs), fmtDur(p.cfg.RetireDeadline)))
	}
}

// keepAliveRetire retires the idle VMs past their keep-alive that the
// shortfall matching did not give idle jobs to.
func (p *planner) keepAliveRetire() {
	for i := range p.vms {
		if !p.pastKeep[i] || p.kept[i] || p.going[i] {
			continue
		}
		vm := &p.vms[i]
		var c *Cloud
		if ci := p.vmCl[i]; ci >= 0 {
			c = &p.clouds[ci]
		}
		keep, from := p.keepAlive(vm, c)
		p.retire(i, RuleKeepAlive, fmt.Sprintf("idle for %s since %s, past %s keep-alive %s; no idle job needs it",
			fmtDur(p.now.Sub(vm.IdleSince)), p.clock(vm.IdleSince), from, fmtDur(keep)))
	}
}

// keepAlive is a VM's keep-alive and where it comes from: the job's
// setting, else the group's, else the cloud's, else the config's, and never
// below Config.MinKeepAlive.
func (p *planner) keepAlive(vm *VM, c *Cloud) (time.Duration, string) {
	keep, from := p.cfg.KeepAlive, "default"
	switch g := p.groups[vm.Group]; {
	case vm.KeepAlive > 0:
		keep, from = vm.KeepAlive, "job"
	case g != nil && g.g.KeepAlive > 0:
		keep, from = g.g.KeepAlive, "group"
	case c != nil && c.KeepAlive > 0:
		keep, from = c.KeepAlive, "cloud"
	}
	if keep < p.cfg.MinKeepAlive {
		keep, from = p.cfg.MinKeepAlive, "minimum"
	}
	return keep, from
}

// maxLifetime is a VM's maximum lifetime and whose it is ("" for the
// cloud's or config's, "job " for its jobs'): the cloud's setting, else the
// config's, and the jobs' own (VM.MaxLifetime) when that is shorter. Zero
// means none.
func (p *planner) maxLifetime(vm *VM, c *Cloud) (time.Duration, string) {
	lt := p.cfg.MaxLifetime
	if c != nil && c.MaxLifetime > 0 {
		lt = c.MaxLifetime
	}
	if vm.MaxLifetime > 0 && (lt <= 0 || vm.MaxLifetime < lt) {
		return vm.MaxLifetime, "job "
	}
	return lt, ""
}

// retire adds a retirement of VM i to the plan.
func (p *planner) retire(i int, rule Rule, why string) {
	vm := &p.vms[i]
	p.plan.Retires = append(p.plan.Retires, Retire{Site: vm.Site, VMID: vm.ID, Reason: why, Rule: rule, RunningJobs: max(0, vm.RunningJobs)})
	p.leave(i)
}

// remove adds a deletion of VM i to the plan.
func (p *planner) remove(i int, rule Rule, why string) {
	vm := &p.vms[i]
	p.plan.Deletes = append(p.plan.Deletes, Delete{Site: vm.Site, VMID: vm.ID, Reason: why, Rule: rule})
	p.leave(i)
}

// removeByDeadline adds a deletion of VM i that an admin-set deadline
// allows, whatever the VM reports.
func (p *planner) removeByDeadline(i int, rule Rule, why string) {
	vm := &p.vms[i]
	p.plan.Deletes = append(p.plan.Deletes, Delete{Site: vm.Site, VMID: vm.ID, Reason: why, Rule: rule, Deadline: true})
	p.leave(i)
}

// clock formats a time for a reason: the time of day when it is within a
// day of now, the date too otherwise.
func (p *planner) clock(t time.Time) string {
	t = t.UTC()
	if d := p.now.Sub(t); d < 24*time.Hour && d > -24*time.Hour {
		return t.Format("15:04")
	}
	return t.Format("2006-01-02 15:04")
}

// fmtDur formats a duration to the second without zero units: "2h",
// "1h30m", "45s".
func fmtDur(d time.Duration) string {
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
