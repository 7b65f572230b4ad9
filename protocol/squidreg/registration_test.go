package squidreg_test

import (
	"math"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/protocol/squidreg"
)

func f64(v float64) *float64 { return &v }

func TestNormalize(t *testing.T) {
	base := func() squidreg.Registration {
		return squidreg.Registration{Host: "10.0.0.7", Port: 3128, Kinds: []squidreg.Kind{"frontier", "cvmfs", "cvmfs"},
			Access: squidreg.AccessGlobal}
	}
	tests := []struct {
		name    string
		edit    func(*squidreg.Registration)
		wantErr string
		check   func(*testing.T, squidreg.Registration)
	}{
		{name: "defaults", edit: func(*squidreg.Registration) {}, check: func(t *testing.T, r squidreg.Registration) {
			if r.Name != "10.0.0.7:3128" || r.MaxLoad != squidreg.DefaultMaxLoad {
				t.Errorf("name %q max_load %v", r.Name, r.MaxLoad)
			}
			if len(r.Kinds) != 2 || r.Kinds[0] != squidreg.KindCVMFS || r.Kinds[1] != squidreg.KindFrontier {
				t.Errorf("kinds %v, want [cvmfs frontier]", r.Kinds)
			}
		}},
		{name: "ipv6 address", edit: func(r *squidreg.Registration) { r.Host = "2001:db8::7" }, check: func(t *testing.T, r squidreg.Registration) {
			if r.Address() != "[2001:db8::7]:3128" {
				t.Errorf("address %q", r.Address())
			}
		}},
		{name: "host name", edit: func(r *squidreg.Registration) { r.Host = "squid-1.cern.ch" }},
		{name: "domain lower-cased", edit: func(r *squidreg.Registration) { r.Domain = "CERN.ch" }, check: func(t *testing.T, r squidreg.Registration) {
			if r.Domain != "cern.ch" {
				t.Errorf("domain %q", r.Domain)
			}
		}},
		{name: "no host", edit: func(r *squidreg.Registration) { r.Host = "" }, wantErr: "host is required"},
		{name: "script in host", edit: func(r *squidreg.Registration) { r.Host = `a";alert(1);"` }, wantErr: "neither an IP address nor a valid host name"},
		{name: "zoned address", edit: func(r *squidreg.Registration) { r.Host = "fe80::1%eth0" }, wantErr: "zoned"},
		{name: "label with hyphen at end", edit: func(r *squidreg.Registration) { r.Host = "bad-.example.org" }, wantErr: "valid host name"},
		{name: "port zero", edit: func(r *squidreg.Registration) { r.Port = 0 }, wantErr: "port 0 out of range"},
		{name: "port too big", edit: func(r *squidreg.Registration) { r.Port = 70000 }, wantErr: "out of range"},
		{name: "no kinds", edit: func(r *squidreg.Registration) { r.Kinds = nil }, wantErr: "kinds is required"},
		{name: "unknown kind", edit: func(r *squidreg.Registration) { r.Kinds = []squidreg.Kind{"ftp"} }, wantErr: `unknown squid kind "ftp"`},
		{name: "unknown access", edit: func(r *squidreg.Registration) { r.Access = "public" }, wantErr: "unknown squid access level"},
		{name: "local-only needs site", edit: func(r *squidreg.Registration) { r.Access = squidreg.AccessLocalOnly }, wantErr: "local-only needs a site"},
		{name: "same-domain needs domain", edit: func(r *squidreg.Registration) { r.Access = squidreg.AccessSameDomain }, wantErr: "same-domain needs a domain"},
		{name: "bad site", edit: func(r *squidreg.Registration) { r.Site = "a b" }, wantErr: "site:"},
		{name: "negative load", edit: func(r *squidreg.Registration) { r.Load = -1 }, wantErr: "load -1"},
		{name: "NaN load", edit: func(r *squidreg.Registration) { r.Load = math.NaN() }, wantErr: "load NaN must be a finite number"},
		{name: "Inf max load", edit: func(r *squidreg.Registration) { r.MaxLoad = math.Inf(1) }, wantErr: "max_load +Inf must be a finite number"},
		{name: "NaN latitude", edit: func(r *squidreg.Registration) { r.Latitude, r.Longitude = f64(math.NaN()), f64(0) }, wantErr: "latitude NaN"},
		{name: "Inf longitude", edit: func(r *squidreg.Registration) { r.Latitude, r.Longitude = f64(0), f64(math.Inf(-1)) }, wantErr: "longitude -Inf"},
		{name: "bad geoip", edit: func(r *squidreg.Registration) { r.GeoIP = "nope" }, wantErr: "geoip"},
		{name: "latitude alone", edit: func(r *squidreg.Registration) { r.Latitude = f64(10) }, wantErr: "go together"},
		{name: "latitude range", edit: func(r *squidreg.Registration) { r.Latitude, r.Longitude = f64(91), f64(0) }, wantErr: "latitude 91"},
		{name: "longitude range", edit: func(r *squidreg.Registration) { r.Latitude, r.Longitude = f64(0), f64(-181) }, wantErr: "longitude -181"},
		{name: "bad name", edit: func(r *squidreg.Registration) { r.Name = "squid one" }, wantErr: "name:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := base()
			tt.edit(&r)
			got, err := r.Normalize()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestDecodeRegistration(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "good", in: `{"host":"192.0.2.1","port":3128,"kinds":["cvmfs"],"access":"global","load":12.5,"future":1}`},
		{name: "not json", in: `host=1`, wantErr: "squid registration"},
		{name: "trailing", in: `{"host":"192.0.2.1","port":3128,"kinds":["cvmfs"],"access":"global"} {}`, wantErr: "trailing data"},
		{name: "wrong type", in: `{"host":"192.0.2.1","port":"3128"}`, wantErr: "squid registration"},
		{name: "too big", in: `{"name":"` + strings.Repeat("a", squidreg.MaxRegistrationSize) + `"}`, wantErr: "limit"},
		{name: "invalid", in: `{"host":"192.0.2.1","port":3128,"kinds":[],"access":"global"}`, wantErr: "kinds is required"},
		{name: "NaN-ish load", in: `{"host":"192.0.2.1","port":3128,"kinds":["cvmfs"],"access":"global","load":1e999}`, wantErr: "squid registration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := squidreg.DecodeRegistration([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Name != "192.0.2.1:3128" || r.Load != 12.5 {
				t.Errorf("got %+v", r)
			}
		})
	}
}
