package agent

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/gossip"
)

// onGossipEvent learns of VMs joining, failing and leaving the site's pool.
// Only VMs whose check-in proved their identity are trusted: gossip meta is
// what a VM says about itself.
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
		s.unreachable = now
	case gossip.EventJoin, gossip.EventUpdate:
		s.unreachable, s.lastSeen = time.Time{}, now
	case gossip.EventLeave:
		if e.Peer.Meta.State == gossip.StateLeaving && !s.retireBy.IsZero() && s.drained.IsZero() {
			s.drained = now
		}
	}
	a.vms.mu.Unlock()
	a.log.WithFields(logrus.Fields{"vm": e.Peer.Name, "vm_id": id, "gossip": e.Kind.String()}).Info("VM gossip event")
	a.markChanged()
}
