package agent

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/protocol"
)

// listCounter counts listings and can hold them (a slow cloud API).
type listCounter struct {
	*fakeDriver
	lists atomic.Int64
	hold  chan struct{} // if set, Servers waits on it
}

func (c *listCounter) Servers(ctx context.Context) ([]driver.Server, error) {
	c.lists.Add(1)
	if c.hold != nil {
		select {
		case <-c.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.fakeDriver.Servers(ctx)
}

// TestOneListingServesMany: a burst of check-in lookups, inventories and
// commands within a second is served by one listing of the cloud.
func TestOneListingServesMany(t *testing.T) {
	d := &listCounter{fakeDriver: newFakeDriver()}
	for i, name := range []string{"vm-a", "vm-b", "vm-c"} {
		id := string(rune('a' + i))
		d.servers[id] = driver.Server{ID: id, Name: name, Status: driver.StatusActive, Metadata: map[string]string{driver.MetaHub: "hub"}}
	}
	a := testAgent(t, d)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, ok, err := a.lookupServer(context.Background(), "b"); err != nil || !ok {
				t.Errorf("lookup: %v %v", ok, err)
			}
		})
	}
	wg.Go(func() {
		if _, err := a.inventory(context.Background()); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		a.execute(context.Background(), protocol.Command{ID: "r1", Op: protocol.CmdRetire, Retire: &protocol.RetireCommand{VMIDs: []string{"a"}, Deadline: time.Hour}})
	})
	wg.Wait()
	if n := d.lists.Load(); n > 2 {
		t.Fatalf("%d listings for a burst of 52 readers, want at most 2", n)
	}
	// A server missing from the listing is looked for in a new one.
	d.mu.Lock()
	d.servers["n"] = driver.Server{ID: "n", Name: "vm-new", Status: driver.StatusActive, Metadata: map[string]string{driver.MetaHub: "hub"}}
	d.mu.Unlock()
	before := d.lists.Load()
	if _, ok, err := a.lookupServer(context.Background(), "n"); err != nil || !ok {
		t.Fatalf("a new server not found: %v %v", ok, err)
	}
	if d.lists.Load() != before+1 {
		t.Fatalf("a missing server did not make one new listing")
	}
}

// pipeConn is both ends of an in-memory frame stream: what the agent sends
// is read by the test.
func pipeConn() (agentSide, hubSide *protocol.Conn) {
	ar, hw := io.Pipe()
	hr, aw := io.Pipe()
	return protocol.NewConn(ar, aw), protocol.NewConn(hr, hw)
}

// recvUntil reads messages from c until one matches or the deadline.
func recvUntil(t *testing.T, c *protocol.Conn, limit time.Duration, match func(protocol.Message) bool) protocol.Message {
	t.Helper()
	got := make(chan protocol.Message, 1)
	go func() {
		for {
			m, err := c.Recv()
			if err != nil {
				close(got)
				return
			}
			if match(m) {
				got <- m
				return
			}
		}
	}()
	select {
	case m, ok := <-got:
		if !ok {
			t.Fatal("stream ended")
		}
		return m
	case <-time.After(limit):
		t.Fatalf("nothing matching within %s", limit)
	}
	return nil
}

// TestHeartbeatsDoNotWaitForTheCloud: while the cloud's listing hangs,
// heartbeats go on.
func TestHeartbeatsDoNotWaitForTheCloud(t *testing.T) {
	d := &listCounter{fakeDriver: newFakeDriver(), hold: make(chan struct{})}
	defer close(d.hold)
	a := testAgent(t, d)
	ac, hc := pipeConn()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := protocol.Welcome{HeartbeatEvery: 20 * time.Millisecond, InventoryEvery: 20 * time.Millisecond}
	var df protocol.Differ
	go func() { _ = a.heartbeatLoop(ctx, ac, w) }()
	go func() { _ = a.inventoryLoop(ctx, ac, w, &df) }()
	for range 3 {
		recvUntil(t, hc, 5*time.Second, func(m protocol.Message) bool { _, ok := m.(protocol.Heartbeat); return ok })
	}
	if d.lists.Load() == 0 {
		t.Fatal("the inventory loop never listed: the test proves nothing")
	}
}

// TestDeltasAfterFullAndResync: after a full inventory the agent sends
// only changes; a resync brings a full inventory again.
func TestDeltasAfterFullAndResync(t *testing.T) {
	d := newFakeDriver()
	d.servers["a"] = driver.Server{ID: "a", Name: "vm-a", Status: driver.StatusActive, Metadata: map[string]string{driver.MetaHub: "hub"}}
	a := testAgent(t, d)
	ac, hc := pipeConn()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var df protocol.Differ
	go func() {
		if err := a.sendFull(ctx, ac, &df); err == nil {
			_ = a.inventoryLoop(ctx, ac, protocol.Welcome{InventoryEvery: time.Hour}, &df)
		}
	}()
	full := recvUntil(t, hc, 5*time.Second, func(m protocol.Message) bool { _, ok := m.(protocol.Inventory); return ok }).(protocol.Inventory)
	if len(full.VMs) != 1 {
		t.Fatalf("full inventory %+v", full)
	}
	d.mu.Lock()
	d.servers["b"] = driver.Server{ID: "b", Name: "vm-b", Status: driver.StatusBuild, Metadata: map[string]string{driver.MetaHub: "hub"}}
	d.mu.Unlock()
	a.listing.invalidate()
	a.markChanged()
	delta := recvUntil(t, hc, 5*time.Second, func(m protocol.Message) bool { _, ok := m.(protocol.InventoryDelta); return ok }).(protocol.InventoryDelta)
	if delta.Base != full.Seq || len(delta.Changed) != 1 || delta.Changed[0].ID != "b" || len(delta.Removed) != 0 {
		t.Fatalf("delta %+v after full %d", delta, full.Seq)
	}
	next, err := protocol.ApplyDelta(full, delta)
	if err != nil || len(next.VMs) != 2 {
		t.Fatalf("delta does not apply: %v", err)
	}
	a.resync <- struct{}{}
	again := recvUntil(t, hc, 5*time.Second, func(m protocol.Message) bool { _, ok := m.(protocol.Inventory); return ok }).(protocol.Inventory)
	if len(again.VMs) != 2 || again.Seq <= delta.Seq {
		t.Fatalf("full inventory after resync %+v", again)
	}
}
