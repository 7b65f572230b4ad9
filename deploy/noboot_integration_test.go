//go:build integration

package deploy_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTestbedLeavesNothingEnabledAtBoot: after deploy/testbed/up.sh no unit
// of a package the testbed installed (squid, ssh, epmd, rabbitmq-server,
// cloud-init, prometheus, ...) is enabled at boot. noboot.sh --check lists
// them from apt's history and systemd's unit files without changing any.
func TestTestbedLeavesNothingEnabledAtBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "testbed/noboot.sh", "--check").Output()
	var enabled []string
	for _, l := range strings.Split(string(out), "\n") {
		if u, ok := strings.CutPrefix(l, "ENABLED "); ok {
			enabled = append(enabled, u)
		}
	}
	if err != nil || len(enabled) > 0 || !strings.Contains(string(out), "NOBOOT OK") {
		t.Fatalf("enabled at boot after the testbed's up.sh: %v (err %v)\n%s", enabled, err, out)
	}
}
