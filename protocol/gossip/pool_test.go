package gossip

import (
	"flag"
	"slices"
	"testing"
	"time"
)

// vmCount is the size of the test pool besides the agent. Under the race
// detector a smaller pool keeps the machine from starving the failure
// detector: go test -race ./protocol/gossip -args -gossip.vms=8
var vmCount = 30

func init() {
	flag.IntVar(&vmCount, "gossip.vms", vmCount, "VMs in the test pool (at least 8)")
}

// Bounds for the pool tests. They are generous because the tests share two
// cores with whatever else runs (31 members in one process, on a machine
// that may be at a load of 20): a quiet machine spreads a message in about
// 200 ms and detects a crash in about 1.5 s (see BenchmarkFailureDetection
// for the figures). A test that hits a bound has found a real fault.
const (
	spreadWithin = 15 * time.Second
	detectWithin = 10 * time.Second
)

// TestPool runs one pool of an agent and vmCount (30) VMs through its life: join,
// squid list, retirement, state change, graceful leave, crash, a late
// joiner and an agent restart.
func TestPool(t *testing.T) {
	c := newCluster(t, vmCount, testTimers())
	byName := map[string]*Member{}
	for _, m := range c.vms {
		byName[m.n.cfg.Name] = m
	}

	t.Run("agent sees every VM with its meta", func(t *testing.T) {
		eventually(t, spreadWithin, "agent sees every VM", func() bool { return len(c.agent.Peers()) == vmCount })
		for _, p := range c.agent.Peers() {
			want := Meta{Role: RoleVM, ServerID: "id-" + p.Name, Group: "atlas", State: StateReady}
			if p.Meta != want {
				t.Errorf("peer %s meta %+v, want %+v", p.Name, p.Meta, want)
			}
		}
		if n := len(c.events.names(func(e Event) bool { return e.Kind == EventJoin })); n != vmCount {
			t.Errorf("agent had join events for %d VMs, want %d", n, vmCount)
		}
	})

	var latest SquidList
	t.Run("squid list reaches every member, newer replaces older", func(t *testing.T) {
		first, err := c.agent.PublishSquids([]string{"http://10.0.0.7:3128", "http://10.0.0.8:3128"})
		if err != nil {
			t.Fatal(err)
		}
		took := eventually(t, spreadWithin, "first squid list everywhere", func() bool {
			for _, m := range c.vms {
				if m.Squids().Version != first.Version {
					return false
				}
			}
			return true
		})
		t.Logf("squid list reached %d VMs in %s", vmCount, took.Round(time.Millisecond))
		latest, err = c.agent.PublishSquids([]string{"http://10.0.0.9:3128", "DIRECT"})
		if err != nil {
			t.Fatal(err)
		}
		if latest.Version <= first.Version {
			t.Fatalf("second version %d not above first %d", latest.Version, first.Version)
		}
		eventually(t, spreadWithin, "second squid list everywhere", func() bool {
			for _, m := range c.vms {
				if m.Squids().Version != latest.Version {
					return false
				}
			}
			return true
		})
		// A stale list arriving late is ignored.
		stale, err := encodeSquids(first, testSigner)
		if err != nil {
			t.Fatal(err)
		}
		vm := c.vms[1]
		(&delegate{n: vm.n}).NotifyMsg(stale)
		if got := vm.Squids(); got.Version != latest.Version || !slices.Equal(got.Proxies, latest.Proxies) {
			t.Errorf("after stale list, VM holds %+v, want %+v", got, latest)
		}
		select {
		case <-vm.Changed():
		default:
			t.Error("Changed did not fire for a new squid list")
		}
	})

	t.Run("a VM cannot forge a squid list", func(t *testing.T) {
		// A VM (or anyone holding the pool key but not the agent's signing
		// key) gossips a list with a huge version. Had any member taken it,
		// that member would refuse the agent's next list.
		forged := signedBy(otherSigner, kindSquids, cborOf(t, wireSquids{Version: 1 << 62, Proxies: []string{"http://evil:3128"}}))
		c.vms[2].n.broadcast(squidsBroadcast, forged)
		eventually(t, spreadWithin, "members drop the forged list", func() bool {
			dropped := 0
			for _, m := range c.vms {
				dropped += int(m.n.badMsgs.Load())
			}
			return dropped > 0
		})
		next, err := c.agent.PublishSquids([]string{"http://10.0.0.9:3128", "DIRECT"})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, spreadWithin, "agent's list everywhere after the forgery", func() bool {
			for _, m := range c.vms {
				if m.Squids().Version != next.Version {
					return false
				}
			}
			return true
		})
		latest = next
	})

	t.Run("retirement order reaches exactly its VM", func(t *testing.T) {
		target := byName["vm-07"]
		deadline := time.Now().Add(time.Hour)
		o, err := c.agent.Retire("vm-07", deadline, "demand fell")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-target.Retired():
		case <-time.After(spreadWithin):
			t.Fatalf("vm-07 not told to retire within %s", spreadWithin)
		}
		got, ok := target.RetireOrder()
		if !ok || got.Server != "vm-07" || !got.Deadline.Equal(o.Deadline) || got.Reason != "demand fell" {
			t.Fatalf("vm-07 holds order %+v %v, want %+v", got, ok, o)
		}
		// Every member relays the order, but only vm-07 takes it as its own.
		eventually(t, spreadWithin, "order spread to every member", func() bool {
			for _, m := range c.vms {
				if _, ok := m.n.store.order("vm-07"); !ok {
					return false
				}
			}
			return true
		})
		for _, m := range c.vms {
			if m == target {
				continue
			}
			if o, ok := m.RetireOrder(); ok {
				t.Errorf("%s thinks it must retire: %+v", m.n.cfg.Name, o)
			}
			select {
			case <-m.Retired():
				t.Errorf("%s's Retired fired", m.n.cfg.Name)
			default:
			}
		}
	})

	t.Run("state change reaches the agent", func(t *testing.T) {
		mark := c.events.mark()
		if err := byName["vm-07"].SetState(StateDraining); err != nil {
			t.Fatal(err)
		}
		c.events.wait(t, mark, spreadWithin, "vm-07 draining", func(e Event) bool {
			return e.Kind == EventUpdate && e.Peer.Name == "vm-07" && e.Peer.Meta.State == StateDraining
		})
	})

	t.Run("graceful leave is a leave with intent", func(t *testing.T) {
		mark, start := c.events.mark(), time.Now()
		if err := byName["vm-03"].Leave(LeaveTimeout); err != nil {
			t.Fatal(err)
		}
		t.Logf("Leave returned after %s", time.Since(start).Round(time.Millisecond))
		e := c.events.wait(t, mark, spreadWithin, "vm-03 leave", func(e Event) bool {
			return e.Peer.Name == "vm-03" && (e.Kind == EventLeave || e.Kind == EventFail)
		})
		if e.Kind != EventLeave || e.Peer.Meta.State != StateLeaving {
			t.Fatalf("agent saw %s with state %s, want leave with state leaving", e.Kind, e.Peer.Meta.State)
		}
		t.Logf("graceful leave reported %s after Leave was called", e.At.Sub(start).Round(time.Millisecond))
	})

	t.Run("crash is detected as a failure", func(t *testing.T) {
		eventually(t, spreadWithin, "agent sees vm-04 alive", func() bool {
			return slices.ContainsFunc(c.agent.Peers(), func(p Peer) bool { return p.Name == "vm-04" })
		})
		mark, start := c.events.mark(), time.Now()
		byName["vm-04"].crash()
		e := c.events.wait(t, mark, detectWithin, "vm-04 failure", func(e Event) bool {
			return e.Peer.Name == "vm-04" && (e.Kind == EventLeave || e.Kind == EventFail)
		})
		if e.Kind != EventFail || e.Peer.Meta.State != StateReady {
			t.Fatalf("agent saw %s with state %s, want fail with state ready", e.Kind, e.Peer.Meta.State)
		}
		t.Logf("crash detected by the agent after %s", e.At.Sub(start).Round(time.Millisecond))
	})

	t.Run("late joiner catches up on squids and its order", func(t *testing.T) {
		deadline := time.Now().Add(10 * time.Minute)
		if _, err := c.agent.Retire("vm-late", deadline, "short-lived"); err != nil {
			t.Fatal(err)
		}
		mark := c.events.mark()
		m := c.addVM(t, "vm-late")
		select {
		case <-m.Joined():
		case <-time.After(spreadWithin):
			t.Fatalf("vm-late did not join within %s", spreadWithin)
		}
		// The join's push/pull carries the state: no gossip round needed.
		if got := m.Squids(); got.Version != latest.Version {
			t.Errorf("late joiner has squid list %d, want %d", got.Version, latest.Version)
		}
		select {
		case <-m.Retired():
		case <-time.After(spreadWithin):
			t.Fatal("late joiner never learned of its order")
		}
		c.events.wait(t, mark, spreadWithin, "vm-late join", func(e Event) bool { return e.Kind == EventJoin && e.Peer.Name == "vm-late" })
	})

	t.Run("VMs rejoin a restarted agent", func(t *testing.T) {
		addr := c.agent.Addr()
		if err := c.agent.Close(); err != nil {
			t.Fatal(err)
		}
		eventually(t, spreadWithin, "VMs see the agent gone", func() bool {
			for _, m := range c.live() {
				if m.agentAlive() {
					return false
				}
			}
			return true
		})
		c.events = newRecorder()
		agent, err := c.startAgent(addr)
		if err != nil {
			t.Fatal(err)
		}
		c.agent = agent
		took := eventually(t, spreadWithin, "new agent sees every VM", func() bool { return len(agent.Peers()) == len(c.live()) })
		t.Logf("%d VMs rejoined the restarted agent in %s", len(c.live()), took.Round(time.Millisecond))
		// The new agent learns the pool's squid list from the VMs, and its
		// next list is newer still.
		eventually(t, spreadWithin, "agent learns squid list", func() bool { return agent.Squids().Version == latest.Version })
		next, err := agent.PublishSquids([]string{"http://10.0.0.10:3128"})
		if err != nil {
			t.Fatal(err)
		}
		if next.Version <= latest.Version {
			t.Fatalf("restarted agent's version %d not above %d", next.Version, latest.Version)
		}
	})
}

func TestStrangerCannotJoin(t *testing.T) {
	c := newCluster(t, 2, testTimers())
	otherKey := testKey(t)
	tests := []struct {
		name string
		site string
		key  []byte
	}{
		{"wrong key", c.site, otherKey},
		{"right key, other site", "elsewhere", c.key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := start(Config{Site: tt.site, Name: "intruder", Bind: c.addrs.addr(), Key: tt.key, Timers: c.timers,
				Log: quietLog(), Meta: Meta{Role: RoleVM}}, testAgentKey())
			if err != nil {
				t.Fatal(err)
			}
			defer n.shutdown(false, 0)
			if _, err := n.ml.Join([]string{c.agent.Addr()}); err == nil {
				t.Fatal("join succeeded")
			}
			for _, p := range c.agent.Peers() {
				if p.Name == "intruder" {
					t.Fatal("agent lists the intruder")
				}
			}
			if got := len(n.peers()); got != 0 {
				t.Fatalf("intruder sees %d members", got)
			}
		})
	}
}
