//go:build integration

package htcondor_test

// Tests against the live HTCondor test pool (deploy/testbed/htcondor/up.sh),
// run as root:
//
//	go test -tags integration -count=1 -p 1 -v ./hub/htcondor/

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/hub/htcondor"
	"github.com/canopy-grid/canopy/internal/condortest"
)

// liveConfig is the hub's htcondor section for the test pool, as
// deploy/htcondor/README.md documents it: only bin_dir is given (sbin_dir,
// where condor_advertise is, is its sibling).
func liveConfig(p *condortest.Pool) htcondor.Config {
	return htcondor.Config{
		Pool:           p.Collector,
		BinDir:         p.BinDir,
		CommandTimeout: time.Minute,
		VMTypes:        []htcondor.VMTypeConfig{{Name: "el9"}, {Name: "el8"}},
	}
}

// vmConfigDir writes what vmagent would advertise for a VM (vmagent/condor.go).
func vmConfigDir(t *testing.T, vmName, group, vmType string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`CanopyVMID = "00000000-0000-4000-8000-%012d"
CanopyVMName = %q
CanopySite = "live"
CanopyGroup = %q
VMType = %q
STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType
START = (TARGET.CanopyGroup =?= MY.CanopyGroup) || (TARGET.AcctGroup =?= MY.CanopyGroup)
NUM_SLOTS = 1
NUM_SLOTS_TYPE_1 = 1
SLOT_TYPE_1 = 100%%
SLOT_TYPE_1_PARTITIONABLE = True
%s`, len(vmName), vmName, group, vmType, extra)
	if err := os.WriteFile(filepath.Join(dir, "50-canopy.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The worker's config dir is read by its master, as root: t.TempDir
	// is private to root, which is fine.
	return dir
}

// TestLiveInvalidate: a VM that vanished (killed, its ads left in the
// collector) is forgotten at once by Invalidate, which runs
// condor_advertise from sbin with the documented bin_dir-only config and
// is allowed to by the documented ALLOW_ADVERTISE_* lines.
func TestLiveInvalidate(t *testing.T) {
	p := condortest.Load(t)
	t.Setenv("CONDOR_CONFIG", p.Config)
	const vm = "canopy-live-inv-1"
	w := p.StartWorker(t, condortest.WorkerOptions{Hostname: "liveinv1", Token: p.Token(t, "condor@"+p.TrustDomain, nil, time.Hour),
		ConfigDir: vmConfigDir(t, vm, "atlas", "el9", "")})
	w.WaitSlots(t, 60*time.Second)

	cfg := liveConfig(p)
	src, err := htcondor.New(cfg, cfg.Runner(), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := src.Poll(ctx, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Machines[vm]; !ok {
		t.Fatalf("poll saw machines %v, not %s", d.Machines, vm)
	}

	ads := func() []condortest.Ad {
		return p.Query(t, "condor_status", "-any", "-constraint", `Machine == "liveinv1" && MyType != "StartD"`, "-attributes", "MyType,Name")
	}
	condortest.Eventually(t, 30*time.Second, 250*time.Millisecond, "the worker's slot and master ads", func() (bool, error) {
		return len(ads()) == 2, nil
	})
	w.Kill(t)
	if got := ads(); len(got) != 2 {
		t.Fatalf("after the kill the collector should still hold the slot and master ads: %v", got)
	}
	start := time.Now()
	if err := src.Invalidate(ctx, vm); err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	if got := ads(); len(got) != 0 {
		t.Fatalf("after Invalidate the collector still holds %v", got)
	}
	t.Logf("slot and master ads invalidated in %s", time.Since(start).Round(time.Millisecond))
}
