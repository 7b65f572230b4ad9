package hub

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub/squid"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/squidreg"
)

// link is the hub's end of one cloud's agent: the current session, if any,
// and the last view of the cloud it reported. The session's reader
// goroutine is the only writer of the view; everyone else reads the
// published copy.
type link struct {
	name string
	view atomic.Pointer[cloudView]

	mu   sync.Mutex // guards sess
	sess *session
}

// cloudView is what one cloud's agent last told the hub. It is immutable
// once published: a change publishes a new view.
type cloudView struct {
	Connected     bool
	Session       int
	Epoch         string
	Software      string
	Addr          netip.Addr
	ConnectedAt   time.Time
	LastHeartbeat time.Time
	Heartbeats    uint64
	// Inventory is the last inventory (of any session); nil until the
	// first one since the hub started.
	Inventory   *protocol.Inventory
	InventoryAt time.Time
	// InventorySession is the session the inventory came on.
	InventorySession int
}

// session is one agent session's outbound side: an ordered queue drained
// by one writer goroutine, so commands reach the agent in the order the
// hub sent them and a slow stream never blocks the control loop.
type session struct {
	id    int
	epoch string
	out   chan protocol.Message
	done  chan struct{} // closed when the session ends
	// overflow is called (once) when the queue is full: the session is
	// then closed and the agent reconnects and reports afresh.
	overflow func()
	once     sync.Once
	// close ends the session's connection.
	close func(reason string)
	// resyncing is set while a full inventory asked for has not come.
	resyncing atomic.Bool
}

// sendQueue is how many messages may wait for one agent.
const sendQueue = 4096

// enqueue puts m on the session's queue without blocking. It reports false
// when the session is over or its queue is full (the session is then
// closed: the hub replans from the agent's next inventory).
func (s *session) enqueue(m protocol.Message) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.out <- m:
		return true
	default:
		s.once.Do(func() {
			if s.overflow != nil {
				s.overflow()
			}
		})
		return false
	}
}

func (l *link) current() *session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sess
}

// load returns the published view (never nil).
func (l *link) load() *cloudView {
	if v := l.view.Load(); v != nil {
		return v
	}
	return &cloudView{}
}

// update publishes a changed copy of the view on behalf of session s; it
// does nothing once s is no longer the link's session (a newer session
// owns the view).
func (l *link) update(s *session, f func(v *cloudView)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sess != s {
		return
	}
	v := *l.load()
	f(&v)
	l.view.Store(&v)
}

// linkFor returns the link of a cloud, creating it.
func (h *Hub) linkFor(name string) *link {
	h.linksMu.RLock()
	l := h.links[name]
	h.linksMu.RUnlock()
	if l != nil {
		return l
	}
	h.linksMu.Lock()
	defer h.linksMu.Unlock()
	if l = h.links[name]; l == nil {
		l = &link{name: name}
		h.links[name] = l
	}
	return l
}

// allLinks returns every link, for the control loop and readers.
func (h *Hub) allLinks() []*link {
	h.linksMu.RLock()
	defer h.linksMu.RUnlock()
	out := make([]*link, 0, len(h.links))
	for _, l := range h.links {
		out = append(out, l)
	}
	return out
}

// serveAgent runs one agent session until it ends or ctx is done.
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

	l := h.linkFor(name)
	sess := &session{id: int(h.sessionSeq.Add(1)), epoch: hello.Epoch, out: make(chan protocol.Message, sendQueue),
		done: make(chan struct{})}
	sess.close = func(reason string) { _ = qc.CloseWithError(0, reason) }
	sess.overflow = func() {
		h.m.sendOverflows.WithLabelValues(name).Inc()
		log.Warn("agent's send queue is full; closing its session (it reconnects and reports afresh)")
		_ = qc.CloseWithError(2, "send queue full")
	}
	now := h.now()
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(qc.RemoteAddr().String()); err == nil {
		addr = ap.Addr().Unmap()
	}
	l.mu.Lock()
	prev := l.sess
	l.sess = sess
	v := *l.load()
	v.Connected, v.Session, v.Epoch, v.Software, v.Addr = true, sess.id, hello.Epoch, hello.Software, addr
	v.ConnectedAt, v.LastHeartbeat = now, now
	l.view.Store(&v)
	l.mu.Unlock()
	if prev != nil {
		log.Info("agent reconnected; replacing its previous session")
		prev.close("replaced by a newer session")
	}
	log.WithFields(logrus.Fields{"software": hello.Software, "epoch": hello.Epoch}).Info("agent connected")
	h.m.sessions.WithLabelValues(name).Inc()
	h.wake()

	var wg sync.WaitGroup
	wg.Go(func() { h.writeLoop(sess, conn, log) })
	defer func() {
		close(sess.done)
		l.mu.Lock()
		if l.sess == sess {
			v := *l.load()
			v.Connected = false
			l.view.Store(&v)
			l.sess = nil
		}
		l.mu.Unlock()
		_ = qc.CloseWithError(0, "session over")
		wg.Wait()
		h.wake()
	}()
	// A closed connection (hub shutting down, agent gone) unblocks Recv.
	go func() {
		select {
		case <-qc.Context().Done():
		case <-ctx.Done():
			_ = qc.CloseWithError(0, "hub shutting down")
		}
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
		h.receive(l, sess, m, log)
	}
}

// writeLoop sends the session's queue in order until the session ends.
func (h *Hub) writeLoop(s *session, conn *protocol.Conn, log *logrus.Entry) {
	for {
		select {
		case <-s.done:
			return
		case m := <-s.out:
			if err := conn.Send(m); err != nil {
				log.WithError(err).Debug("send to agent; the session is ending")
				return
			}
		}
	}
}

// receive handles one message of a session: views are updated here, the
// rest goes to the control loop.
func (h *Hub) receive(l *link, s *session, m protocol.Message, log *logrus.Entry) {
	now := h.now()
	switch v := m.(type) {
	case protocol.Heartbeat:
		l.update(s, func(cv *cloudView) { cv.LastHeartbeat = now; cv.Heartbeats++ })
		h.m.heartbeats.WithLabelValues(l.name).Inc()
	case protocol.Inventory:
		inv := v
		first := l.load().InventorySession != s.id
		l.update(s, func(cv *cloudView) {
			cv.Inventory, cv.InventoryAt, cv.InventorySession, cv.LastHeartbeat = &inv, now, s.id, now
		})
		s.resyncing.Store(false)
		if inv.Storage != nil {
			h.storage.Update(l.name, *inv.Storage)
		}
		h.squidsFromAgent(l.name, inv.Squids, log)
		h.pushSquids(l, s)
		if first {
			h.wake() // a cloud reporting for the first time may end the startup grace
		}
	case protocol.InventoryDelta:
		cur := l.load()
		if cur.Inventory == nil || cur.InventorySession != s.id {
			h.resync(l, s, "no full inventory on this session yet", log)
			return
		}
		inv, err := protocol.ApplyDelta(*cur.Inventory, v)
		if err != nil {
			h.resync(l, s, err.Error(), log)
			return
		}
		l.update(s, func(cv *cloudView) {
			cv.Inventory, cv.InventoryAt, cv.LastHeartbeat = &inv, now, now
		})
		h.m.deltas.WithLabelValues(l.name).Inc()
		if v.Storage != nil {
			h.storage.Update(l.name, *v.Storage)
		}
	case protocol.Result:
		if at, ok := h.inflight.done(v.CommandID); ok {
			h.m.cmdSeconds.Observe(now.Sub(at).Seconds())
		}
		h.inbox.put(inboxItem{cloud: l.name, session: s.id, result: v})
	case protocol.ImageProgress:
		h.progress.put(l.name, v)
	case protocol.Error:
		log.WithField("code", v.Code).Warn("agent reported a protocol error: " + v.Message)
	default:
		log.WithField("kind", m.Kind().String()).Warn("unexpected message from agent")
	}
}

// resync asks an agent for a full inventory after a delta that could not
// be applied (missed or not matching); the view keeps its last good
// inventory, which ages out of freshness if no full one comes.
func (h *Hub) resync(l *link, s *session, why string, log *logrus.Entry) {
	if !s.resyncing.CompareAndSwap(false, true) {
		return // asked already; deltas until the full inventory are moot
	}
	h.m.resyncs.WithLabelValues(l.name).Inc()
	log.WithField("why", why).Info("inventory delta not applied; asking the agent for a full inventory")
	s.enqueue(protocol.Resync{Reason: why})
}

// squidsFromAgent registers the squids an agent is configured with; an
// agent speaks for its own site only.
func (h *Hub) squidsFromAgent(cloud string, infos []protocol.SquidInfo, log *logrus.Entry) {
	regs := make([]squidreg.Registration, 0, len(infos))
	for _, q := range infos {
		r := squidreg.Registration{Name: q.Name, Host: q.Host, Port: q.Port, Access: squidreg.Access(q.Access), Domain: q.Domain,
			Load: q.Load, MaxLoad: q.MaxLoad, CacheManager: q.CacheManager, GeoIP: q.GeoIP, Latitude: q.Latitude,
			Longitude: q.Longitude, Site: cloud}
		for _, k := range q.Kinds {
			r.Kinds = append(r.Kinds, squidreg.Kind(k))
		}
		regs = append(regs, r)
	}
	if err := h.squids.ReplaceSource("agent:"+cloud, regs); err != nil {
		log.WithError(err).Warn("squids from agent")
	}
}

// squidKinds are the upstream kinds whose rankings agents get.
var squidKinds = []squidreg.Kind{squidreg.KindCVMFS, squidreg.KindFrontier}

// pushSquids queues, for a cloud's agent, the current ranking for each
// kind, as seen from the agent's address (its VMs are in the same cloud).
func (h *Hub) pushSquids(l *link, s *session) {
	addr := l.load().Addr
	now := h.now()
	for _, k := range squidKinds {
		ans := h.squids.Nearest(squid.Query{Addr: addr, Site: l.name, Kind: k, N: 10})
		list := protocol.SquidList{Upstream: string(k), At: now}
		for _, c := range ans.Squids {
			list.Proxies = append(list.Proxies, protocol.SquidProxy{Name: c.Name, Address: c.Address, Cost: c.Cost,
				DistanceKm: c.DistanceKm, Load: c.Load})
		}
		s.enqueue(list)
	}
}

// inbox carries what sessions hand the control loop (command results).
type inbox struct {
	mu    sync.Mutex
	items []inboxItem
}

type inboxItem struct {
	cloud   string
	session int
	result  protocol.Result
}

func (b *inbox) put(it inboxItem) {
	b.mu.Lock()
	b.items = append(b.items, it)
	b.mu.Unlock()
}

func (b *inbox) take() []inboxItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.items
	b.items = nil
	return out
}

// inflight remembers when each command was queued, to time its round trip.
type inflight struct {
	mu sync.Mutex
	at map[string]time.Time
}

// maxInflight bounds the commands remembered; results that never come
// (lost sessions) would otherwise accumulate.
const maxInflight = 100000

func (f *inflight) sent(id string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at == nil || len(f.at) >= maxInflight {
		f.at = map[string]time.Time{}
	}
	f.at[id] = at
}

func (f *inflight) done(id string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.at[id]
	delete(f.at, id)
	return at, ok
}
