package classad_test

import (
	"fmt"

	"github.com/canopy-grid/canopy/hub/classad"
)

// Match a job from condor_q -json against a hypothetical VM-flavor machine ad.
func Example() {
	out := []byte(`[
{
  "ClusterId": 2,
  "RequestCpus": 2,
  "RequestMemory": 2048,
  "RequestDisk": 4194304,
  "VMType": "ubuntu22",
  "Requirements": "\/Expr(((TARGET.VMType is \"ubuntu22\")) && (TARGET.Arch == \"X86_64\") && (TARGET.Memory >= RequestMemory) && (TARGET.Cpus >= RequestCpus) && (TARGET.Disk >= RequestDisk))\/"
}
]`)
	jobs, err := classad.ParseJSON(out)
	if err != nil {
		fmt.Println(err)
		return
	}
	flavor := classad.NewAd()
	flavor.SetValue("Arch", classad.StringValue("X86_64"))
	flavor.SetValue("VMType", classad.StringValue("ubuntu22"))
	flavor.SetValue("Cpus", classad.IntValue(2))
	flavor.SetValue("Memory", classad.IntValue(4096))
	flavor.SetValue("Disk", classad.IntValue(41943040))
	if err := flavor.SetExpr("Start", "TARGET.VMType =?= MY.VMType || TARGET.VMType =?= undefined"); err != nil {
		fmt.Println(err)
		return
	}

	job := jobs[0]
	fmt.Println(classad.Match(job, flavor))
	req, _ := job.Lookup("Requirements")
	fmt.Println(req)

	flavor.SetValue("Cpus", classad.IntValue(1))
	fmt.Println(classad.Match(job, flavor), job.EvalAgainst("Requirements", flavor))
	e := classad.MustParse("TARGET.Cpus >= RequestCpus")
	fmt.Println(classad.Eval(e, job, flavor))
	// Output:
	// true
	// ((TARGET.VMType =?= "ubuntu22")) && (TARGET.Arch == "X86_64") && (TARGET.Memory >= RequestMemory) && (TARGET.Cpus >= RequestCpus) && (TARGET.Disk >= RequestDisk)
	// false false
	// false
}
