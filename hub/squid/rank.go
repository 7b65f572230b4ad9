package squid

import (
	"math"
	"net/netip"
	"strings"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// Query asks for the squids a client should use.
type Query struct {
	// Addr is the client's address, used to locate it; may be invalid
	// (the client is then not located).
	Addr netip.Addr
	// Site and Domain are what the client says it is part of; they open
	// local-only and same-domain squids. Both are claims, not proofs: the
	// squids' own ACLs still decide who may use them.
	Site   string
	Domain string
	// Kind filters by upstream kind; empty means any.
	Kind squidreg.Kind
	// N is how many squids to return at most (1 if smaller).
	N int
}

// Candidate is one squid in an answer, best first.
type Candidate struct {
	Name    string          `json:"name"`
	Host    string          `json:"host"`
	Port    int             `json:"port"`
	Address string          `json:"address"` // host:port, as written in proxy settings
	Kinds   []squidreg.Kind `json:"kinds"`
	Access  squidreg.Access `json:"access"`
	Site    string          `json:"site,omitempty"`
	Domain  string          `json:"domain,omitempty"`
	Load    float64         `json:"load"` // KB/s
	MaxLoad float64         `json:"max_load"`
	State   squidreg.State  `json:"state"`
	// DistanceKm is the great-circle distance to the client; -1 when the
	// client or the squid could not be located (0 at the client's site).
	DistanceKm float64 `json:"distance_km"`
	// Cost is w·d/(πR) + (1−w)·(load/maxload)^b; lower is better.
	Cost float64 `json:"cost"`
}

// Client is what the hub made of the asking client.
type Client struct {
	IP       string   `json:"ip,omitempty"`
	Site     string   `json:"site,omitempty"`
	Domain   string   `json:"domain,omitempty"`
	Located  bool     `json:"located"`
	Location Location `json:"location,omitzero"`
}

// Answer is the reply to a nearest-squids query.
type Answer struct {
	Client Client        `json:"client"`
	Kind   squidreg.Kind `json:"kind,omitempty"`
	Squids []Candidate   `json:"squids"`
}

// Nearest ranks the squids for q.
func (r *Registry) Nearest(q Query) Answer {
	a := Answer{Client: Client{Site: q.Site, Domain: strings.ToLower(q.Domain)}, Kind: q.Kind}
	if q.Addr.IsValid() {
		a.Client.IP = q.Addr.String()
		a.Client.Location, a.Client.Located = r.loc.Load().Locate(q.Addr)
	}
	q.Domain = a.Client.Domain
	a.Squids = r.rank(q, a.Client.Location, a.Client.Located, nil)
	r.m.queries.Add(1)
	return a
}

type ranked struct {
	cost  float64
	theta float64 // radians; < 0 unknown
	idx   int
}

// rank appends the best q.N squids for a client at loc to dst.
//
// Entries are sorted by their load term, which is a lower bound of their
// cost (the distance term is >= 0): once the n-th best cost found is no
// more than the next entry's load term, no later entry can enter the
// answer and the scan stops.
func (r *Registry) rank(q Query, loc Location, located bool, dst []Candidate) []Candidate {
	s := r.snap.Load()
	n := max(q.N, 1)
	var buf [32]ranked
	best := buf[:0]
	if n > len(buf) {
		best = make([]ranked, 0, n)
	}
	var cpt point
	if located {
		cpt = loc.point()
	}
	kbit := kindBit(q.Kind)
	now := r.now().UnixNano()
	w := r.cfg.DistanceWeight
	for i := range s.entries {
		e := &s.entries[i]
		if len(best) == n && e.loadTerm >= best[n-1].cost {
			break
		}
		if e.until <= now || (kbit != 0 && e.kinds&kbit == 0) || !allowed(e, q.Site, q.Domain) {
			continue
		}
		theta := -1.0
		switch {
		case q.Site != "" && q.Site == e.site:
			theta = 0
		case located && e.located:
			h := chord(cpt, e.pt)
			// asin(h) >= h: when even 2h cannot win, skip the arcsine.
			if len(best) == n && e.loadTerm+w*2*h/math.Pi >= best[n-1].cost {
				continue
			}
			theta = angleOfChord(h)
		}
		d := theta
		if d < 0 {
			d = math.Pi // unknown: as far as possible
		}
		c := e.loadTerm + w*d/math.Pi
		if len(best) == n && c >= best[n-1].cost {
			continue
		}
		// Insert after any equal cost, so ties keep snapshot order.
		j := len(best)
		for j > 0 && best[j-1].cost > c {
			j--
		}
		if len(best) < n {
			best = append(best, ranked{})
		}
		copy(best[j+1:], best[j:len(best)-1])
		best[j] = ranked{cost: c, theta: theta, idx: i}
	}
	if dst == nil {
		dst = make([]Candidate, 0, len(best))
	}
	for _, b := range best {
		c := s.cands[s.entries[b.idx].idx]
		c.Cost = b.cost
		c.DistanceKm = -1
		if b.theta >= 0 {
			c.DistanceKm = b.theta * EarthRadiusKm
		}
		dst = append(dst, c)
	}
	return dst
}

// allowed applies the squid's access level to a client's claims.
func allowed(e *snapEntry, site, domain string) bool {
	switch e.access {
	case squidreg.AccessGlobal:
		return true
	case squidreg.AccessLocalOnly:
		return site != "" && site == e.site
	case squidreg.AccessSameDomain:
		return site != "" && site == e.site || domainMatch(domain, e.domain)
	}
	return false
}

// domainMatch reports whether a client in domain c is in squid domain s:
// the same domain or a subdomain of it (both lower case).
func domainMatch(c, s string) bool {
	if c == "" || s == "" {
		return false
	}
	return c == s || len(c) > len(s) && c[len(c)-len(s)-1] == '.' && strings.HasSuffix(c, s)
}
