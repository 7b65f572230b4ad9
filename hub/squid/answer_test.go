package squid_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

var update = flag.Bool("update", false, "rewrite "+nearestAnswerFile)

// nearestAnswerFile documents what GET squidreg.PathNearest answers. Site
// agents read it without linking the hub (agent/squidcache tests decode
// the same file), so a change here is a change of the contract.
const nearestAnswerFile = "../../protocol/squidreg/testdata/nearest-answer.json"

// TestNearestAnswerDocumented checks the hub's real answer for a fixed
// registry against the documented one (go test -update rewrites it).
func TestNearestAnswerDocumented(t *testing.T) {
	r := newRegistry(t, squid.Config{}, nil, newClock())
	sq := func(name, host string, load float64, access squidreg.Access, site string, kinds ...squidreg.Kind) squidreg.Registration {
		return squidreg.Registration{Name: name, Host: host, Port: 3128, Kinds: kinds, Access: access, Site: site, Load: load,
			Latitude: f64(0), Longitude: f64(0)}
	}
	if err := r.ReplaceSource("test", []squidreg.Registration{
		sq("g1", "192.0.2.1", 10, squidreg.AccessGlobal, "", squidreg.KindCVMFS),
		sq("g2", "192.0.2.2", 20, squidreg.AccessGlobal, "", squidreg.KindCVMFS, squidreg.KindFrontier),
		sq("west", "10.0.0.3", 0, squidreg.AccessLocalOnly, "west", squidreg.KindCVMFS),
		sq("east", "10.1.0.3", 0, squidreg.AccessLocalOnly, "east", squidreg.KindCVMFS),
	}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, body := get(t, srv.URL+squidreg.PathNearest+"?site=west&kind=cvmfs&n=10&ip=192.0.2.99")
	if resp.StatusCode != 200 {
		t.Fatalf("nearest: %s %s", resp.Status, body)
	}
	var got bytes.Buffer
	if err := json.Indent(&got, []byte(body), "", "  "); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(nearestAnswerFile, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(nearestAnswerFile)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("the hub's answer differs from %s (go test -update rewrites it; check that agent/squidcache still reads it):\n%s",
			nearestAnswerFile, got.Bytes())
	}
}
