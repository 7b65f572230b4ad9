package gossip

import (
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// EventKind says what happened to a member.
type EventKind uint8

// Event kinds.
const (
	// EventJoin: a member joined, or came back after being declared dead.
	EventJoin EventKind = iota + 1
	// EventUpdate: a member changed its meta (for example to draining).
	EventUpdate
	// EventLeave: a member left the pool on purpose: memberlist saw it
	// leave, or it announced StateLeaving before it stopped answering.
	EventLeave
	// EventFail: the failure detector declared a member dead (crash, power
	// off, network cut, or, rarely, a live member too slow to refute
	// suspicion, which then comes back with EventJoin).
	EventFail
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Peer is another member of the pool as this member knows it.
type Peer struct {
	// Name is the node name: the server name for VMs, AgentName(site) for
	// the agent.
	Name string
	// Addr is the member's gossip address (host:port).
	Addr string
	// Meta is what the member last advertised. On EventLeave and
	// EventFail its State is StateLeaving if the member announced it was
	// leaving (in its meta or by a direct notice to the agent).
	Meta Meta
}

// Event is a change in the pool's membership, seen by this member.
type Event struct {
	Kind EventKind
	Peer Peer
	// At is when this member learned of it.
	At time.Time
}

// maxQueuedEvents bounds events waiting for the callback.
const maxQueuedEvents = 4096

// eventQueue hands events to a callback on its own goroutine, in order, so
// that memberlist (which reports events holding its locks) never waits for
// the callback.
type eventQueue struct {
	fn  func(Event)
	log *logrus.Entry

	mu      sync.Mutex
	items   []Event
	dropped int
	wake    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

func newEventQueue(fn func(Event), log *logrus.Entry) *eventQueue {
	q := &eventQueue{fn: fn, log: log, wake: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go q.run()
	return q
}

func (q *eventQueue) push(e Event) {
	q.mu.Lock()
	if len(q.items) >= maxQueuedEvents {
		q.items = q.items[1:]
		q.dropped++
	}
	q.items = append(q.items, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) run() {
	defer close(q.stopped)
	for {
		select {
		case <-q.done:
			return
		case <-q.wake:
		}
		q.mu.Lock()
		items, dropped := q.items, q.dropped
		q.items, q.dropped = nil, 0
		q.mu.Unlock()
		if dropped > 0 {
			q.log.WithField("dropped", dropped).Warn("gossip event callback too slow; oldest events dropped")
		}
		for _, e := range items {
			q.fn(e)
		}
	}
}

// stop ends delivery; events not yet delivered are dropped.
func (q *eventQueue) stop() {
	close(q.done)
	<-q.stopped
}
