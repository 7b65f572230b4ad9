package classad

import "testing"

// benchPair returns recorded job 2.0 (Requirements with a VMType clause,
// request_cpus > 1 and FileSystemDomain) and the ubuntu22 VM-flavor machine
// ad it matches.
func benchPair(b *testing.B) (job, machine *Ad) {
	machines, _ := flavorMachines(b)
	job = recordedJobs(b)["2.0"]
	machine = machines["flavor-ubuntu22-m1.large"]
	if !Match(job, machine) {
		b.Fatal("job 2.0 should match the ubuntu22 flavor")
	}
	return job, machine
}

// BenchmarkEvalRequirements measures one evaluation of a real job
// Requirements expression against a VM-flavor machine ad.
func BenchmarkEvalRequirements(b *testing.B) {
	job, machine := benchPair(b)
	env := &Env{}
	b.ReportAllocs()
	for b.Loop() {
		if !env.EvalAttr(job, "Requirements", machine).IsTrue() {
			b.Fatal("no match")
		}
	}
}

// BenchmarkMatch measures a full two-sided match: the job's Requirements
// and the machine's Requirements (START && WithinResourceLimits).
func BenchmarkMatch(b *testing.B) {
	job, machine := benchPair(b)
	b.ReportAllocs()
	for b.Loop() {
		if !Match(job, machine) {
			b.Fatal("no match")
		}
	}
}

// BenchmarkParseRequirements measures parsing the same Requirements text.
func BenchmarkParseRequirements(b *testing.B) {
	job, _ := benchPair(b)
	e, _ := job.Lookup("Requirements")
	src := e.String()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(src); err != nil {
			b.Fatal(err)
		}
	}
}
