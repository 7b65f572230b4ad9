package squid

// Rank exposes the ranking core to the external tests and benchmarks.
func (r *Registry) Rank(q Query, loc Location, located bool, dst []Candidate) []Candidate {
	return r.rank(q, loc, located, dst)
}
