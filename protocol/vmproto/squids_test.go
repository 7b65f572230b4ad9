package vmproto

import (
	"math"
	"strings"
	"testing"
)

// TestSquidListValidate: non-finite or negative ranking figures and ages,
// missing addresses and oversized lists are refused, naming the field.
func TestSquidListValidate(t *testing.T) {
	good := SquidProxy{Name: "s1", Address: "10.0.0.1:3128", URL: "http://10.0.0.1:3128", Cost: 0.2, DistanceKm: 12, Load: 300}
	with := func(f func(*SquidProxy)) SquidList {
		p := good
		f(&p)
		return SquidList{Kind: "cvmfs", Proxies: []SquidProxy{p}}
	}
	tests := []struct {
		name string
		l    SquidList
		want string
	}{
		{"good", SquidList{Kind: "cvmfs", Proxies: []SquidProxy{good}, AgeSeconds: 3}, ""},
		{"empty", SquidList{Kind: "cvmfs", Proxies: []SquidProxy{}}, ""},
		{"NaN load", with(func(p *SquidProxy) { p.Load = math.NaN() }), "load is NaN"},
		{"Inf cost", with(func(p *SquidProxy) { p.Cost = math.Inf(1) }), "cost is +Inf"},
		{"-Inf distance", with(func(p *SquidProxy) { p.DistanceKm = math.Inf(-1) }), "distance_km is -Inf"},
		{"negative load", with(func(p *SquidProxy) { p.Load = -1 }), "load is -1"},
		{"unknown distance", with(func(p *SquidProxy) { p.DistanceKm = -1 }), ""},
		{"negative distance", with(func(p *SquidProxy) { p.DistanceKm = -2 }), "distance_km is -2"},
		{"no address", with(func(p *SquidProxy) { p.Address = "" }), "squid address of 0 bytes"},
		{"long name", with(func(p *SquidProxy) { p.Name = strings.Repeat("n", 301) }), "name or URL over 300 bytes"},
		{"NaN age", SquidList{Kind: "cvmfs", AgeSeconds: math.NaN()}, "age_seconds is NaN"},
		{"negative age", SquidList{Kind: "cvmfs", AgeSeconds: -1}, "age_seconds is -1"},
		{"too many", SquidList{Kind: "cvmfs", Proxies: make([]SquidProxy, MaxSquidProxies+1)}, "limit 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.l.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
