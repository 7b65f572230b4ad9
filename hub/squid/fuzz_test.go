package squid_test

import (
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// FuzzDecodeRegistration: no input panics; what is accepted is normalized
// for good and safe to write into a PAC file or a proxy setting.
func FuzzDecodeRegistration(f *testing.F) {
	f.Add([]byte(`{"host":"192.0.2.1","port":3128,"kinds":["cvmfs"],"access":"global"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := squidreg.DecodeRegistration(b)
		if err != nil {
			return
		}
		again, err := r.Normalize()
		if err != nil {
			t.Fatalf("normalized registration rejected: %v", err)
		}
		if again.Name != r.Name || again.MaxLoad != r.MaxLoad || len(again.Kinds) != len(r.Kinds) {
			t.Fatalf("Normalize not idempotent: %+v vs %+v", r, again)
		}
		pac := squid.PAC([]squid.Candidate{{Address: r.Address()}})
		if strings.Count(pac, `"`) != 2 || strings.Count(pac, "\n") != 3 || strings.ContainsAny(r.Address(), " ;\\'") {
			t.Fatalf("address %q breaks the PAC file", r.Address())
		}
		if r.Port < 1 || r.Port > 65535 || r.Load < 0 || math.IsNaN(r.Load) || r.MaxLoad <= 0 {
			t.Fatalf("accepted %+v", r)
		}
	})
}

// FuzzParseQuery: no query string panics, and what is accepted can be
// answered.
func FuzzParseQuery(f *testing.F) {
	f.Add("n=3&kind=cvmfs&ip=192.0.2.1&site=west&domain=example.org", "198.51.100.9:1234")
	r, err := squid.New(squid.Config{}, nil, quietLog())
	if err != nil {
		f.Fatal(err)
	}
	if err := r.ReplaceSource("fuzz", []squidreg.Registration{
		{Name: "g", Host: "192.0.2.1", Port: 3128, Kinds: []squidreg.Kind{squidreg.KindCVMFS}, Access: squidreg.AccessGlobal},
		{Name: "l", Host: "192.0.2.2", Port: 3128, Kinds: []squidreg.Kind{squidreg.KindFrontier}, Access: squidreg.AccessLocalOnly, Site: "west"},
		{Name: "d", Host: "192.0.2.3", Port: 3128, Kinds: []squidreg.Kind{squidreg.KindCVMFS}, Access: squidreg.AccessSameDomain, Domain: "example.org"},
	}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw, remote string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := squid.ParseQuery(v, remote, squid.Config{})
		if err != nil {
			return
		}
		if q.N < 1 || q.N > 20 {
			t.Fatalf("n=%d accepted", q.N)
		}
		a := r.Nearest(q)
		if len(a.Squids) > q.N {
			t.Fatalf("%d squids for n=%d", len(a.Squids), q.N)
		}
	})
}
