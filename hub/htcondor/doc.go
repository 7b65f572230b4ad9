// Package htcondor is the hub's HTCondor demand source: it reads the job
// queues of the configured schedds and the slots of Canopy's worker VMs
// through HTCondor's command-line tools, and turns them into demand for the
// planner: jobs grouped by shape (group, VM type, cpus, memory, disk,
// image, target clouds, keep-alive), never job by job, and the state of
// each VM's startd.
//
// # Commands
//
// Per poll, run through a Runner (ExecRunner for real, condorfake in
// tests), each bounded by Config.CommandTimeout, one set per schedd in
// parallel. With Config.DemandQuery "autocluster" (the default):
//
//	condor_q [-pool P] [-name SCHEDD] -allusers -group-by -json \
//	    -constraint 'JobStatus == 1 || JobStatus == 2 || JobStatus == 6 || JobStatus == 7' \
//	    -attributes JobStatus,Owner,AcctGroup,...   (one row per group of jobs, JobCount)
//
// with "jobs", every job one by one:
//
//	condor_q [-pool P] [-name SCHEDD] -allusers -json \
//	    -constraint 'JobStatus == 1 || JobStatus == 2 || JobStatus == 6 || JobStatus == 7' \
//	    -attributes ClusterId,ProcId,JobStatus,Owner,AcctGroup,...
//
// and for the pool:
//
//	condor_status [-pool P] -json -constraint 'CanopyVMName =!= undefined' -attributes Name,Machine,...
//
// and, when the hub has deleted a VM, Invalidate runs condor_advertise
// (an sbin tool: Config.SbinDir) INVALIDATE_STARTD_ADS (slot ads, then
// the startd's daemon ad) and INVALIDATE_MASTER_ADS with a query ad on
// standard input (see
// deploy/htcondor/README.md).
//
// # Why grouped idle jobs, and a projection
//
// A group row stands for every job whose status and shaping attributes
// have the same values: the same thing the job-by-job reader calls a signature, so
// the two give the same shapes and counts (tested on the live pool and on
// its recordings). The schedd does the grouping (its on-the-fly
// autoclustering, condor_q -group-by): 300,000 idle jobs of 3 kinds cross
// the wire as 3 rows. The schedd still visits every job (as it does for
// any condor_q), so its cost grows with the queue; what is saved is
// formatting, sending and parsing every job (see deploy/htcondor/README.md
// for figures). The schedd's default autoclusters (condor_q
// -autocluster) cannot stand in: their counts include running and held
// jobs, they exist only once the negotiator has asked the schedd for work
// (never in a pool with no slot), and they group by the negotiator's
// significant attributes, not Canopy's. A schedd that cannot group is read
// job by job, and Status says so.
//
// Job by job, -json with -attributes is ~150 MB for 300,000 jobs and reads
// into shapes in about half a CPU-second with a bounded heap (about 1 MB:
// the output is scanned ad by ad as it arrives). -af:j is ~4x smaller and
// cheaper to split, but it cannot carry Requirements (an expression with
// spaces, printed unquoted), prints a missing attribute and the string
// "undefined" alike, and evaluates RequestMemory without the machine;
// shapes need Requirements to pick the VM type.
//
// The output is read with a scanner of this package (stream.go) rather
// than encoding/json's Decoder, which took 4-5x the CPU for the same
// output (it scans every ad twice and copies it); the scanner is fuzzed
// against encoding/json.
//
// # Shapes
//
// Jobs are first grouped by signature: the raw values of every attribute
// the shape depends on. A signature is worked out once: its attributes are
// made into a ClassAd (hub/classad), RequestCpus/RequestMemory/RequestDisk
// are evaluated against it (they may be expressions), the group is the
// first of Config.GroupAttributes that is set, the VM type is +VMType or,
// when absent, the first configured VM type (DefaultVMType first) whose
// machine ad the job matches, both ways, as HTCondor's matchmaker would:
// the job's Requirements against the ad, the ad's START and
// WithinResourceLimits against the job. Jobs that match no VM type Canopy
// can boot are not demand; they are counted by group and reason in
// Status().Unmatchable.
//
// # Failures
//
// Each schedd is read on its own: one that fails (a *CommandError: command
// line, kind, exit code, standard error) keeps its last good jobs for
// Config.DemandMaxAge while the others are read fresh, and the poll says
// it is not fresh (demand.Demand.Schedds), so that the hub retires nothing
// on it. condor_status failing is a failed pool view (demand.Demand.PoolErr,
// no Machines). Poll fails as a whole, with no demand, when no schedd
// could be read.
package htcondor
