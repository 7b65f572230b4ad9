package hub

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// site is what the hub knows about one site and its agent.
type site struct {
	name     string
	conn     *protocol.Conn // nil while disconnected
	addr     netip.Addr     // the agent's address, for squid distances
	session  int
	software string

	connectedAt   time.Time
	lastHeartbeat time.Time
	heartbeats    uint64

	inv   protocol.Inventory
	invAt time.Time

	// pending are servers the hub ordered that the cloud does not list yet.
	pending map[string]*pendingVM
	// outstanding are commands sent without a result yet; they are sent
	// again after a reconnect (agents carry out a command id once).
	outstanding map[string]protocol.Command
	// retiring are VMs the hub ordered retired, by id.
	retiring map[string]time.Time
	// errorSince is when the hub first saw each VM in error, by id.
	errorSince map[string]time.Time

	bootFailures int
	lastFailure  string
}

type pendingVM struct {
	name, group, vmType, flavor, planID, cmdID string
	cpus, memMiB                               int
	orderedAt                                  time.Time
	// ackedAt is when the agent reported the boot done; servers acked but
	// long unlisted freeze the cloud (planner.Cloud.Unlisted).
	ackedAt time.Time
}

// trackErrors keeps, for each VM the inventory shows in error, when the
// hub first saw it so; VMs no longer in error are forgotten.
func (s *site) trackErrors(now time.Time) {
	inError := make(map[string]bool)
	for _, vm := range s.inv.VMs {
		if vm.State != protocol.VMError {
			continue
		}
		inError[vm.ID] = true
		if _, ok := s.errorSince[vm.ID]; !ok {
			s.errorSince[vm.ID] = now
		}
	}
	for id := range s.errorSince {
		if !inError[id] {
			delete(s.errorSince, id)
		}
	}
}

// vmName finds a VM's name by id in an inventory's list.
func vmName(vms []protocol.VM, id string) string {
	for _, vm := range vms {
		if vm.ID == id {
			return vm.Name
		}
	}
	return ""
}

func (h *Hub) siteLocked(name string) *site {
	s, ok := h.sites[name]
	if !ok {
		s = &site{name: name, pending: map[string]*pendingVM{}, outstanding: map[string]protocol.Command{}, retiring: map[string]time.Time{}, errorSince: map[string]time.Time{}}
		h.sites[name] = s
	}
	return s
}

// serveAgent runs one agent session.
func (h *Hub) serveAgent(ctx context.Context, qc *quic.Conn) {
	log := h.log.WithField("remote", qc.RemoteAddr().String())
	name, err := protocol.PeerSite(qc, h.verifier)
	if err != nil { // the TLS handshake already checked; belt and braces
		log.WithError(err).Warn("agent refused")
		_ = qc.CloseWithError(1, "identity refused")
		return
	}
	log = log.WithField("site", name)
	actx, cancel := context.WithTimeout(ctx, protocol.HandshakeTimeout)
	st, err := qc.AcceptStream(actx)
	cancel()
	if err != nil {
		log.WithError(err).Warn("agent opened no control stream")
		_ = qc.CloseWithError(1, "no control stream")
		return
	}
	conn := protocol.NewConn(st, st)
	hello, err := protocol.ServerHandshake(conn, name, protocol.Welcome{HubID: h.cfg.ID,
		HeartbeatEvery: h.cfg.HeartbeatEvery, InventoryEvery: h.cfg.InventoryEvery})
	if err != nil {
		log.WithError(err).Warn("agent handshake refused")
		_ = st.Close()
		_ = qc.CloseWithError(1, "handshake refused")
		return
	}

	h.mu.Lock()
	s := h.siteLocked(name)
	h.sessionSeq++
	session := h.sessionSeq
	if s.conn != nil {
		log.Info("agent reconnected; replacing its previous session")
	}
	s.conn, s.session, s.software = conn, session, hello.Software
	if ap, err := netip.ParseAddrPort(qc.RemoteAddr().String()); err == nil {
		s.addr = ap.Addr().Unmap()
	}
	s.connectedAt, s.lastHeartbeat = h.now(), h.now()
	resend := make([]protocol.Command, 0, len(s.outstanding))
	for _, c := range s.outstanding {
		resend = append(resend, c)
	}
	h.mu.Unlock()
	log.WithField("software", hello.Software).Info("agent connected")
	h.m.sessions.WithLabelValues(name).Inc()
	for _, c := range resend {
		if err := conn.Send(c); err != nil {
			break
		}
	}

	defer func() {
		h.mu.Lock()
		if s.session == session {
			s.conn = nil
		}
		h.mu.Unlock()
		_ = qc.CloseWithError(0, "session over")
	}()
	go func() {
		<-qc.Context().Done()
		st.CancelRead(0)
	}()
	for {
		m, err := conn.Recv()
		if err != nil {
			var fe *protocol.FrameError
			if errors.As(err, &fe) {
				_ = conn.SendError(err)
				log.WithError(err).Warn("bad frame from agent; closing session")
				_ = st.Close()
				return
			}
			if ctx.Err() == nil {
				log.WithError(err).Info("agent disconnected")
			}
			return
		}
		h.handle(s, session, m, log)
	}
}

func (h *Hub) handle(s *site, session int, m protocol.Message, log *logrus.Entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.session != session {
		return // a newer session took over
	}
	now := h.now()
	switch v := m.(type) {
	case protocol.Heartbeat:
		s.lastHeartbeat = now
		s.heartbeats++
		h.m.heartbeats.WithLabelValues(s.name).Inc()
	case protocol.Inventory:
		prev := s.inv
		s.inv, s.invAt, s.lastHeartbeat = v, now, now
		if v.Storage != nil {
			h.storage.Update(s.name, *v.Storage)
		}
		h.squidsFromAgent(s, v.Squids, log)
		h.pushSquids(s)
		listed := make(map[string]bool, len(v.VMs))
		ids := make(map[string]bool, len(v.VMs))
		for _, vm := range v.VMs {
			listed[vm.Name] = true
			ids[vm.ID] = true
		}
		for name := range s.pending {
			if listed[name] {
				delete(s.pending, name)
			}
		}
		for id := range s.retiring {
			if !ids[id] {
				delete(s.retiring, id)
				h.appendEvent(s.name, id, "", "deleted", "retired server no longer listed")
				if name := vmName(prev.VMs, id); name != "" {
					h.invalidate(s.name, name)
				}
			}
		}
		s.trackErrors(now)
	case protocol.Result:
		cmd, ok := s.outstanding[v.CommandID]
		delete(s.outstanding, v.CommandID)
		if v.OK {
			log.WithField("command", v.CommandID).Debug("command done")
			if ok && cmd.Op == protocol.CmdBoot {
				h.history.BootSucceeded(s.name, cmd.Boot.Image, now)
				for _, p := range s.pending {
					if p.cmdID == v.CommandID {
						p.ackedAt = now
					}
				}
			}
			return
		}
		log.WithFields(logrus.Fields{"command": v.CommandID, "class": v.Class}).Warn("command failed: " + v.Error)
		if ok && cmd.Op == protocol.CmdBoot {
			s.bootFailures++
			s.lastFailure = string(v.Class) + ": " + v.Error
			h.m.bootFailures.WithLabelValues(s.name, string(v.Class)).Inc()
			h.history.BootFailed(s.name, cmd.Boot.Image, v.Class, now, fmt.Sprintf("%s: %s", v.Class, v.Error))
			h.appendEvent(s.name, "", cmd.Boot.PlanID, "boot_failed", fmt.Sprintf("%s: %s", v.Class, v.Error))
			// Servers the cloud did not create are no longer pending; the
			// next inventory shows the ones it did.
			for name, p := range s.pending {
				if p.cmdID == v.CommandID {
					delete(s.pending, name)
				}
			}
		}
	case protocol.Error:
		log.WithField("code", v.Code).Warn("agent reported a protocol error: " + v.Message)
	default:
		log.WithField("kind", m.Kind().String()).Warn("unexpected message from agent")
	}
}

// squidsFromAgent registers the squids an agent is configured with; an
// agent speaks for its own site only.
func (h *Hub) squidsFromAgent(s *site, infos []protocol.SquidInfo, log *logrus.Entry) {
	regs := make([]squidreg.Registration, 0, len(infos))
	for _, q := range infos {
		r := squidreg.Registration{Name: q.Name, Host: q.Host, Port: q.Port, Access: squidreg.Access(q.Access), Domain: q.Domain,
			Load: q.Load, MaxLoad: q.MaxLoad, CacheManager: q.CacheManager, GeoIP: q.GeoIP, Latitude: q.Latitude,
			Longitude: q.Longitude, Site: s.name}
		for _, k := range q.Kinds {
			r.Kinds = append(r.Kinds, squidreg.Kind(k))
		}
		regs = append(regs, r)
	}
	if err := h.squids.ReplaceSource("agent:"+s.name, regs); err != nil {
		log.WithError(err).Warn("squids from agent")
	}
}

// squidKinds are the upstream kinds whose rankings agents get.
var squidKinds = []squidreg.Kind{squidreg.KindCVMFS, squidreg.KindFrontier}

// pushSquids sends a site's agent the current ranking for each kind, as
// seen from the agent's address (its VMs are in the same cloud).
func (h *Hub) pushSquids(s *site) {
	if s.conn == nil {
		return
	}
	conn, addr := s.conn, s.addr
	now := h.now()
	var lists []protocol.SquidList
	for _, k := range squidKinds {
		ans := h.squids.Nearest(squid.Query{Addr: addr, Site: s.name, Kind: k, N: 10})
		l := protocol.SquidList{Upstream: string(k), At: now}
		for _, c := range ans.Squids {
			l.Proxies = append(l.Proxies, protocol.SquidProxy{Name: c.Name, Address: c.Address, Cost: c.Cost,
				DistanceKm: c.DistanceKm, Load: c.Load})
		}
		lists = append(lists, l)
	}
	go func() {
		for _, l := range lists {
			if err := conn.Send(l); err != nil {
				return
			}
		}
	}()
}

// invalidate tells the job source a VM is gone, off the session's path.
func (h *Hub) invalidate(site, vmName string) {
	inv, ok := h.source.(Invalidator)
	if !ok {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := inv.Invalidate(ctx, vmName); err != nil {
			h.log.WithFields(logrus.Fields{"site": site, "vm": vmName}).WithError(err).Warn("invalidate the VM's ads in the pool")
		}
	}()
}

// send delivers cmd to a site, remembering it until its result arrives.
func (h *Hub) sendLocked(s *site, cmd protocol.Command) {
	s.outstanding[cmd.ID] = cmd
	if s.conn == nil {
		return
	}
	conn := s.conn
	go func() {
		if err := conn.Send(cmd); err != nil {
			h.log.WithField("site", s.name).WithError(err).Warn("send command; it is resent after reconnect")
		}
	}()
}
