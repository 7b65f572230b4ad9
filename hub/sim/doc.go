// Package sim replays a workload trace through the planner against
// simulated clouds on a simulated clock, and sums up what happened: VMs
// booted per day, utilisation, job wait times, boots per cloud, failures
// absorbed, and whether any plan broke a limit.
//
// The simulator drives the very planner the hub runs (planner.Decide, with
// planner.History carrying failures and over-quota times between plans),
// builds its snapshots with the hub's own snapshot.Builder — from simulated
// inventories (what each cloud lists, with the VMs' own job counts), the
// simulated pool's view of the VMs and the queue, and an intent.State it
// keeps and reconciles as the hub's control loop does (boots in flight,
// retirement orders, error marks, history) — and carries out plans the way
// agents do (an agent deletes a VM that reports jobs only past a deadline;
// the summary counts any such attempt as a violation). Everything random (boot
// latency, failures, run times) comes from one seeded generator, so a trace
// and a seed always give the same summary. Jobs are kept as counts per
// shape and arrival batch while they wait, so 300,000 idle jobs cost a few
// dozen records; only running jobs are tracked one by one, on their VMs.
//
// # Trace format
//
// A trace is a text file of lines. Each line is a keyword followed by
// key=value fields separated by spaces; '#' starts a comment; blank lines
// are ignored. Durations are Go durations with an added day unit ("90s",
// "15m", "2h30m", "1d12h"); times in the trace ("at", "until") are offsets
// from the start. A range "lo..hi" is drawn uniformly; a single value is
// fixed. Lists are comma-separated. Keywords:
//
//	sim      start=2025-03-01T00:00:00Z duration=7d step=1m seed=1 drain=30d
//	         boot_list_timeout=10m
//	         (duration: how long jobs arrive and events happen; drain: how
//	         much longer to run for the queue to empty, 0 for none;
//	         boot_list_timeout: the hub's, how long a booted server may be
//	         missing from its cloud's listing before the boot is forgotten)
//	config   any planner knob: keep_alive min_keep_alive error_delay
//	         retire_deadline max_boots_per_cloud come_alive job_alive
//	         max_lifetime idle_throttle_min idle_throttle_percent fairness
//	         backoff_base backoff_max failure_window freeze_after
//	         freeze_min_unlisted over_quota_deadline retire_order
//	         unknown_deadline share_in disruption_budget
//	         disruption_budget_vms preempt_max preempt_window
//	         preempt_backoff
//	         (unset knobs keep planner.DefaultConfig's values)
//	flavor   name=c8 cpus=8 memory_mib=32768 disk_gib=160 hs06_per_core=
//	         (hs06_per_core: the flavor's HS06 rating per core on every
//	         cloud; default 1)
//	cloud    site=west priority=0 flavors=c1,c8 (default: all)
//	         cores= ram_mib= instances= (project limits; default none)
//	         caps_cores= caps_ram_mib= caps_vms= soft_cores= soft_ram_mib=
//	         soft_vms= foreign_cores= foreign_ram_mib= foreign_vms=
//	         endpoint= max_in_flight= keep_alive= max_lifetime=
//	         boot=1m..4m (until ACTIVE) register=1m..3m (until the startd
//	         joins) slow=0.02 slow_boot=20m..40m (a fraction of boots are
//	         slow) fail=0.01 (boot command fails: no valid host)
//	         error=0.01 (server goes to ERROR while booting)
//	         never_register=0.005 unlisted=0 unlisted_for=30m (a fraction
//	         of servers is missing from the listing for that long)
//	         bad_images=img1,img2 (boots of these fail: image fault)
//	         paused=false disabled=false connected=true
//	         preemptible=false preemptible_flavors=c1,c2 (only jobs
//	         that accept preemptible capacity are placed there)
//	         count=N (N clouds named site-001 … site-N, same settings)
//	group    name=astro share=1 cores= ram_mib= vms= hs06= clouds=west,east
//	         keep_alive= paused=false parent= borrow=true
//	         preemptible=false (all the group's jobs accept it)
//	         (parent: a group defined by its own line; the caps are then
//	         a quota in a tree, borrow=false keeps the group within its
//	         own; see hub/planner)
//	vmtype   name=multicore group= jobs_per_vm=8
//	alias    name=eu sites=west,north,uni-*   (prefix* names every
//	         cloud whose site starts so)
//	jobs     at=0 every=1h until=3d count=5000 group=astro vm_type=default
//	         cpus=1 memory_mib=2048 disk_kib=0 image= clouds= keep_alive=
//	         jobs_per_vm= min_hs06_per_core= preemptible=false
//	         run=2h..8h
//	         (count jobs arrive at "at", and again every "every" until
//	         "until")
//	event    at=2d cloud=west <any cloud key but site/count/flavors>
//	         event at=3d cloud=east outage=6h (every boot fails for 6h)
//	         event at=3h cloud=spot reclaim=0.5 (the cloud takes back
//	         half the VMs on its preemptible capacity; their jobs go
//	         back to the queue)
//	         event at=4d group=astro vms=100 (any group key but name
//	         and parent)
//	         cloud=prefix* applies to every cloud whose site starts so.
//	         event at=2h pool_outage=5m (the collector lists no machine
//	         for 5 min: running jobs go on, nothing new starts)
//
// Limits guard against mistakes and hostile input: at most 10,000 clouds,
// 100,000 lines of 64 KiB, 10,000,000 simulated steps and 10,000,000 job
// arrivals; counts up to 1,000,000,000.
package sim
