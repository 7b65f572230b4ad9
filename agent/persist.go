package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/canopy-grid/canopy/agent/agentdb"
)

// flushEvery is how often changes from check-ins are written: at most one
// transaction per interval however many VMs check in. Retirement orders,
// deletions and command results are written at once (flush), and every
// inventory is preceded by a flush, so what the hub was told survives a
// restart.
const flushEvery = time.Second

// openState opens the state file under the state dir and loads the book,
// the deleted servers and the recent command results from it.
func (a *Agent) openState() error {
	path := filepath.Join(a.cfg.StateDir, agentdb.FileName)
	db, err := agentdb.Open(path)
	if err != nil {
		return err
	}
	st, err := db.Load()
	if err != nil {
		_ = db.Close()
		return err
	}
	a.vms.load(st)
	a.cmds.load(st.Results)
	a.hubID = st.HubID
	a.db = db
	retiring := 0
	for _, vm := range st.VMs {
		if vm.Retire != nil {
			retiring++
		}
	}
	a.log.WithFields(map[string]any{"state": path, "vms": len(st.VMs), "retiring": retiring, "deleted": len(st.Deleted),
		"results": len(st.Results), "hub": st.HubID}).Info("agent state loaded")
	return nil
}

// flush writes every pending change in one transaction. Flushes are
// serialised, so a later snapshot never lands before an earlier one. On
// failure the changes stay pending (the next flush retries them) and the
// error is returned: a caller that promised durability must not answer OK.
func (a *Agent) flush() error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	var b agentdb.Batch
	a.vms.collect(&b)
	a.cmds.collect(&b)
	a.mu.Lock()
	if a.hubIDDirty {
		id := a.hubID
		b.HubID = &id
		a.hubIDDirty = false
	}
	a.mu.Unlock()
	if b.Empty() || a.db == nil {
		return nil
	}
	start := time.Now()
	err := a.db.Commit(&b)
	a.metrics.stateSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		a.metrics.stateFailures.Inc()
		a.vms.redirty(&b)
		a.cmds.redirty(&b)
		if b.HubID != nil {
			a.mu.Lock()
			a.hubIDDirty = true
			a.mu.Unlock()
		}
		return fmt.Errorf("save agent state: %w", err)
	}
	a.metrics.stateCommits.Inc()
	return nil
}

// flushLoop writes pending check-in changes every flushEvery, and once
// more when ctx ends.
func (a *Agent) flushLoop(ctx context.Context) {
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			if err := a.flush(); err != nil {
				a.log.WithError(err).Error("final save of agent state")
			}
			return
		case <-t.C:
		}
		if !a.vms.pending() && !a.cmds.pending() {
			continue
		}
		err := a.flush()
		switch {
		case err != nil && !failing:
			a.log.WithError(err).Error("save agent state; retrying every second")
		case err == nil && failing:
			a.log.Info("agent state saved again")
		}
		failing = err != nil
	}
}

// StateCommits counts transactions committed to the state file.
func (a *Agent) StateCommits() uint64 {
	if a.db == nil {
		return 0
	}
	return a.db.Commits()
}

// Close closes the state file (after Run has returned).
func (a *Agent) Close() error {
	if a.db == nil {
		return nil
	}
	if err := a.flush(); err != nil {
		_ = a.db.Close()
		return err
	}
	return a.db.Close()
}
