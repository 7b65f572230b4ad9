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
// tests), each bounded by Config.CommandTimeout:
//
//	condor_q [-pool P] [-name SCHEDD] -allusers -json \
//	    -constraint 'JobStatus == 1 || JobStatus == 2 || JobStatus == 6 || JobStatus == 7' \
//	    -attributes ClusterId,ProcId,JobStatus,Owner,AcctGroup,...   (one per schedd, in parallel)
//	condor_status [-pool P] -json -constraint 'CanopyVMName =!= undefined' -attributes Name,Machine,...
//
// and, when the hub has deleted a VM, Invalidate runs condor_advertise
// INVALIDATE_STARTD_ADS and INVALIDATE_MASTER_ADS with a query ad on
// standard input (see deploy/htcondor/README.md).
//
// # Why condor_q -json with a projection
//
// Measured on 300,000 jobs (BenchmarkQueue300k and friends): -json with
// -attributes is ~150 MB for 300,000 jobs and reads into shapes in about
// half a CPU-second with a bounded heap (about 1 MB: the output is scanned
// ad by ad as it arrives). -af:j is ~4x smaller and cheaper to split, but
// it cannot carry Requirements (an expression with spaces, printed
// unquoted), prints a missing attribute and the string "undefined" alike,
// and evaluates RequestMemory without the machine; shapes need
// Requirements to pick the VM type. -autocluster groups jobs by the
// negotiator's significant attributes only (not Canopy's own +VMType,
// +TargetClouds ... unless every schedd is configured to treat them as
// significant) and does not split idle from running jobs.
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
// Poll is all or nothing: a schedd that cannot be read, condor_status
// failing, a timeout, or output that is truncated or malformed makes Poll
// return a *CommandError (command line, kind, exit code, standard error)
// and no demand, so that the hub keeps its last good demand and retires
// nothing, rather than plan from a queue with a schedd missing.
package htcondor
