package planner

import "math"

// HS06 ratings. A flavor's cores are rated in HS06 per core (the HEP-SPEC06
// benchmark), by the site (Cloud.HS06PerCore); unrated flavors count one
// unit per core, so nothing changes without ratings. Ratings are kept in
// thousandths so that sums stay exact and plans do not depend on float
// rounding; a VM's HS06 is its cores × its rating, rounded once per VM.

// maxRate bounds a rating (thousandths): far above any real CPU, far from
// overflowing when multiplied by a VM's cores.
const maxRate = 1_000_000_000

// rateMilli turns a rating into thousandths; anything not positive and
// finite is 0 (no rating).
func rateMilli(r float64) int {
	if !(r > 0) || math.IsInf(r, 0) {
		return 0
	}
	return int(min(math.Round(r*1000), maxRate))
}

// rateOf is the rating of a flavor on cloud ci (-1: unknown cloud), in
// thousandths: the site's rating for it, else the site's default, else 1.
func (p *planner) rateOf(ci int, flavor string) int {
	if ci >= 0 {
		c := &p.clouds[ci]
		if r := rateMilli(c.HS06PerCore[flavor]); r > 0 {
			return r
		}
		if r := rateMilli(c.HS06Default); r > 0 {
			return r
		}
	}
	return 1000
}

// advertisedRate is the rating a VM of the flavor on cloud ci advertises:
// zero when the site rates no flavor.
func (p *planner) advertisedRate(ci int, flavor string) float64 {
	c := &p.clouds[ci]
	if len(c.HS06PerCore) == 0 && rateMilli(c.HS06Default) == 0 {
		return 0
	}
	return float64(p.rateOf(ci, flavor)) / 1000
}

// hs06Of is the HS06 of cpus cores rated rate thousandths each, rounded.
func hs06Of(cpus, rate int) int {
	return int((int64(max(0, cpus))*int64(rate) + 500) / 1000)
}
