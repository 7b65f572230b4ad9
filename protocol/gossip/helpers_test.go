package gossip

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// crash stops a member without leaving, as a crash would.
func (m *Member) crash() {
	m.stopOnce.Do(func() { close(m.stop) })
	<-m.loopDone
	_ = m.n.shutdown(false, 0)
}

// addrSpace hands out distinct 127.a.b.c addresses (Linux routes all of
// 127/8 to lo). The middle octets are random so that concurrent test runs
// on one machine do not collide; ports are picked by the kernel.
type addrSpace struct {
	mu   sync.Mutex
	a, b int
	next int
}

func newAddrSpace(t testing.TB) *addrSpace {
	r := func(lo, hi int64) int {
		n, err := rand.Int(rand.Reader, big.NewInt(hi-lo))
		if err != nil {
			t.Fatal(err)
		}
		return int(n.Int64() + lo)
	}
	return &addrSpace{a: r(10, 250), b: r(1, 250), next: 1}
}

func (s *addrSpace) addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next > 254 {
		s.next = 1
		s.b = s.b%250 + 1
	}
	ip := fmt.Sprintf("127.%d.%d.%d:0", s.a, s.b, s.next)
	s.next++
	return ip
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.Out = io.Discard
	l.Level = logrus.WarnLevel
	if os.Getenv("GOSSIP_TEST_LOG") != "" {
		l.Out = os.Stderr
		l.Level = logrus.DebugLevel
	}
	return logrus.NewEntry(l)
}

// testSigner is a fixed agent signing key, so that fuzz seeds stay valid.
var testSigner = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func testAgentKey() ed25519.PublicKey { return testSigner.Public().(ed25519.PublicKey) }

func testKey(t testing.TB) []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// recorder collects events from a member's OnEvent callback.
type recorder struct {
	mu     sync.Mutex
	events []Event
	wake   chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) add(e Event) {
	if os.Getenv("GOSSIP_TEST_LOG") != "" {
		fmt.Fprintf(os.Stderr, "EVENT %s %s %+v\n", e.Kind, e.Peer.Name, e.Peer.Meta)
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// mark returns a position in the event list for wait.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// wait returns the first event at or after mark matching ok, waiting up to
// timeout.
func (r *recorder) wait(t testing.TB, mark int, timeout time.Duration, what string, ok func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		i := slices.IndexFunc(r.events[mark:], ok)
		var e Event
		if i >= 0 {
			e = r.events[mark+i]
		}
		r.mu.Unlock()
		if i >= 0 {
			return e
		}
		select {
		case <-r.wake:
		case <-deadline.C:
			t.Fatalf("no %s event within %s", what, timeout)
			return Event{}
		}
	}
}

// names returns the distinct peer names of events matching ok.
func (r *recorder) names(ok func(Event) bool) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for _, e := range r.events {
		if ok(e) {
			out[e.Peer.Name] = true
		}
	}
	return out
}

// eventually polls cond every 20 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: not within %s", what, timeout)
		}
	}
	return time.Since(start)
}

// cluster is an agent and its VMs on loopback addresses.
type cluster struct {
	site   string
	key    []byte
	timers Timers
	addrs  *addrSpace
	agent  *Pool
	events *recorder // the agent's
	vms    []*Member
}

func testTimers() Timers {
	t := FastTimers()
	t.Rejoin = 300 * time.Millisecond
	// Anti-entropy well inside spreadWithin: on a loaded machine UDP
	// gossip does get dropped (socket buffers), and the pool's answer to
	// that is the push/pull exchange, which at the default 30 s would
	// only repair after the tests' bounds.
	t.PushPullInterval = 3 * time.Second
	return t
}

// newCluster starts an agent and n VMs and waits until every member sees
// all the others.
func newCluster(t testing.TB, n int, timers Timers) *cluster {
	t.Helper()
	c := &cluster{site: "test", key: testKey(t), timers: timers, addrs: newAddrSpace(t), events: newRecorder()}
	agent, err := c.startAgent(c.addrs.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.agent = agent
	t.Cleanup(func() { _ = c.agent.n.shutdown(false, 0) })
	for i := range n {
		c.addVM(t, fmt.Sprintf("vm-%02d", i))
	}
	c.waitConverged(t)
	return c
}

func (c *cluster) startAgent(bind string) (*Pool, error) {
	return NewPool(Config{Site: c.site, Bind: bind, Key: c.key, Signer: testSigner, Timers: c.timers, Log: quietLog(), OnEvent: c.events.add})
}

func (c *cluster) addVM(t testing.TB, name string) *Member {
	t.Helper()
	m, err := NewMember(Config{Site: c.site, Name: name, Bind: c.addrs.addr(), Key: c.key, AgentKey: testAgentKey(), Timers: c.timers, Log: quietLog(),
		Meta: Meta{ServerID: "id-" + name, Group: "atlas"}}, c.agent.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.crash() })
	c.vms = append(c.vms, m)
	return m
}

func (c *cluster) live() []*Member {
	var out []*Member
	for _, m := range c.vms {
		if !m.n.closed.Load() {
			out = append(out, m)
		}
	}
	return out
}

// waitConverged waits until the agent sees every live VM and every live VM
// has joined and sees the agent. (Waiting for every VM to see every other
// at one instant is not robust on a loaded machine: 31 members on two shared
// cores suspect each other now and then, and refute.)
func (c *cluster) waitConverged(t testing.TB) {
	t.Helper()
	live := c.live()
	eventually(t, 15*time.Second, "pool converged", func() bool {
		seen := map[string]bool{}
		for _, p := range c.agent.Peers() {
			seen[p.Name] = true
		}
		for _, m := range live {
			if !seen[m.n.cfg.Name] || !m.agentAlive() {
				return false
			}
		}
		return true
	})
}
