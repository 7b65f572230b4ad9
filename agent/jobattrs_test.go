package agent

import (
	"context"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// TestBootCarriesJobAttributes: the jobs' keep-alive and maximum lifetime
// in a boot command are recorded on the servers, listed back in the
// inventory and given to the VM in its settings.
func TestBootCarriesJobAttributes(t *testing.T) {
	tests := []struct {
		name        string
		keep, limit time.Duration
		meta        map[string]string // metadata keys wanted; "" means absent
	}{
		{name: "both", keep: 5 * time.Minute, limit: 90 * time.Minute,
			meta: map[string]string{driver.MetaKeepAlive: "5m0s", driver.MetaMaxLifetime: "1h30m0s"}},
		{name: "keep-alive only", keep: 45 * time.Second,
			meta: map[string]string{driver.MetaKeepAlive: "45s", driver.MetaMaxLifetime: ""}},
		{name: "none", meta: map[string]string{driver.MetaKeepAlive: "", driver.MetaMaxLifetime: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDriver()
			a := testAgent(t, d)
			ctx := context.Background()
			cmd := bootCmd("c1", "vm-a")
			cmd.Boot.KeepAlive, cmd.Boot.MaxLifetime = tt.keep, tt.limit
			if res, _ := a.execute(ctx, cmd); !res.OK || len(res.VMIDs) != 1 {
				t.Fatalf("boot: %+v", res)
			}
			id := d.boots
			srv := d.servers["id-1"]
			for k, v := range tt.meta {
				if got, ok := srv.Metadata[k]; got != v || ok != (v != "") {
					t.Errorf("metadata %s = %q (present %v), want %q", k, got, ok, v)
				}
			}
			inv, err := a.inventory(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(inv.VMs) != 1 || inv.VMs[0].KeepAlive != tt.keep || inv.VMs[0].MaxLifetime != tt.limit {
				t.Errorf("inventory VMs %+v, want keep-alive %s max lifetime %s", inv.VMs, tt.keep, tt.limit)
			}
			s, err := vmproto.ParseUserData(d.userData["id-1"])
			if err != nil {
				t.Fatalf("user-data of server %d: %v", id, err)
			}
			if s.KeepAlive != tt.keep || s.MaxLifetime != tt.limit {
				t.Errorf("VM settings keep-alive %s max lifetime %s, want %s %s", s.KeepAlive, s.MaxLifetime, tt.keep, tt.limit)
			}
		})
	}
}

// TestMetaDuration: metadata anyone with the project's credentials can
// edit is read as a duration or as none.
func TestMetaDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"": 0, "5m0s": 5 * time.Minute, "2h": 2 * time.Hour, "-5m": 0, "soon": 0, "10": 0,
		"1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h": 0, // longer than any duration the agent writes
	} {
		if got := metaDuration(in); got != want {
			t.Errorf("metaDuration(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestBootCommandDurationsValidated: a negative keep-alive or lifetime in
// a boot command is refused by the protocol's validation.
func TestBootCommandDurationsValidated(t *testing.T) {
	for _, mod := range []func(*protocol.BootCommand){
		func(b *protocol.BootCommand) { b.KeepAlive = -time.Second },
		func(b *protocol.BootCommand) { b.MaxLifetime = -time.Second },
	} {
		cmd := bootCmd("c1", "vm-a")
		mod(cmd.Boot)
		if err := cmd.Validate(); err == nil {
			t.Errorf("boot command %+v validated", cmd.Boot)
		}
	}
}

// FuzzMetaDuration: any metadata value reads as a non-negative duration or
// none, and a duration the agent writes reads back as itself.
func FuzzMetaDuration(f *testing.F) {
	for _, s := range []string{"", "5m0s", "1h30m0s", "-1s", "10", "9999999h", "1e9h", "\x00", "0s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := metaDuration(v)
		if d < 0 {
			t.Fatalf("metaDuration(%q) = %s, negative", v, d)
		}
		if d > 0 && metaDuration(d.String()) != d {
			t.Fatalf("metaDuration(%q) = %s, which does not read back (%s)", v, d, metaDuration(d.String()))
		}
	})
}
