// Package planner decides what Canopy should do next: from a snapshot of
// demand (idle and running jobs by shape), clouds (flavors, limits, admin
// settings), VMs (state and age) and recent boot failures, Decide returns the
// boots, retirements and deletions to carry out, each with a short reason a
// person can read, plus notes on what it chose not to do and why.
//
// Decide is a pure function: no clock, no I/O, no randomness. The same
// snapshot always gives the same plan, whatever the order of its lists, so
// the policy is tested by tables and properties and replayed by the
// simulator (package sim). State that must outlive one plan (boot failures,
// since when a cloud is over quota) comes in the snapshot; History keeps it
// for the hub.
//
// # Policy
//
// Every rule below has a knob in Config (defaults in brackets; a zero
// Config field means its default).
//
// Shortfall. Idle jobs are first matched, shape by shape, to what their
// group's VMs of the same VM type will provide: booting, starting and idle
// VMs whole, busy VMs only for the free part their startd reports
// (VM.FreeCpus, VM.FreeMemoryMiB). Retiring VMs, VMs in error and VMs on a
// disabled cloud provide nothing. VMs of one group and VM type are
// interchangeable (the VM type fixes the image). Each VM is counted once:
// biggest shapes first, on the smallest VMs they fit, and among VMs of one
// size ready ones (idle, then busy) before starting and booting ones. Only
// the idle jobs left over — the shortfall — are booted for. Running jobs
// keep their VMs and are not demand.
//
// Matching. A shape boots the smallest flavor (by cores, memory, disk,
// name) that holds Shape.JobsPerVM jobs (or the VM type's setting, else
// one); a VM takes as many jobs as fit in it. Clouds are tried in priority
// order (lower Cloud.Priority first, then site name), restricted to
// Shape.Clouds and Group.Clouds (entries may be aliases from
// Snapshot.Aliases); a cloud that is disconnected, disabled, paused,
// frozen, backing off (or backing off for the shape's image), has no
// fitting flavor or no room is skipped and the next one is used.
//
// Limits. Room on a cloud is the smallest of: the cloud's own absolute
// limits less its usage and less Canopy's servers it does not list yet;
// the admin's caps (Cloud.Caps) less Canopy's usage there; the soft quota
// (Cloud.SoftQuota) less foreign usage (Cloud.Foreign) less Canopy's
// usage. Groups have caps over all clouds (Group.Caps) and per cloud
// (Group.CloudCaps). A boot needs room in every one of them. Retiring VMs
// count until they are gone.
//
// Quota tree. Groups may form a tree (Group.Parent: experiment, then
// activities, ...). A group's Caps are then its quota and bound its
// subtree: its own VMs and every subgroup's. A subgroup may borrow: go
// past its own quota by what its siblings' quotas leave unused — the
// siblings with a quota on a resource together never use more than their
// quotas add up to — and always within every ancestor that does not
// borrow (a top group never does). Group.NoBorrow keeps a subgroup within
// its own quota (it still lends). A parent that names no group, or closes
// a cycle, is ignored (groups are linked in name order). A quota lowered
// below use, anywhere in the tree, stops boots for the groups under it at
// once and sheds VMs by the over-quota rule below, reported on the
// quota's owner (the parent, for its subgroups' pool); the tree's top
// bounds are met first. Fair share ignores the tree (shares are per
// group).
//
// HS06. A site may rate its flavors in HS06 per core (Cloud.HS06PerCore,
// Cloud.HS06Default; unrated: 1 per core, so nothing changes without
// ratings). Every limit above has an HS06 resource beside cores, memory and
// servers (Caps.HS06: a VM's HS06 is its cores × its flavor's rating,
// rounded per VM), so quotas, trees included, may be set in HS06. Jobs may
// ask a minimum rating (Shape.MinHS06PerCore): only flavors rated at least
// that are booted for them (the smallest such flavor), and only such VMs
// cover them in the shortfall matching, where the most demanding shapes
// are matched first. Config.ShareIn ShareHS06 makes FairShare count HS06
// instead of cores.
//
// Preemptible capacity. A cloud (Cloud.Preemptible) or some of its flavors
// (Cloud.PreemptibleFlavors) may be taken back by the cloud. Only jobs that
// accept it (Shape.Preemptible, Group.Preemptible) are placed there, and
// they try it first (preemptible clouds before the others, then
// preemptible flavors before the others); VMs there cover only such jobs.
// VMs a preemptible cloud took back (Snapshot.Preemptions) are not boot
// failures; Config.PreemptMax [20] of them within Config.PreemptWindow
// [1 h] back the cloud off for Config.PreemptBackoff [30 min] after the
// last (Plan.Clouds[].Preempted counts them).
//
// Reclaiming. Jobs still waiting after the boots because a cloud they could
// use is full (its room) take back cores that idle VMs hold there: idle
// preemptible VMs first when the jobs do not accept preemptible capacity,
// then idle VMs of other groups that have no idle job and hold more cores
// per unit of share than the waiting group. Only idle VMs with fresh
// evidence, running nothing, not held and not kept for jobs go (RuleReclaim,
// gracefully); never a busy or unknown one. With the VMs already retiring
// there, at most Config.DisruptionBudget [10] percent of a cloud's VMs (at
// least one; Config.DisruptionBudgetVMs sets a number instead) retire at
// once; a note says what waits on the budget. The jobs boot in a later plan,
// once the VMs are gone.
//
// Rate. At most Config.MaxBootsPerCloud [20] servers may be in flight
// (booting, or booted but not yet registered with the pool) per cloud
// endpoint (Cloud.Endpoint; Cloud.MaxInFlight overrides). A group gets no
// boots while max(Config.IdleThrottleMin [10], its busy VMs ×
// Config.IdleThrottlePercent [10] / 100) of its VMs sit idle.
//
// Fairness. Groups take turns, one VM per turn; within a group its shapes
// take turns. With FairRotate [default] the group that has booted fewest
// VMs in this plan goes next, so a group with 300,000 idle jobs cannot
// starve one with 30; with FairShare the group holding the fewest cores
// per unit of Group.Share goes next. Ties go by group name.
//
// Evidence. Canopy deletes a server only on fresh, positive evidence that
// no job runs there, or when a deadline an admin set has passed: unknown
// is not idle. Each VM says what the hub knows of it (VM.Evidence): fresh
// evidence that it is outside the pool (EvidenceUnregistered), fresh
// evidence of its state and jobs in the pool (EvidenceRegistered), or
// nothing reliable (EvidenceUnknown: its cloud is not reporting, the pool
// view failed or is implausible, the pool does not list a VM that reports
// jobs). An unknown VM keeps its last known state: it counts as capacity
// by it, so its jobs are not booted for again elsewhere, but it is never
// idle to retire. It goes only by a deadline: its retire deadline (delete),
// its maximum lifetime, its cloud's or group's over-quota deadline, or,
// unknown for Config.UnknownDeadline [24 h] without a break, a graceful
// retirement (VM.UnknownFor). The timers below count only time with fresh
// evidence: the snapshot builder gives effective IdleSince and
// RegisteredAt, and VM.Unregistered for come-alive. A VM with no Evidence
// is taken at its State's word, as if fresh.
//
// Lifecycle. A VM not registered with the pool for Config.ComeAlive [2 h]
// of fresh evidence since boot is deleted; one registered but without a
// job Config.JobAlive [30 min] after registering is retired (needs
// VM.RegisteredAt); one in
// error Config.ErrorDelay [5 min] is deleted; an idle one is retired after
// its keep-alive — the job's (VM.KeepAlive), else the group's, else the
// cloud's, else Config.KeepAlive [10 min], never below
// Config.MinKeepAlive [2 min] — unless the shortfall matching gives it idle
// jobs (idle VMs past their keep-alive take jobs first, so only the surplus
// goes); one older than its maximum lifetime (Cloud.MaxLifetime,
// else Config.MaxLifetime [none]) is retired even if busy (its jobs may
// finish within Config.RetireDeadline [24 h]); one still retiring
// RetireDeadline + ErrorDelay after it was told is deleted, even if it
// reports jobs (Delete.Deadline).
//
// Failing clouds. n boot failures of a cloud within Config.FailureWindow
// [1 h] (a FailureLog drops them on the next good boot) stop its boots
// until the last failure + min(Config.BackoffBase [1 min] × 2^(n-1),
// Config.BackoffMax [30 min]); failures that are an image's fault
// (ImageScoped) back off only that image on that cloud. A cloud with at
// least Config.FreezeMinUnlisted [1] booted servers missing from its
// listing for Config.FreezeAfter [10 min] is frozen until they show up.
// Jobs go to the next cloud meanwhile.
//
// Admin controls. A paused cloud or group gets no new boots; a disabled
// cloud is drained (VMs not yet registered deleted, the others retired;
// unknown ones wait for evidence or their deadline);
// a held VM is never retired or deleted (it still counts against limits
// and may take jobs). A hold lasts Config.HoldMax [forever] after it was
// put or renewed (the hub's snapshot builder stops marking the VM held). When Canopy's VMs exceed a limit (a cap or quota was
// lowered, or foreign usage grew), there are no boots there, and VMs are
// shed until it fits: idle VMs first, then VMs not yet registered; VMs
// running jobs, and VMs whose evidence is unknown, only once the cloud or
// group has been over for Config.OverQuotaDeadline [never], fewest jobs
// first, and gracefully.
//
// Retirement order. Whenever the planner must choose which VMs go, VMs
// running no job go before VMs running jobs, and within each tier the
// youngest VM goes first (Config.RetireOrder RetireYoungest [default]; its
// cache is coldest and its jobs started last) or the oldest
// (RetireOldest). Held VMs never go.
//
// # Cost
//
// Decide sorts and merges shapes, files VMs by group and VM type and by
// cloud in one pass, and matches idle jobs to VMs by classes of VMs with
// the same free size, so it costs about O(VMs + shapes × clouds + boots ×
// log groups), independent of the number of jobs. Benchmarks (bench_test.go)
// vary jobs, shapes, clouds and VMs one at a time; 300,000 idle jobs in 50
// shapes on 100 clouds with 20,000 VMs plan in about 10 ms of CPU.
package planner
