package classad

// Match reports whether job and machine match each other, as HTCondor's
// matchmaker decides: the job's Requirements, evaluated with the machine as
// TARGET, is true, and the machine's Requirements (or START when it has no
// Requirements), evaluated with the job as TARGET, is true. Undefined and
// error mean no match.
func Match(job, machine *Ad) bool { return defaultEnv.Match(job, machine) }

// Match is like the package-level Match, evaluated in env.
func (env *Env) Match(job, machine *Ad) bool {
	jobOK, machineOK := env.MatchSides(job, machine)
	return jobOK && machineOK
}

// MatchSides evaluates both halves of a match: whether the job's
// Requirements accept the machine, and whether the machine's Requirements
// (or START) accept the job. A result counts as true when it is true or a
// non-zero number, as in HTCondor's symmetricMatch = LEFT && RIGHT.
func (env *Env) MatchSides(job, machine *Ad) (jobAccepts, machineAccepts bool) {
	jobAccepts = accepts(env.evalEntry(job, job.lookupKey("requirements"), machine))
	ent := machine.lookupKey("requirements")
	if ent == nil {
		ent = machine.lookupKey("start")
	}
	machineAccepts = accepts(env.evalEntry(machine, ent, job))
	return jobAccepts, machineAccepts
}

func accepts(v Value) bool {
	b, ok := boolEquiv(v)
	return ok && b
}
