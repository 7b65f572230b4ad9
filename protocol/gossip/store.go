package gossip

import (
	"sync"
	"time"
)

// orderTTL is how long past its deadline a retirement order is kept; by then
// the agent has deleted the server.
const orderTTL = time.Hour

// maxLeaving bounds the "leaving" notices an agent remembers.
const maxLeaving = 4096

// store holds what the pool spreads: the squid list and retirement orders,
// plus the "leaving" notices members send the agent.
type store struct {
	self string // this member's name: orders for it are its own
	now  func() time.Time

	mu        sync.Mutex
	squids    SquidList
	squidsMsg []byte // the signed message squids came in
	orders    map[string]heldOrder
	leaving   map[string]time.Time

	changed     chan struct{} // 1-buffered: squid list or own order changed
	retired     chan struct{} // closed when an order for self arrives
	retiredOnce sync.Once
}

// heldOrder is a retirement order and the signed message it came in.
type heldOrder struct {
	RetireOrder
	msg []byte
}

func newStore(self string, now func() time.Time) *store {
	return &store{
		self:    self,
		now:     now,
		orders:  map[string]heldOrder{},
		leaving: map[string]time.Time{},
		changed: make(chan struct{}, 1),
		retired: make(chan struct{}),
	}
}

func (s *store) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// applySquids keeps l, which came in the signed message msg, if it is newer
// than the current list.
func (s *store) applySquids(l SquidList, msg []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.Version <= s.squids.Version {
		return false
	}
	s.squids = SquidList{Version: l.Version, Proxies: append([]string(nil), l.Proxies...)}
	s.squidsMsg = msg
	s.signal()
	return true
}

// applyOrder keeps o, which came in the signed message msg, if it is newer
// than the order held for its server and has not expired.
func (s *store) applyOrder(o RetireOrder, msg []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if o.Server != s.self && now.After(o.Deadline.Add(orderTTL)) {
		return false
	}
	if cur, ok := s.orders[o.Server]; ok && o.Version <= cur.Version {
		return false
	}
	s.orders[o.Server] = heldOrder{RetireOrder: o, msg: msg}
	if o.Server == s.self {
		s.retiredOnce.Do(func() { close(s.retired) })
		s.signal()
	}
	if len(s.orders) > MaxOrders {
		s.pruneLocked(now)
	}
	return true
}

// pruneLocked drops expired orders (never this member's own) and, past
// MaxOrders, the oldest ones. It runs on every push/pull and when the
// orders overflow.
func (s *store) pruneLocked(now time.Time) {
	for name, o := range s.orders {
		if name != s.self && now.After(o.Deadline.Add(orderTTL)) {
			delete(s.orders, name)
		}
	}
	for len(s.orders) > MaxOrders {
		oldest := ""
		for name, o := range s.orders {
			if name != s.self && (oldest == "" || o.Version < s.orders[oldest].Version) {
				oldest = name
			}
		}
		delete(s.orders, oldest)
	}
}

func (s *store) forgetOrder(server string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.orders, server)
}

func (s *store) currentSquids() SquidList {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SquidList{Version: s.squids.Version, Proxies: append([]string(nil), s.squids.Proxies...)}
}

func (s *store) order(server string) (RetireOrder, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[server]
	return o.RetireOrder, ok
}

// snapshot returns the signed messages of the squid list and of the live
// orders, for push/pull.
func (s *store) snapshot() ([]byte, [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(s.now())
	orders := make([][]byte, 0, len(s.orders))
	for _, o := range s.orders {
		orders = append(orders, o.msg)
	}
	return s.squidsMsg, orders
}

// noteLeaving records that server announced it is leaving.
func (s *store) noteLeaving(server string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.leaving) >= maxLeaving {
		for name, at := range s.leaving {
			if now.Sub(at) > time.Minute {
				delete(s.leaving, name)
			}
		}
		if len(s.leaving) >= maxLeaving {
			return
		}
	}
	s.leaving[server] = now
}

// takeLeaving reports, and forgets, whether server announced it was leaving.
func (s *store) takeLeaving(server string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.leaving[server]
	delete(s.leaving, server)
	return ok
}
