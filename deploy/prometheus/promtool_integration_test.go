//go:build integration

package prometheus_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// promtool finds Debian's promtool (deploy/testbed/prometheus/up.sh
// installs it).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (run deploy/testbed/up.sh, which installs Debian's prometheus package for it): %v", err)
	}
	return p
}

func runPromtool(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, promtool(t), args...).CombinedOutput()
	return string(out), err
}

func TestPromtool(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(canopy_hub_vms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		wantOK bool
		want   string
	}{
		{"check alerts", []string{"check", "rules", "alerts.yml"}, true, "SUCCESS: 14 rules found"},
		{"check gluster alerts", []string{"check", "rules", "gluster-alerts.yml"}, true, "SUCCESS"},
		{"unit tests", []string{"test", "rules", "alerts_test.yml"}, true, "SUCCESS"},
		{"a broken rule is refused", []string{"check", "rules", bad}, false, "FAILED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPromtool(t, tc.args...)
			if (err == nil) != tc.wantOK {
				t.Fatalf("promtool %v: err %v, want ok=%v\n%s", tc.args, err, tc.wantOK, out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("promtool %v output lacks %q:\n%s", tc.args, tc.want, out)
			}
		})
	}
}
