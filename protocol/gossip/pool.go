package gossip

import (
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// LeaveTimeout is how long Close and Leave wait for a leave to be sent.
const LeaveTimeout = 2 * time.Second

// Pool is the agent's side of a site's gossip pool: it is the member VMs
// join, the origin of the squid list and of retirement orders, and it
// reports VMs joining, changing state, leaving and failing.
type Pool struct {
	n *node

	mu   sync.Mutex
	last uint64 // last version handed out
}

// NewPool starts the agent's member of cfg.Site's pool, named
// AgentName(cfg.Site), listening on cfg.Bind. cfg.Signer is required.
func NewPool(cfg Config) (*Pool, error) {
	cfg.Name = AgentName(cfg.Site)
	cfg.Meta = Meta{Role: RoleAgent, State: StateReady}
	if len(cfg.Signer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("gossip pool: signing key is %d bytes, want %d", len(cfg.Signer), ed25519.PrivateKeySize)
	}
	n, err := start(cfg, cfg.Signer.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	n.log.WithField("addr", n.addr()).Info("gossip pool started")
	return &Pool{n: n}, nil
}

// Addr is the agent's gossip address (host:port) that VMs join.
func (p *Pool) Addr() string { return p.n.addr() }

// Join contacts members at the given addresses (host:port), for an agent
// that restarted and knows where its VMs are; VMs also rejoin on their own.
// It returns how many it reached.
func (p *Pool) Join(addrs []string) (int, error) {
	n, err := p.n.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("join gossip members: %w", err)
	}
	return n, nil
}

// Peers lists the VMs (and any other members) the agent believes alive.
func (p *Pool) Peers() []Peer { return p.n.peers() }

// nextVersion returns a version newer than floor and than any handed out
// before; it starts from the clock so that a restarted agent's versions
// beat its previous ones.
func (p *Pool) nextVersion(floor uint64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := max(uint64(time.Now().UnixNano()), p.last+1, floor+1)
	p.last = v
	return v
}

// PublishSquids makes proxies (best first) the site's squid list and
// spreads it to every member.
func (p *Pool) PublishSquids(proxies []string) (SquidList, error) {
	l := SquidList{Version: p.nextVersion(p.n.store.currentSquids().Version), Proxies: append([]string(nil), proxies...)}
	msg, err := encodeSquids(l, p.n.cfg.Signer)
	if err != nil {
		return SquidList{}, fmt.Errorf("publish squid list: %w", err)
	}
	p.n.store.applySquids(l, msg)
	p.n.broadcast(squidsBroadcast, msg)
	p.n.log.WithFields(logrus.Fields{"version": l.Version, "proxies": l.Proxies}).Info("squid list published")
	return l, nil
}

// Squids returns the newest squid list the agent knows (zero if none).
func (p *Pool) Squids() SquidList { return p.n.store.currentSquids() }

// Retire orders the VM whose server name is server to retire by deadline
// and spreads the order through the pool. A later order for the same server
// replaces an earlier one.
func (p *Pool) Retire(server string, deadline time.Time, reason string) (RetireOrder, error) {
	var floor uint64
	if cur, ok := p.n.store.order(server); ok {
		floor = cur.Version
	}
	o := RetireOrder{Server: server, Deadline: deadline.Truncate(time.Millisecond), Reason: reason, Version: p.nextVersion(floor)}
	msg, err := encodeOrder(o, p.n.cfg.Signer)
	if err != nil {
		return RetireOrder{}, fmt.Errorf("retire %s through gossip: %w", server, err)
	}
	p.n.store.applyOrder(o, msg)
	p.n.broadcast(retireBroadcast(server), msg)
	p.n.log.WithFields(logrus.Fields{"vm": server, "deadline": o.Deadline, "reason": reason}).Info("retirement spread through gossip")
	return o, nil
}

// Forget drops the agent's retirement order for server, once the server is
// gone; members drop theirs an hour past its deadline.
func (p *Pool) Forget(server string) { p.n.store.forgetOrder(server) }

// Close leaves the pool (waiting up to LeaveTimeout for the leave to be
// sent) and stops. VMs rejoin a restarted agent on their own.
func (p *Pool) Close() error { return p.n.shutdown(true, LeaveTimeout) }
