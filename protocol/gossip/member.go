package gossip

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Member is a VM's side of its site's gossip pool. It joins the agent, keeps
// rejoining whenever it does not see the agent alive, and holds the newest
// squid list and any retirement order for this VM.
type Member struct {
	n     *node
	join  string // the agent's gossip address
	agent string // the agent's node name

	joined     chan struct{}
	joinedOnce sync.Once
	stop       chan struct{}
	stopOnce   sync.Once
	loopDone   chan struct{}
}

// NewMember starts a VM's member of cfg.Site's pool, named cfg.Name (the
// server name), and joins the agent at agentAddr (host:port, port
// DefaultPort if omitted) in the background, retrying until it succeeds.
// cfg.AgentKey is required.
func NewMember(cfg Config, agentAddr string) (*Member, error) {
	if cfg.Name == AgentName(cfg.Site) {
		return nil, fmt.Errorf("gossip: a VM may not use the agent's name %q", cfg.Name)
	}
	host, port, err := hostPort(agentAddr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("gossip agent address %q: want host:port", agentAddr)
	}
	cfg.Meta.Role = RoleVM
	n, err := start(cfg, cfg.AgentKey)
	if err != nil {
		return nil, err
	}
	m := &Member{
		n:        n,
		join:     net.JoinHostPort(host, strconv.Itoa(port)),
		agent:    AgentName(cfg.Site),
		joined:   make(chan struct{}),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go m.joinLoop()
	return m, nil
}

// joinLoop joins the agent, with backoff, whenever the agent is not among
// the live members.
func (m *Member) joinLoop() {
	defer close(m.loopDone)
	t := m.n.cfg.Timers
	delay := min(100*time.Millisecond, t.Rejoin)
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-timer.C:
		}
		if m.agentAlive() {
			delay = t.Rejoin
		} else if _, err := m.n.ml.Join([]string{m.join}); err != nil {
			failures++
			if failures%10 == 1 {
				m.n.log.WithError(err).WithFields(logrus.Fields{"agent": m.join, "attempts": failures}).Warn("cannot join gossip pool")
			}
			delay = min(delay*2, t.Rejoin)
		} else {
			m.n.log.WithFields(logrus.Fields{"agent": m.join, "attempts": failures + 1}).Info("joined gossip pool")
			failures = 0
			delay = t.Rejoin
			m.joinedOnce.Do(func() { close(m.joined) })
		}
		timer.Reset(delay)
	}
}

func (m *Member) agentAlive() bool {
	_, ok := m.n.peerNode(m.agent)
	return ok
}

// Addr is this member's gossip address (host:port).
func (m *Member) Addr() string { return m.n.addr() }

// Joined is closed once the member has first joined the agent.
func (m *Member) Joined() <-chan struct{} { return m.joined }

// Peers lists the other members this VM believes alive.
func (m *Member) Peers() []Peer { return m.n.peers() }

// Squids returns the newest squid list this VM has heard of (zero Version
// if none yet).
func (m *Member) Squids() SquidList { return m.n.store.currentSquids() }

// RetireOrder returns the retirement order for this VM, if one was given.
func (m *Member) RetireOrder() (RetireOrder, bool) { return m.n.store.order(m.n.cfg.Name) }

// Retired is closed when a retirement order for this VM first arrives.
func (m *Member) Retired() <-chan struct{} { return m.n.store.retired }

// Changed receives (coalesced) whenever the squid list or this VM's
// retirement order changes.
func (m *Member) Changed() <-chan struct{} { return m.n.store.changed }

// SetState advertises s (such as StateDraining) to the pool, waiting up
// to the pool's TCP timeout for the update to be sent.
func (m *Member) SetState(s State) error {
	if m.n.closed.Load() {
		return errors.New("gossip member has left")
	}
	return m.n.setState(s, m.n.cfg.Timers.TCPTimeout)
}

// Leave leaves the pool on purpose: it advertises StateLeaving, tells the
// agent directly, leaves (waiting up to timeout for the leave to be sent)
// and stops. The agent sees EventLeave with Meta.State StateLeaving.
func (m *Member) Leave(timeout time.Duration) error {
	m.stopOnce.Do(func() { close(m.stop) })
	<-m.loopDone
	if m.n.closed.Load() {
		return nil
	}
	// The direct notice is what the agent relies on; the meta update tells
	// the other members, best effort.
	if err := m.noticeAgent(); err != nil {
		m.n.log.WithError(err).Warn("agent not told of leave; it will see a plain leave")
	}
	if err := m.n.setState(StateLeaving, min(timeout/4, 3*m.n.cfg.Timers.GossipInterval)); err != nil {
		m.n.log.WithError(err).Debug("leaving state not fully spread")
	}
	return m.n.shutdown(true, timeout)
}

// noticeAgent tells the agent, over TCP, that this VM is leaving.
func (m *Member) noticeAgent() error {
	msg, err := encodeLeaving(m.n.cfg.Name)
	if err != nil {
		return err
	}
	agent, ok := m.n.peerNode(m.agent)
	if !ok {
		return fmt.Errorf("agent %s not in the pool", m.agent)
	}
	if err := m.n.ml.SendReliable(&agent, msg); err != nil {
		return fmt.Errorf("send leaving notice to %s: %w", agent.Address(), err)
	}
	return nil
}
