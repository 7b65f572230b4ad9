// Package gossip is a site's gossip pool: the site agent and its VMs' vmagents
// form one hashicorp/memberlist pool, encrypted with a per-site key. The
// agent learns within about two seconds that a VM has died without polling
// it, and spreads the site's squid list and retirement orders through the
// pool. The agent runs a Pool; each vmagent runs a Member.
//
// # What travels
//
//   - Node meta (memberlist's alive messages): each member's role, server
//     id, group and state (ready, draining, leaving).
//   - Gossip messages (piggybacked on memberlist's UDP packets, at most
//     MaxMessageSize bytes): the squid list, versioned so that a newer
//     list replaces an older one, and retirement orders by server name with
//     an absolute deadline (VMs' clocks are assumed NTP-synchronised). The
//     agent signs both with its Ed25519 key; every member checks the
//     signature and relays a message it had not seen, so it spreads
//     epidemically. The agent is the only origin.
//   - Push/pull state (TCP, every PushPullInterval and at join): the signed
//     squid list and live orders, so a VM that joins late or missed a
//     broadcast catches up, and a restarted agent learns the newest version.
//   - A direct "leaving" notice (TCP) from a VM to the agent just before it
//     leaves, so the agent can tell a planned exit from a crash.
//
// Every message, meta and state is versioned (WireVersion), size-bounded and
// checked field by field on receipt; CBOR is decoded with fxamacker/cbor with
// tight limits (see FuzzDecodeMessage).
//
// # Trust
//
// The pool key (AES-256-GCM, memberlist's SecretKey) keeps outsiders out,
// and the pool label keeps sites apart. Every VM holds the pool key, so a
// VM whose root is compromised can still lie about itself (its meta, a
// "leaving" notice) or send garbage (dropped and counted); it cannot forge
// a squid list or a retirement order, which need the agent's signing key.
// Both keys live 0600 in the agent's state directory (SiteKeys).
//
// # Timers
//
// FastTimers are tuned for a LAN of tens to hundreds of VMs; see its doc for
// the values, why, and the measured detection times.
package gossip

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// DefaultPort is the gossip port (TCP and UDP) when an address has none.
const DefaultPort = 7946

// AgentName is the node name of a site's agent in its pool.
func AgentName(site string) string { return "agent-" + site }

// Label is the memberlist label of a site's pool: packets from another
// site's pool are refused even if they share a key.
func Label(site string) string { return "canopy/" + site }

// Timers are the failure-detection and gossip timers of a pool. All members
// of a pool should use the same.
type Timers struct {
	// ProbeInterval: each member probes one other member per interval.
	ProbeInterval time.Duration
	// ProbeTimeout: how long to wait for a direct ack before asking
	// IndirectChecks other members to probe.
	ProbeTimeout   time.Duration
	IndirectChecks int
	// SuspicionMult scales how long a suspect has to refute before it is
	// declared dead: SuspicionMult × log10(N) × ProbeInterval, up to
	// SuspicionMaxTimeoutMult times that without confirmations from other
	// members.
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// GossipInterval and GossipNodes: how often, and to how many members,
	// queued messages are sent.
	GossipInterval time.Duration
	GossipNodes    int
	// RetransmitMult: each member sends a message RetransmitMult × log10(N+1)
	// times.
	RetransmitMult int
	// PushPullInterval: full state exchange with one random member
	// (memberlist lengthens it for pools over 32 members).
	PushPullInterval    time.Duration
	GossipToTheDeadTime time.Duration
	// TCPTimeout bounds joins, push/pulls and direct messages.
	TCPTimeout time.Duration
	// Rejoin: how often a Member that does not see the agent alive tries
	// to join it again (at start, and after the agent restarted).
	Rejoin time.Duration
}

// FastTimers are the timers Canopy uses. In a pool of an agent and 30 VMs
// on two shared cores (BenchmarkFailureDetection, 10 crashes per run) the
// agent declared a crashed VM dead a median 1.7 s after the crash
// (1.5-2.0 s) at a load average of 10, and 1.9 s (1.5-3.8 s) at 15-20,
// with no or few live VMs falsely declared dead; memberlist's LAN defaults
// took 8.2 s (7.6-9.2 s). Halving the probe timers with SuspicionMult 3
// gained little (median 1.5 s) and falsely declared about 20 live VMs dead
// per run.
//
//   - ProbeInterval 200 ms, ProbeTimeout 100 ms: in-cloud RTTs are well under
//     a millisecond, so 100 ms leaves room for a VM whose CPUs are busy with
//     jobs. With N members each probing one member per interval, a dead
//     member is probed about every 200 ms. Each member sends 5 pings/s
//     (about 100 bytes each, encrypted): modest traffic.
//   - SuspicionMult 4, SuspicionMaxTimeoutMult 6: a suspect gets
//     4 × log10(N) × 200 ms (1.2 s at N=31) to refute once two other
//     members confirm the suspicion, up to six times that without
//     confirmations. A live but slow member (CPU steal, GC) has that long
//     to answer before it is declared dead, so false deaths stay rare; and
//     a false death is refuted and reported as a new EventJoin.
//   - GossipInterval 100 ms to 3 members, RetransmitMult 4: suspicion and
//     death messages, squid lists and orders reach every member in a few
//     hundred milliseconds; nothing is sent when nothing is queued.
//   - PushPullInterval 30 s: anti-entropy for missed messages.
//   - TCPTimeout 5 s, Rejoin 5 s.
func FastTimers() Timers {
	return Timers{
		ProbeInterval:           200 * time.Millisecond,
		ProbeTimeout:            100 * time.Millisecond,
		IndirectChecks:          3,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		GossipInterval:          100 * time.Millisecond,
		GossipNodes:             3,
		RetransmitMult:          4,
		PushPullInterval:        30 * time.Second,
		GossipToTheDeadTime:     15 * time.Second,
		TCPTimeout:              5 * time.Second,
		Rejoin:                  5 * time.Second,
	}
}

// LANTimers are memberlist's DefaultLANConfig timers, for comparison.
func LANTimers() Timers {
	c := memberlist.DefaultLANConfig()
	return Timers{
		ProbeInterval:           c.ProbeInterval,
		ProbeTimeout:            c.ProbeTimeout,
		IndirectChecks:          c.IndirectChecks,
		SuspicionMult:           c.SuspicionMult,
		SuspicionMaxTimeoutMult: c.SuspicionMaxTimeoutMult,
		GossipInterval:          c.GossipInterval,
		GossipNodes:             c.GossipNodes,
		RetransmitMult:          c.RetransmitMult,
		PushPullInterval:        c.PushPullInterval,
		GossipToTheDeadTime:     c.GossipToTheDeadTime,
		TCPTimeout:              c.TCPTimeout,
		Rejoin:                  5 * time.Second,
	}
}

func (t Timers) validate() error {
	switch {
	case t.ProbeInterval <= 0, t.ProbeTimeout <= 0, t.GossipInterval <= 0, t.PushPullInterval < 0,
		t.TCPTimeout <= 0, t.Rejoin <= 0, t.GossipToTheDeadTime < 0:
		return errors.New("gossip timers: durations must be positive")
	case t.ProbeTimeout >= t.ProbeInterval:
		return fmt.Errorf("gossip timers: probe timeout %s must be shorter than probe interval %s", t.ProbeTimeout, t.ProbeInterval)
	case t.SuspicionMult < 1, t.SuspicionMaxTimeoutMult < 1, t.GossipNodes < 1, t.RetransmitMult < 1, t.IndirectChecks < 0:
		return errors.New("gossip timers: multipliers and counts must be at least 1")
	}
	return nil
}

// Config configures a Pool or a Member.
type Config struct {
	// Site is the site name; it labels the pool.
	Site string
	// Name is this member's node name: the server name for a VM. A Pool
	// always uses AgentName(Site).
	Name string
	// Bind is the IP address and port to listen on (TCP and UDP); the port
	// defaults to DefaultPort, and 0 picks a free one. Default
	// 0.0.0.0:DefaultPort.
	Bind string
	// Advertise is the address other members should use, if not Bind's.
	Advertise string
	// Key is the site's pool key (KeySize bytes), shared by all members.
	Key []byte
	// Signer is the agent's signing key (Pool only; see SiteKeys).
	Signer ed25519.PrivateKey
	// AgentKey is the public half of the agent's Signer (Member only):
	// squid lists and orders not signed with it are dropped.
	AgentKey ed25519.PublicKey
	// Meta is what this member advertises; a Pool or Member sets Role, and
	// State defaults to ready.
	Meta Meta
	// Timers default to FastTimers().
	Timers Timers
	// Log receives this member's and memberlist's logs; default
	// logrus.StandardLogger().
	Log *logrus.Entry
	// OnEvent, if set, is called for every membership change of another
	// member, in order, on a goroutine of its own. It must not call Close
	// or Leave.
	OnEvent func(Event)
}

// hostPort splits addr, giving it DefaultPort if it has no port.
func hostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: the whole thing is the host.
		host, p = addr, strconv.Itoa(DefaultPort)
		if h := trimBrackets(addr); h != addr {
			host = h
		}
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: bad port %q", addr, p)
	}
	return host, port, nil
}

func trimBrackets(s string) string {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

// node is what a Pool and a Member share: one memberlist instance and the
// state it spreads.
type node struct {
	cfg      Config
	agentKey ed25519.PublicKey // checks squid lists and orders
	log      *logrus.Entry
	ml       *memberlist.Memberlist
	mlp      atomic.Pointer[memberlist.Memberlist] // ml, for callbacks that may run before start returns
	queue    *memberlist.TransmitLimitedQueue
	store    *store
	evq      *eventQueue

	metaMu  sync.Mutex
	meta    Meta
	metaEnc atomic.Pointer[[]byte]

	// peerMap is this member's view of the others, kept from memberlist's
	// events: the *Node values memberlist.Members returns are updated by
	// memberlist without a lock the caller could take, so they are never
	// read outside its callbacks.
	peersMu sync.Mutex
	peerMap map[string]peerEntry

	badMsgs   atomic.Uint64
	closeOnce sync.Once
	closed    atomic.Bool
}

// start validates cfg and starts memberlist; agentKey checks signed
// messages.
func start(cfg Config, agentKey ed25519.PublicKey) (*node, error) {
	if cfg.Log == nil {
		cfg.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.Timers == (Timers{}) {
		cfg.Timers = FastTimers()
	}
	if cfg.Bind == "" {
		cfg.Bind = net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultPort))
	}
	if cfg.Meta.State == "" {
		cfg.Meta.State = StateReady
	}
	if err := checkName("gossip site", cfg.Site, MaxNameLen); err != nil {
		return nil, err
	}
	if err := checkName("gossip node name", cfg.Name, MaxNameLen); err != nil {
		return nil, err
	}
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("gossip key is %d bytes, want %d", len(cfg.Key), KeySize)
	}
	if len(agentKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("gossip agent key is %d bytes, want %d", len(agentKey), ed25519.PublicKeySize)
	}
	if err := cfg.Timers.validate(); err != nil {
		return nil, err
	}
	metaEnc, err := encodeMeta(cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("gossip meta: %w", err)
	}
	host, port, err := hostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip bind: %w", err)
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("gossip bind %q: host must be an IP address", cfg.Bind)
	}

	n := &node{
		cfg:      cfg,
		agentKey: agentKey,
		log:      cfg.Log.WithFields(logrus.Fields{"component": "gossip", "node": cfg.Name}),
		store:    newStore(cfg.Name, time.Now),
		peerMap:  map[string]peerEntry{},
		meta:     cfg.Meta,
	}
	n.metaEnc.Store(&metaEnc)
	if cfg.OnEvent != nil {
		n.evq = newEventQueue(cfg.OnEvent, n.log)
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.Label = Label(cfg.Site)
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		ah, ap, err := hostPort(cfg.Advertise)
		if err != nil {
			n.stopEvents()
			return nil, fmt.Errorf("gossip advertise: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	mc.SecretKey = cfg.Key
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	t := cfg.Timers
	mc.ProbeInterval, mc.ProbeTimeout, mc.IndirectChecks = t.ProbeInterval, t.ProbeTimeout, t.IndirectChecks
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = t.SuspicionMult, t.SuspicionMaxTimeoutMult
	mc.GossipInterval, mc.GossipNodes, mc.RetransmitMult = t.GossipInterval, t.GossipNodes, t.RetransmitMult
	mc.PushPullInterval, mc.GossipToTheDeadTime, mc.TCPTimeout = t.PushPullInterval, t.GossipToTheDeadTime, t.TCPTimeout
	// A restarted agent with a new address may take its name back.
	mc.DeadNodeReclaimTime = 10 * time.Second
	mc.Logger = newStdLogger(n.log)
	d := &delegate{n: n}
	mc.Delegate, mc.Events, mc.Alive = d, d, d

	n.queue = &memberlist.TransmitLimitedQueue{NumNodes: n.numMembers, RetransmitMult: t.RetransmitMult}
	ml, err := memberlist.Create(mc)
	if err != nil {
		n.stopEvents()
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.Bind, err)
	}
	n.ml = ml
	n.mlp.Store(ml)
	return n, nil
}

func (n *node) numMembers() int {
	ml := n.mlp.Load()
	if ml == nil {
		return 1
	}
	return ml.NumMembers()
}

func (n *node) stopEvents() {
	if n.evq != nil {
		n.evq.stop()
	}
}

// addr is the address this member advertises.
func (n *node) addr() string { return n.ml.LocalNode().Address() }

// peers lists the other members believed alive, by name.
func (n *node) peers() []Peer {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	out := make([]Peer, 0, len(n.peerMap))
	for _, e := range n.peerMap {
		out = append(out, e.peer)
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// peerNode returns a copy of memberlist's record of a live member.
func (n *node) peerNode(name string) (memberlist.Node, bool) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	e, ok := n.peerMap[name]
	return e.node, ok
}

// setState changes the state this member advertises and waits up to timeout
// for the update to be sent.
func (n *node) setState(s State, timeout time.Duration) error {
	n.metaMu.Lock()
	m := n.meta
	m.State = s
	enc, err := encodeMeta(m)
	if err != nil {
		n.metaMu.Unlock()
		return err
	}
	n.meta = m
	n.metaEnc.Store(&enc)
	n.metaMu.Unlock()
	if err := n.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("announce state %s: %w", s, err)
	}
	return nil
}

// broadcast queues msg for gossip; a newer message of the same name
// replaces one still queued.
func (n *node) broadcast(name string, msg []byte) {
	n.queue.QueueBroadcast(&broadcast{name: name, msg: msg})
}

// shutdown leaves (if leave is set, waiting up to timeout) and stops.
func (n *node) shutdown(leave bool, timeout time.Duration) error {
	var err error
	n.closeOnce.Do(func() {
		if leave {
			if lerr := n.ml.Leave(timeout); lerr != nil {
				err = fmt.Errorf("leave gossip pool: %w", lerr)
			}
		}
		n.closed.Store(true)
		if serr := n.ml.Shutdown(); serr != nil && err == nil {
			err = fmt.Errorf("stop gossip: %w", serr)
		}
		n.stopEvents()
	})
	return err
}

type peerEntry struct {
	peer Peer
	node memberlist.Node // a copy, for SendReliable
}

type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *broadcast) Name() string                          { return b.name }
func (b *broadcast) Message() []byte                       { return b.msg }
func (b *broadcast) Finished()                             {}

const squidsBroadcast = "squids"

func retireBroadcast(server string) string { return "retire/" + server }

// delegate implements memberlist's Delegate, EventDelegate and AliveDelegate.
type delegate struct{ n *node }

func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.n.metaEnc.Load()
	if len(b) > limit {
		// encodeMeta keeps meta within memberlist's limit; never send more.
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	m, err := decodeMessage(b, d.n.agentKey)
	if err != nil {
		d.n.badMessage(err)
		return
	}
	msg := append([]byte(nil), b...)
	switch m.kind {
	case kindSquids:
		if d.n.store.applySquids(m.squids, msg) {
			d.n.log.WithFields(logrus.Fields{"version": m.squids.Version, "proxies": m.squids.Proxies}).Debug("squid list received")
			d.n.broadcast(squidsBroadcast, msg)
		}
	case kindRetire:
		if d.n.store.applyOrder(m.order, msg) {
			if m.order.Server == d.n.cfg.Name {
				d.n.log.WithFields(logrus.Fields{"deadline": m.order.Deadline, "reason": m.order.Reason}).Info("retirement ordered through gossip")
			}
			d.n.broadcast(retireBroadcast(m.order.Server), msg)
		}
	case kindLeaving:
		d.n.store.noteLeaving(m.leaving)
	}
}

func (n *node) badMessage(err error) {
	// Logged for the first and then every 100th: a member sending garbage
	// must not flood the log.
	if c := n.badMsgs.Add(1); c%100 == 1 {
		n.log.WithError(err).WithField("count", c).Warn("bad gossip message dropped")
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(bool) []byte {
	squids, orders := d.n.store.snapshot()
	b, err := encodeState(squids, orders)
	if err != nil {
		d.n.log.WithError(err).Error("gossip state not sent")
		return nil
	}
	return b
}

func (d *delegate) MergeRemoteState(buf []byte, _ bool) {
	if len(buf) == 0 {
		return
	}
	st, err := decodeState(buf, d.n.agentKey)
	if err != nil {
		d.n.badMessage(err)
		return
	}
	if st.squidsMsg != nil {
		d.n.store.applySquids(st.squids, st.squidsMsg)
	}
	for i, o := range st.orders {
		if d.n.store.applyOrder(o, st.orderMsgs[i]) && o.Server == d.n.cfg.Name {
			d.n.log.WithFields(logrus.Fields{"deadline": o.Deadline, "reason": o.Reason}).Info("retirement ordered through gossip")
		}
	}
}

// NotifyAlive refuses members whose meta is unreadable or whose role does
// not fit their name.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	m, err := decodeMeta(peer.Meta)
	if err != nil {
		return err
	}
	agent := AgentName(d.n.cfg.Site)
	if (m.Role == RoleAgent) != (peer.Name == agent) {
		return fmt.Errorf("node %q with role %s: only %q may be the agent", peer.Name, m.Role, agent)
	}
	return nil
}

func (d *delegate) NotifyJoin(m *memberlist.Node)   { d.event(EventJoin, m) }
func (d *delegate) NotifyUpdate(m *memberlist.Node) { d.event(EventUpdate, m) }

func (d *delegate) NotifyLeave(m *memberlist.Node) {
	kind := EventFail
	if m.State == memberlist.StateLeft {
		kind = EventLeave
	}
	d.event(kind, m)
}

// event runs under memberlist's node lock: it must be quick and must not
// call into memberlist.
func (d *delegate) event(k EventKind, m *memberlist.Node) {
	if m.Name == d.n.cfg.Name {
		return
	}
	meta, _ := decodeMeta(m.Meta) // NotifyAlive refused unreadable meta
	if k == EventLeave || k == EventFail {
		if d.n.store.takeLeaving(m.Name) {
			meta.State = StateLeaving
		}
		// A member that announced it was leaving left on purpose, even if
		// the failure detector declared it dead before its leave arrived.
		if meta.State == StateLeaving {
			k = EventLeave
		}
	}
	if k == EventJoin {
		d.n.store.takeLeaving(m.Name)
	}
	e := Event{Kind: k, Peer: Peer{Name: m.Name, Addr: m.Address(), Meta: meta}, At: time.Now()}
	d.n.peersMu.Lock()
	if k == EventJoin || k == EventUpdate {
		d.n.peerMap[m.Name] = peerEntry{peer: e.Peer, node: *m}
	} else {
		delete(d.n.peerMap, m.Name)
	}
	d.n.peersMu.Unlock()
	if d.n.evq != nil {
		d.n.evq.push(e)
	}
}
