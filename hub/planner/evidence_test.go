package planner

import (
	"testing"
	"time"
)

// TestEvidence: unknown is not idle. A VM whose evidence is unknown keeps
// its last known state as capacity and goes only by an admin's deadline;
// come-alive counts fresh unregistered time, not age.
func TestEvidence(t *testing.T) {
	west := []Cloud{testCloud("west", 0)}
	mk := func(id string, state VMState, ev Evidence, f func(*VM)) VM {
		vm := testVM(id, "west", "a", state, 1)
		vm.Evidence = ev
		if ev == EvidenceUnknown {
			vm.Why = "cloud not reporting"
		}
		f(&vm)
		return vm
	}
	none := func(*VM) {}
	oldIdle := func(vm *VM) { vm.IdleSince = t0.Add(-time.Hour) }
	runCases(t, []planCase{
		{name: "unknown idle VM past keep-alive and job-alive is kept",
			s: snap(west, nil, []VM{
				mk("u", VMIdle, EvidenceUnknown, func(vm *VM) {
					vm.IdleSince, vm.JobsStarted, vm.RegisteredAt = t0.Add(-time.Hour), 0, t0.Add(-time.Hour)
				}),
				mk("r", VMIdle, EvidenceRegistered, oldIdle),
			}),
			actions: "retire:keep-alive:r"},
		{name: "unknown starting VM is not deleted by come-alive",
			s: snap(west, nil, []VM{
				mk("u", VMStarting, EvidenceUnknown, func(vm *VM) { vm.CreatedAt = t0.Add(-5 * time.Hour); vm.Unregistered = 3 * time.Hour }),
			})},
		{name: "come-alive counts fresh unregistered time, not age",
			s: snap(west, nil, []VM{
				mk("fresh", VMStarting, EvidenceUnregistered, func(vm *VM) { vm.CreatedAt = t0.Add(-5 * time.Hour); vm.Unregistered = 2 * time.Hour }),
				mk("stale", VMStarting, EvidenceUnregistered, func(vm *VM) { vm.CreatedAt = t0.Add(-5 * time.Hour); vm.Unregistered = time.Hour }),
				mk("boot", VMBooting, EvidenceUnregistered, func(vm *VM) { vm.CreatedAt = t0.Add(-3 * time.Hour); vm.Unregistered = 2 * time.Hour }),
			}),
			actions: "delete:come-alive:boot delete:come-alive:fresh"},
		{name: "unknown deadline retires gracefully, even busy",
			s: snap(west, nil, []VM{
				mk("past", VMBusy, EvidenceUnknown, func(vm *VM) { vm.UnknownFor = 24 * time.Hour }),
				mk("young", VMBusy, EvidenceUnknown, func(vm *VM) { vm.UnknownFor = 23 * time.Hour }),
				mk("err", VMError, EvidenceUnknown, func(vm *VM) { vm.UnknownFor = 25 * time.Hour }),
			}),
			actions: "retire:unknown-deadline:err retire:unknown-deadline:past"},
		{name: "unknown deadline off",
			s: with(snap(west, nil, []VM{
				mk("past", VMIdle, EvidenceUnknown, func(vm *VM) { vm.UnknownFor = 100 * time.Hour }),
			}), func(s *Snapshot) { s.Config.UnknownDeadline = -1 })},
		{name: "unknown VM in error is not deleted by the error delay",
			s: snap(west, nil, []VM{
				mk("u", VMError, EvidenceUnknown, func(vm *VM) { vm.ErrorSince = t0.Add(-time.Hour) }),
				mk("k", VMError, EvidenceUnregistered, func(vm *VM) { vm.ErrorSince = t0.Add(-time.Hour) }),
			}),
			actions: "delete:error-delay:k"},
		{name: "unknown retiring VM past its retire deadline is deleted",
			s: snap(west, nil, []VM{
				mk("u", VMRetiring, EvidenceUnknown, func(vm *VM) { vm.RetiringSince = t0.Add(-25 * time.Hour) }),
			}),
			actions: "delete:retire-timeout:u"},
		{name: "unknown VM past its max lifetime is retired",
			s: with(snap(west, nil, []VM{
				mk("u", VMIdle, EvidenceUnknown, func(vm *VM) { vm.CreatedAt = t0.Add(-13 * time.Hour) }),
			}), func(s *Snapshot) { s.Config.MaxLifetime = 12 * time.Hour }),
			actions: "retire:max-lifetime:u"},
		{name: "unknown VMs on a disabled cloud are kept",
			s: snap([]Cloud{func() Cloud { c := testCloud("west", 0); c.Disabled = true; return c }()}, nil, []VM{
				mk("u", VMIdle, EvidenceUnknown, oldIdle), mk("k", VMIdle, EvidenceRegistered, oldIdle),
			}),
			actions: "retire:cloud-disabled:k"},
		{name: "over quota: unknown VMs count as busy",
			s: snap([]Cloud{func() Cloud { c := testCloud("west", 0); c.Caps.VMs = 1; return c }()}, nil, []VM{
				mk("u1", VMIdle, EvidenceUnknown, oldIdle), mk("u2", VMStarting, EvidenceUnknown, none),
				mk("k", VMIdle, EvidenceRegistered, func(vm *VM) { vm.IdleSince = t0 }),
			}),
			actions: "retire:over-quota:k"},
		{name: "over quota past the deadline: unknown VMs retire, never deleted",
			s: with(snap([]Cloud{func() Cloud {
				c := testCloud("west", 0)
				c.Caps.VMs = 1
				c.OverQuotaSince = t0.Add(-2 * time.Hour)
				return c
			}()}, nil, []VM{
				mk("u1", VMStarting, EvidenceUnknown, func(vm *VM) { vm.CreatedAt = t0.Add(-2 * time.Hour) }),
				mk("u2", VMStarting, EvidenceUnknown, none),
			}), func(s *Snapshot) { s.Config.OverQuotaDeadline = time.Hour }),
			actions: "retire:over-quota:u2"},
		{name: "unknown idle VMs are capacity: no replacement boots",
			s: snap(west, []Shape{testShape("a", 1, 2)}, []VM{
				mk("u1", VMIdle, EvidenceUnknown, oldIdle), mk("u2", VMBusy, EvidenceUnknown, func(vm *VM) { vm.FreeCpus, vm.FreeMemoryMiB = 1, 2048 }),
			})},
		{name: "unknown retiring VMs are not capacity",
			s: snap(west, []Shape{testShape("a", 1, 1)}, []VM{
				mk("u1", VMRetiring, EvidenceUnknown, none),
			}),
			boots: "west/a/c1m2×1"},
	})
	t.Run("deadline marks", func(t *testing.T) {
		p := Decide(snap(west, nil, []VM{
			mk("stuck", VMRetiring, EvidenceRegistered, func(vm *VM) { vm.RetiringSince = t0.Add(-25 * time.Hour) }),
			mk("err", VMError, EvidenceUnregistered, func(vm *VM) { vm.ErrorSince = t0.Add(-time.Hour) }),
		}))
		if len(p.Deletes) != 2 || p.Deletes[0].VMID != "err" || p.Deletes[0].Deadline || p.Deletes[1].VMID != "stuck" || !p.Deletes[1].Deadline {
			t.Fatalf("deletes = %+v", p.Deletes)
		}
	})
	t.Run("reasons", func(t *testing.T) {
		p := Decide(snap(west, nil, []VM{mk("u", VMBusy, EvidenceUnknown, func(vm *VM) { vm.UnknownFor = 25 * time.Hour })}))
		want := "state unknown for 25h (cloud not reporting), past unknown deadline 24h; 1 jobs last known may finish within 24h"
		if len(p.Retires) != 1 || p.Retires[0].Reason != want {
			t.Fatalf("retires = %+v", p.Retires)
		}
	})
}
