package agent

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
)

// onGossipEvent learns of VMs joining, failing and leaving the site's pool.
// Only VMs whose check-in proved their identity are trusted: gossip meta is
// what a VM says about itself. A failed member is marked unreachable, which
// the hub sees; it is never a reason to delete (unknown is not idle). A
// member that leaves says its vmagent stopped, not that no job runs: only
// a "drained" check-in (HTCondor's own word, relayed) counts as drained.
func (a *Agent) onGossipEvent(e gossip.Event) {
	id := e.Peer.Meta.ServerID
	if e.Peer.Meta.Role != gossip.RoleVM || id == "" {
		return
	}
	now := a.now()
	a.vms.mu.Lock()
	s, ok := a.vms.byID[id]
	if !ok || s.name != e.Peer.Name {
		a.vms.mu.Unlock()
		return
	}
	switch e.Kind {
	case gossip.EventFail:
		if s.unreachable.IsZero() {
			s.unreachable = now
			a.vms.dirty[id] = struct{}{}
		}
	case gossip.EventJoin, gossip.EventUpdate:
		if !s.unreachable.IsZero() {
			s.unreachable = time.Time{}
			a.vms.dirty[id] = struct{}{}
		}
		if e.Peer.Meta.State == gossip.StateDraining && s.retireState == protocol.RetireOrdered {
			s.retireState = protocol.RetireDraining
			a.vms.dirty[id] = struct{}{}
		}
	}
	a.vms.mu.Unlock()
	a.log.WithFields(logrus.Fields{"vm": e.Peer.Name, "vm_id": id, "gossip": e.Kind.String()}).Info("VM gossip event")
	a.markChanged()
}
