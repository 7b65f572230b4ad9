package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// Version is the agent's software version, reported in Hello.
var Version = "dev"

// maxConcurrentCommands bounds how many commands run at once.
const maxConcurrentCommands = 8

// session runs one hub session. connected reports whether the handshake
// completed (the backoff restarts after a good session).
func (a *Agent) session(ctx context.Context) (connected bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, protocol.HandshakeTimeout*2)
	qc, err := quic.DialAddr(dctx, a.cfg.Hub.Addr, a.tls, protocol.QUICConfig())
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial hub %s: %w", a.cfg.Hub.Addr, err)
	}
	defer func() { _ = qc.CloseWithError(0, "agent session over") }()
	sctx, cancel := context.WithTimeout(ctx, protocol.HandshakeTimeout)
	st, err := qc.OpenStreamSync(sctx)
	cancel()
	if err != nil {
		return false, fmt.Errorf("open control stream: %w", err)
	}
	conn := protocol.NewConn(st, st)
	a.progress.set(conn)
	defer a.progress.set(nil)
	w, err := protocol.ClientHandshake(conn, protocol.Hello{Site: a.cfg.Site, Software: Version, Epoch: a.epoch})
	if err != nil {
		return false, fmt.Errorf("handshake: %w", err)
	}
	prevHub := a.setHubID(w.HubID)
	a.mu.Lock()
	a.status.Connected = true
	a.status.Sessions++
	a.status.LastError = ""
	a.mu.Unlock()
	a.log.WithFields(map[string]any{"hub": w.HubID, "version": w.Version, "epoch": a.epoch}).Info("connected to hub")
	if prevHub != "" && prevHub != w.HubID {
		// Servers the previous hub booted are foreign from now on.
		a.log.WithFields(map[string]any{"hub": w.HubID, "previous_hub": prevHub}).Warn("connected to another hub than before")
	}

	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	// Close the stream when the session ends so a blocked Recv returns.
	go func() {
		<-ctx.Done()
		st.CancelRead(0)
		_ = st.Close()
	}()

	// A full inventory first, after every (re)connect; deltas after it.
	var df protocol.Differ
	if err := a.sendFull(ctx, conn, &df); err != nil {
		return true, err
	}

	errc := make(chan error, 3)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { errc <- a.heartbeatLoop(ctx, conn, w) })
	wg.Go(func() { errc <- a.inventoryLoop(ctx, conn, w, &df) })
	wg.Go(func() { errc <- a.recvLoop(ctx, conn) })
	select {
	case err = <-errc:
	case <-qc.Context().Done():
		err = context.Cause(qc.Context())
	}
	return true, err
}

// heartbeatLoop sends heartbeats on its own: a slow cloud listing never
// delays one.
func (a *Agent) heartbeatLoop(ctx context.Context, conn *protocol.Conn, w protocol.Welcome) error {
	every := w.HeartbeatEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	hb := time.NewTicker(every)
	defer hb.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-hb.C:
		}
		seq++
		if err := conn.Send(protocol.Heartbeat{Seq: seq, SentAt: a.now().UTC()}); err != nil {
			return err
		}
		a.setStatus(func(s *Status) { s.Heartbeats++ })
	}
}

// deltaDebounce gathers changes that come together (a burst of boots, of
// check-ins) into one delta.
const deltaDebounce = 300 * time.Millisecond

// fullEvery is how often a full inventory is sent even when no delta was
// missed: belt and braces against a bug in either side's bookkeeping.
const fullEvery = 30 * time.Minute

// inventoryLoop reports the cloud: a delta when something changed
// (debounced), an often empty delta with the VM checksum every inventory
// interval, a full inventory when the hub asks for one.
func (a *Agent) inventoryLoop(ctx context.Context, conn *protocol.Conn, w protocol.Welcome, df *protocol.Differ) error {
	every := w.InventoryEvery
	if every <= 0 {
		every = 30 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastFull := a.now()
	for {
		checksum, full := false, false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			checksum = true
			full = a.now().Sub(lastFull) >= fullEvery
		case <-a.changed:
			// Let changes that come together arrive, then report them once.
			t := time.NewTimer(deltaDebounce)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		case <-a.resync:
			full = true
		}
		var err error
		if full {
			err = a.sendFull(ctx, conn, df)
			lastFull = a.now()
		} else {
			err = a.sendDelta(ctx, conn, df, checksum)
		}
		if err != nil {
			return err
		}
	}
}

// sendFull sends a full inventory and records it as the base of deltas.
func (a *Agent) sendFull(ctx context.Context, conn *protocol.Conn, df *protocol.Differ) error {
	inv, err := a.takeInventory(ctx)
	if err != nil {
		// A failing cloud API is reported by omission: the hub sees the
		// inventory age grow. Keep the session.
		a.log.WithError(err).Warn("take inventory")
		return nil
	}
	if err := conn.Send(inv); err != nil {
		return err
	}
	df.Full(inv)
	a.metrics.inventories.WithLabelValues("full").Inc()
	a.setStatus(func(s *Status) { s.Inventory = inv.Seq })
	return nil
}

// sendDelta sends what changed since the last inventory or delta; with
// checksum it is sent even if empty, carrying the VM checksum (and saying
// the agent is still reporting).
func (a *Agent) sendDelta(ctx context.Context, conn *protocol.Conn, df *protocol.Differ, checksum bool) error {
	if !df.Started() {
		return a.sendFull(ctx, conn, df)
	}
	inv, err := a.takeInventory(ctx)
	if err != nil {
		a.log.WithError(err).Warn("take inventory")
		return nil
	}
	d, empty := df.Delta(inv, checksum)
	if empty && !checksum {
		return nil // nothing to say; the next delta starts from the last one sent
	}
	if err := conn.Send(d); err != nil {
		return err
	}
	df.Sent(inv)
	a.metrics.inventories.WithLabelValues("delta").Inc()
	a.setStatus(func(s *Status) { s.Inventory = inv.Seq })
	return nil
}

func (a *Agent) recvLoop(ctx context.Context, conn *protocol.Conn) error {
	sem := make(chan struct{}, maxConcurrentCommands)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		m, err := conn.Recv()
		if err != nil {
			var fe *protocol.FrameError
			if errors.As(err, &fe) {
				_ = conn.SendError(err)
				return fmt.Errorf("bad frame from hub: %w", err)
			}
			return err
		}
		switch v := m.(type) {
		case protocol.Command:
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			wg.Go(func() {
				defer func() { <-sem }()
				res, fresh := a.execute(ctx, v)
				if !fresh && res == nil {
					return // already running: its result will be sent when it ends
				}
				if err := conn.Send(*res); err != nil {
					a.log.WithError(err).WithField("command", v.ID).Warn("send result")
				}
				a.markChanged()
			})
		case protocol.SquidList:
			a.pushSquids(v)
		case protocol.Resync:
			a.log.WithField("why", v.Reason).Info("the hub asked for a full inventory")
			select {
			case a.resync <- struct{}{}:
			default:
			}
		case protocol.Error:
			return fmt.Errorf("hub reported %s: %s", v.Code, v.Message)
		default:
			err := &protocol.FrameError{Code: protocol.CodeUnexpected, Msg: "agent does not accept " + m.Kind().String()}
			_ = conn.SendError(err)
			return err
		}
	}
}

// takeInventory takes an inventory and makes what it reports durable
// first: what the hub is told survives a restart.
func (a *Agent) takeInventory(ctx context.Context) (protocol.Inventory, error) {
	inv, err := a.inventory(ctx)
	if err != nil {
		return inv, err
	}
	if err := a.flush(); err != nil {
		a.log.WithError(err).Error("agent state not saved before inventory")
	}
	a.mu.Lock()
	a.lastInventory = &inv
	a.mu.Unlock()
	return inv, nil
}

// setHubID records the id of the hub this agent serves (from Welcome) and
// returns the previous one.
func (a *Agent) setHubID(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := a.hubID
	if id != prev {
		a.hubID, a.hubIDDirty = id, true
	}
	return prev
}

// pushSquids hands the hub's ranking to the cache VMs read from.
func (a *Agent) pushSquids(l protocol.SquidList) {
	if a.squids == nil {
		return
	}
	proxies := make([]vmproto.SquidProxy, 0, len(l.Proxies))
	for _, p := range l.Proxies {
		proxies = append(proxies, vmproto.SquidProxy{Name: p.Name, Address: p.Address, URL: "http://" + p.Address,
			Cost: p.Cost, DistanceKm: p.DistanceKm, Load: p.Load})
	}
	if err := a.squids.Push(l.Upstream, proxies, l.At); err != nil {
		a.log.WithError(err).Debug("squid list from hub not kept")
		return
	}
	if l.Upstream != "cvmfs" {
		return
	}
	// Spread the CVMFS ranking to the VMs through the gossip pool when it
	// changes; VMs that boot later read it from the check-in endpoint.
	urls := make([]string, 0, len(proxies))
	for _, p := range proxies {
		urls = append(urls, p.URL)
	}
	a.mu.Lock()
	pool, same := a.pool, slices.Equal(urls, a.gossipSquids)
	if !same {
		a.gossipSquids = urls
	}
	a.mu.Unlock()
	if pool != nil && !same {
		if _, err := pool.PublishSquids(urls); err != nil {
			a.log.WithError(err).Warn("gossip squid list")
		}
	}
}
