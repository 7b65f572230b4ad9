package gossip

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkFailureDetection measures how long after a VM crashes (memberlist
// shut down without leaving) the agent reports EventFail, in a pool of an
// agent and 30 VMs on loopback. Each iteration crashes one VM and, off the
// clock, starts a replacement. ns/op is the mean; min/p50/max are reported
// too, and how many live VMs the agent wrongly declared dead during the run
// (each refuted and came back). Run with a fixed count, e.g.
//
//	go test ./protocol/gossip -run '^$' -bench FailureDetection -benchtime 10x
func BenchmarkFailureDetection(b *testing.B) {
	for _, tc := range []struct {
		name   string
		timers Timers
	}{
		{"fast", FastTimers()},
		{"lan-defaults", LANTimers()},
		{"aggressive", aggressiveTimers()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tm := tc.timers
			tm.Rejoin = 300 * time.Millisecond
			c := newCluster(b, vmCount, tm)
			var took []time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				victim := c.live()[0]
				name := victim.n.cfg.Name
				eventually(b, spreadWithin, "agent sees victim alive", func() bool {
					return slices.ContainsFunc(c.agent.Peers(), func(p Peer) bool { return p.Name == name })
				})
				mark := c.events.mark()
				b.StartTimer()
				start := time.Now()
				victim.crash()
				e := c.events.wait(b, mark, 60*time.Second, "failure of "+name, func(e Event) bool {
					return e.Peer.Name == name && e.Kind == EventFail
				})
				b.StopTimer()
				took = append(took, e.At.Sub(start))
				c.replace(b, fmt.Sprintf("vm-r%03d", i))
				b.StartTimer()
			}
			b.StopTimer()
			reportDistribution(b, took)
			// Live VMs the agent declared dead on the way (each came back).
			crashed := map[string]bool{}
			for _, m := range c.vms {
				crashed[m.n.cfg.Name] = m.n.closed.Load()
			}
			falseFails := len(c.events.names(func(e Event) bool { return e.Kind == EventFail && !crashed[e.Peer.Name] }))
			b.ReportMetric(float64(falseFails), "falsely-failed-VMs")
		})
	}
}

// aggressiveTimers halve FastTimers' probe timers and shorten suspicion, for
// comparison: faster detection, more false deaths on a busy machine.
func aggressiveTimers() Timers {
	t := FastTimers()
	t.ProbeInterval, t.ProbeTimeout, t.SuspicionMult = 100*time.Millisecond, 50*time.Millisecond, 3
	return t
}

// BenchmarkGracefulLeave measures how long after Member.Leave is called the
// agent reports EventLeave with StateLeaving.
func BenchmarkGracefulLeave(b *testing.B) {
	c := newCluster(b, vmCount, testTimers())
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		m := c.live()[0]
		name := m.n.cfg.Name
		mark := c.events.mark()
		b.StartTimer()
		start := time.Now()
		if err := m.Leave(LeaveTimeout); err != nil {
			b.Fatal(err)
		}
		e := c.events.wait(b, mark, 60*time.Second, "leave of "+name, func(e Event) bool {
			return e.Peer.Name == name && (e.Kind == EventLeave || e.Kind == EventFail)
		})
		b.StopTimer()
		if e.Kind != EventLeave || e.Peer.Meta.State != StateLeaving {
			b.Fatalf("agent saw %s/%s", e.Kind, e.Peer.Meta.State)
		}
		took = append(took, e.At.Sub(start))
		c.replace(b, fmt.Sprintf("vm-r%03d", i))
		b.StartTimer()
	}
	b.StopTimer()
	reportDistribution(b, took)
}

// BenchmarkSquidSpread measures how long a new squid list takes to reach
// all 30 VMs.
func BenchmarkSquidSpread(b *testing.B) {
	c := newCluster(b, vmCount, testTimers())
	var took []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		l, err := c.agent.PublishSquids([]string{fmt.Sprintf("http://10.0.0.%d:3128", i%250+1)})
		if err != nil {
			b.Fatal(err)
		}
		eventually(b, 60*time.Second, "squid list everywhere", func() bool {
			for _, m := range c.vms {
				if m.Squids().Version != l.Version {
					return false
				}
			}
			return true
		})
		took = append(took, time.Since(start))
	}
	reportDistribution(b, took)
}

// replace starts a VM in place of one that went, and waits until the agent
// has seen it join.
func (c *cluster) replace(b *testing.B, name string) {
	mark := c.events.mark()
	c.addVM(b, name)
	c.events.wait(b, mark, spreadWithin, "join of "+name, func(e Event) bool { return e.Kind == EventJoin && e.Peer.Name == name })
}

func reportDistribution(b *testing.B, took []time.Duration) {
	if len(took) == 0 {
		return
	}
	s := slices.Clone(took)
	slices.Sort(s)
	b.ReportMetric(s[0].Seconds(), "min-s")
	b.ReportMetric(s[len(s)/2].Seconds(), "p50-s")
	b.ReportMetric(s[len(s)-1].Seconds(), "max-s")
	round := make([]time.Duration, len(took))
	for i, d := range took {
		round[i] = d.Round(time.Millisecond)
	}
	b.Logf("%d samples: %v", len(took), round)
}
