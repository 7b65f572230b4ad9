package demo

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub"
)

// Bounds on a clean stop after SIGTERM, checked against the real binaries
// by TestShutdownOnSIGTERM (integration). The hub stops within
// hub.ShutdownTimeout: sessions and listeners close at once, the control
// loop finishes its store write. The agent closes its hub session, VM
// endpoint and gossip pool (its VMs outlive it).
const (
	hubStopLimit   = hub.ShutdownTimeout
	agentStopLimit = 10 * time.Second
)

// TestUnitsStopTimeouts: the systemd units give each binary more than its
// stop bound before systemd kills it, with a margin for a loaded host.
func TestUnitsStopTimeouts(t *testing.T) {
	re := regexp.MustCompile(`(?m)^TimeoutStopSec=(\S+)$`)
	for _, u := range []struct {
		file  string
		limit time.Duration
	}{
		{"canopy-hub.service", hubStopLimit},
		{"canopy-agent.service", agentStopLimit},
	} {
		b, err := os.ReadFile(filepath.Join("..", "systemd", u.file))
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindSubmatch(b)
		if m == nil {
			t.Errorf("%s sets no TimeoutStopSec (systemd's default is 90s)", u.file)
			continue
		}
		d, err := time.ParseDuration(string(m[1]))
		if err != nil {
			t.Errorf("%s: TimeoutStopSec=%s: want a value such as 20s", u.file, m[1])
			continue
		}
		if d < u.limit+5*time.Second {
			t.Errorf("%s: TimeoutStopSec=%s, want at least %s (the stop bound %s plus 5s)", u.file, d, u.limit+5*time.Second, u.limit)
		}
	}
}
