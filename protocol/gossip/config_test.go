package gossip

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestConfigRejects(t *testing.T) {
	key := testKey(t)
	slow := FastTimers()
	slow.ProbeTimeout = slow.ProbeInterval
	zero := FastTimers()
	zero.SuspicionMult = 0
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no site", Config{Name: "vm", Key: key, Bind: "127.0.0.1:0"}, "site is empty"},
		{"no name", Config{Site: "s", Key: key, Bind: "127.0.0.1:0"}, "node name is empty"},
		{"short key", Config{Site: "s", Name: "vm", Key: key[:16], Bind: "127.0.0.1:0"}, "16 bytes"},
		{"host name bind", Config{Site: "s", Name: "vm", Key: key, Bind: "localhost:0"}, "must be an IP"},
		{"bad port", Config{Site: "s", Name: "vm", Key: key, Bind: "127.0.0.1:99999"}, "bad port"},
		{"bad advertise", Config{Site: "s", Name: "vm", Key: key, Bind: "127.0.0.1:0", Advertise: "10.0.0.1:x"}, "bad port"},
		{"probe timeout too long", Config{Site: "s", Name: "vm", Key: key, Bind: "127.0.0.1:0", Timers: slow}, "shorter than probe interval"},
		{"zero multiplier", Config{Site: "s", Name: "vm", Key: key, Bind: "127.0.0.1:0", Timers: zero}, "at least 1"},
		{"bad meta", Config{Site: "s", Name: "vm", Key: key, Bind: "127.0.0.1:0", Meta: Meta{Role: "boss"}}, "role"},
		{"control in name", Config{Site: "s", Name: "vm\n", Key: key, Bind: "127.0.0.1:0", Meta: Meta{Role: RoleVM}}, "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Meta.Role == "" {
				tt.cfg.Meta.Role = RoleVM
			}
			tt.cfg.Log = quietLog()
			n, err := start(tt.cfg, testAgentKey())
			if err == nil {
				_ = n.shutdown(false, 0)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	others := []struct {
		name  string
		start func() error
		want  string
	}{
		{"VM with the agent's name", func() error {
			_, err := NewMember(Config{Site: "s", Name: AgentName("s"), Key: key, AgentKey: testAgentKey(), Bind: "127.0.0.1:0"}, "127.0.0.1")
			return err
		}, "agent's name"},
		{"bad agent address", func() error {
			_, err := NewMember(Config{Site: "s", Name: "vm", Key: key, AgentKey: testAgentKey(), Bind: "127.0.0.1:0"}, ":x")
			return err
		}, "agent address"},
		{"VM without agent key", func() error {
			_, err := NewMember(Config{Site: "s", Name: "vm", Key: key, Bind: "127.0.0.1:0", Log: quietLog()}, "127.0.0.1")
			return err
		}, "agent key is 0 bytes"},
		{"agent without signer", func() error {
			_, err := NewPool(Config{Site: "s", Key: key, Bind: "127.0.0.1:0", Log: quietLog()})
			return err
		}, "signing key is 0 bytes"},
	}
	for _, tt := range others {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.start(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestHostPort(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port int
	}{
		{"10.0.0.5:7000", "10.0.0.5", 7000},
		{"10.0.0.5", "10.0.0.5", DefaultPort},
		{"[fd00::5]:7000", "fd00::5", 7000},
		{"[fd00::5]", "fd00::5", DefaultPort},
		{"127.0.0.1:0", "127.0.0.1", 0},
	}
	for _, tt := range tests {
		h, p, err := hostPort(tt.in)
		if err != nil || h != tt.host || p != tt.port {
			t.Errorf("hostPort(%q) = %q, %d, %v; want %q, %d", tt.in, h, p, err, tt.host, tt.port)
		}
	}
}

func TestNotifyAliveRefusesMisfits(t *testing.T) {
	d := &delegate{n: &node{cfg: Config{Site: "east"}}}
	meta := func(m Meta) []byte {
		b, err := encodeMeta(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		node memberlist.Node
		ok   bool
	}{
		{"VM", memberlist.Node{Name: "vm-1", Meta: meta(Meta{Role: RoleVM, State: StateReady})}, true},
		{"agent", memberlist.Node{Name: "agent-east", Meta: meta(Meta{Role: RoleAgent, State: StateReady})}, true},
		{"VM claiming to be agent", memberlist.Node{Name: "vm-1", Meta: meta(Meta{Role: RoleAgent, State: StateReady})}, false},
		{"agent name with VM role", memberlist.Node{Name: "agent-east", Meta: meta(Meta{Role: RoleVM, State: StateReady})}, false},
		{"other site's agent", memberlist.Node{Name: "agent-west", Meta: meta(Meta{Role: RoleAgent, State: StateReady})}, false},
		{"no meta", memberlist.Node{Name: "vm-1"}, false},
		{"garbage meta", memberlist.Node{Name: "vm-1", Meta: []byte{WireVersion, 0xff}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.NotifyAlive(&tt.node)
			if (err == nil) != tt.ok {
				t.Fatalf("NotifyAlive = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestTimers(t *testing.T) {
	for name, tm := range map[string]Timers{"fast": FastTimers(), "lan": LANTimers()} {
		if err := tm.validate(); err != nil {
			t.Errorf("%s timers invalid: %v", name, err)
		}
	}
	if f, l := FastTimers(), LANTimers(); f.ProbeInterval >= l.ProbeInterval || f.Rejoin != 5*time.Second {
		t.Errorf("fast timers %+v not faster than LAN %+v", f, l)
	}
}
