package agent

import (
	"context"
	"time"

	"github.com/canopy-grid/canopy/protocol"
)

// StorageCollector reports the health of the site's shared storage
// (agent/gluster). A cycle may take seconds: it runs on its own schedule and
// inventories carry the last report.
type StorageCollector interface {
	Collect(ctx context.Context) (protocol.StorageReport, error)
}

// SetStorage makes the agent collect storage health every cfg.StorageEvery.
// Call before Run.
func (a *Agent) SetStorage(c StorageCollector) { a.storage = c }

func (a *Agent) storageLoop(ctx context.Context) {
	if a.storage == nil {
		return
	}
	t := time.NewTicker(a.cfg.StorageEvery)
	defer t.Stop()
	for {
		rep, err := a.storage.Collect(ctx)
		if err != nil {
			return // only when ctx ended
		}
		a.mu.Lock()
		prev := a.lastStorage
		a.lastStorage = &rep
		a.mu.Unlock()
		if prev == nil || prev.Status != rep.Status {
			a.log.WithFields(map[string]any{"status": rep.Status, "reasons": rep.Reasons}).Info("storage health")
			a.markChanged()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) storageReport() *protocol.StorageReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastStorage
}
