package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/agent/driver"
	"github.com/canopy-grid/canopy/agent/vmtoken"
	"github.com/canopy-grid/canopy/images"
	"github.com/canopy-grid/canopy/protocol"
	"github.com/canopy-grid/canopy/protocol/gossip"
)

// fakeDriver is an in-memory cloud for command tests.
type fakeDriver struct {
	mu       sync.Mutex
	servers  map[string]driver.Server
	boots    int
	deletes  int
	maxVMs   int
	failList error
	userData map[string][]byte // by server id
	gate     chan struct{}     // if set, Boot signals entered and waits on it
	entered  chan struct{}
}

func newFakeDriver() *fakeDriver { return &fakeDriver{servers: map[string]driver.Server{}} }

func (f *fakeDriver) Flavors(context.Context) ([]protocol.Flavor, error) {
	return []protocol.Flavor{{Name: "c2", VCPUs: 2, RAMMiB: 4096}}, nil
}
func (f *fakeDriver) Limits(context.Context) (protocol.Limits, error) {
	return protocol.Limits{MaxCores: -1, MaxRAMMiB: -1, MaxInstances: -1}, nil
}
func (f *fakeDriver) Servers(context.Context) ([]driver.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failList != nil {
		return nil, f.failList
	}
	var out []driver.Server
	for _, s := range f.servers {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

type quotaErr struct{}

func (quotaErr) Error() string                   { return "Quota exceeded for instances" }
func (quotaErr) ErrorClass() protocol.ErrorClass { return protocol.ErrClassQuota }

func (f *fakeDriver) Boot(_ context.Context, spec driver.BootSpec) (driver.Server, error) {
	if f.gate != nil {
		f.entered <- struct{}{}
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxVMs > 0 && len(f.servers) >= f.maxVMs {
		return driver.Server{}, quotaErr{}
	}
	f.boots++
	s := driver.Server{ID: fmt.Sprintf("id-%d", f.boots), Name: spec.Name, Flavor: spec.Flavor, Status: driver.StatusActive, Metadata: spec.Metadata}
	f.servers[s.ID] = s
	if f.userData == nil {
		f.userData = map[string][]byte{}
	}
	f.userData[s.ID] = spec.UserData
	return s, nil
}
func (f *fakeDriver) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes++
	delete(f.servers, id)
	return nil
}
func (f *fakeDriver) Images(context.Context) ([]images.Image, error) { return nil, nil }
func (f *fakeDriver) UploadImage(context.Context, images.Image, io.Reader) (images.Image, error) {
	return images.Image{}, errors.New("not supported")
}
func (f *fakeDriver) DownloadImage(context.Context, string) (io.ReadCloser, error) {
	return nil, errors.New("not supported")
}

func testAgent(t *testing.T, d driver.Driver) *Agent {
	t.Helper()
	signer, err := vmtoken.NewSigner(make([]byte, vmtoken.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	cfg := Config{Site: "west", CondorHost: "cm:9618", StateDir: t.TempDir()}.withDefaults()
	gkeys, err := gossip.LoadOrCreateSiteKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAgent(cfg, d, log.WithField("t", t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	a.signer, a.gkeys, a.hubID, a.vmURL = signer, gkeys, "hub", "https://127.0.0.1:1"
	setTestPKI(t, a)
	a.cmds = newCommandLog(16)
	return a
}

func bootCmd(id string, names ...string) protocol.Command {
	return protocol.Command{ID: id, Op: protocol.CmdBoot, Boot: &protocol.BootCommand{PlanID: "p1", Group: "atlas", VMType: "el9", Flavor: "c2", Names: names}}
}

func TestBootIsIdempotent(t *testing.T) {
	d := newFakeDriver()
	a := testAgent(t, d)
	ctx := context.Background()

	res, fresh := a.execute(ctx, bootCmd("c1", "vm-a", "vm-b"))
	if !fresh || !res.OK || len(res.VMIDs) != 2 || d.boots != 2 {
		t.Fatalf("first run: fresh=%v res=%+v boots=%d", fresh, res, d.boots)
	}
	// The same command id again: not run, same result.
	res2, fresh2 := a.execute(ctx, bootCmd("c1", "vm-a", "vm-b"))
	if fresh2 || res2 == nil || res2.CommandID != "c1" || d.boots != 2 {
		t.Fatalf("replay: fresh=%v res=%+v boots=%d", fresh2, res2, d.boots)
	}
	// A new id naming existing servers (a hub retry after losing the
	// result): found by name, not booted again.
	res3, _ := a.execute(ctx, bootCmd("c2", "vm-a", "vm-b", "vm-c"))
	if !res3.OK || len(res3.VMIDs) != 3 || d.boots != 3 {
		t.Fatalf("retry by name: res=%+v boots=%d", res3, d.boots)
	}
	// Metadata marks Canopy's servers.
	srvs, _ := d.Servers(ctx)
	for _, s := range srvs {
		if s.Metadata[driver.MetaHub] != "hub" || s.Metadata[driver.MetaGroup] != "atlas" || s.Metadata[driver.MetaPlan] != "p1" {
			t.Fatalf("server %s metadata %v", s.Name, s.Metadata)
		}
	}
}

func TestReplayWhileRunning(t *testing.T) {
	d := newFakeDriver()
	d.gate, d.entered = make(chan struct{}), make(chan struct{})
	a := testAgent(t, d)
	done := make(chan *protocol.Result)
	go func() {
		r, _ := a.execute(context.Background(), bootCmd("c1", "vm-a"))
		done <- r
	}()
	select { // the first run is inside Boot
	case <-d.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first run never reached Boot")
	}
	r, fresh := a.execute(context.Background(), bootCmd("c1", "vm-a"))
	if fresh || r != nil {
		t.Fatalf("replay during run: fresh=%v r=%+v", fresh, r)
	}
	close(d.gate)
	if r := <-done; !r.OK || d.boots != 1 {
		t.Fatalf("first run: %+v, boots %d", r, d.boots)
	}
}

func TestBootQuotaStopsEarlyAndClassifies(t *testing.T) {
	d := newFakeDriver()
	d.maxVMs = 1
	a := testAgent(t, d)
	res, _ := a.execute(context.Background(), bootCmd("c1", "vm-a", "vm-b", "vm-c"))
	if res.OK || res.Class != protocol.ErrClassQuota || len(res.VMIDs) != 1 {
		t.Fatalf("res = %+v", res)
	}
}

func TestBootListFailureBootsNothing(t *testing.T) {
	d := newFakeDriver()
	d.failList = errors.New("nova unavailable")
	a := testAgent(t, d)
	res, _ := a.execute(context.Background(), bootCmd("c1", "vm-a"))
	if res.OK || d.boots != 0 {
		t.Fatalf("booted without a listing: res=%+v boots=%d", res, d.boots)
	}
}

func TestRetireThenReap(t *testing.T) {
	d := newFakeDriver()
	a := testAgent(t, d)
	ctx := context.Background()
	res, _ := a.execute(ctx, bootCmd("c1", "vm-a", "vm-b"))
	now := time.Now()
	a.now = func() time.Time { return now }
	r, _ := a.execute(ctx, protocol.Command{ID: "r1", Op: protocol.CmdRetire, Epoch: a.epoch,
		Retire: &protocol.RetireCommand{VMIDs: []string{res.VMIDs[0]}, Deadline: time.Minute}})
	if !r.OK {
		t.Fatal(r.Error)
	}
	inv, err := a.inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	retiring := 0
	for _, vm := range inv.VMs {
		if vm.Retiring {
			retiring++
			if vm.ID != res.VMIDs[0] {
				t.Fatalf("wrong VM retiring: %s", vm.ID)
			}
		}
	}
	if retiring != 1 {
		t.Fatalf("%d VMs retiring", retiring)
	}
	if due := a.vms.due(now, time.Second); len(due) != 0 {
		t.Fatalf("due before drain or deadline: %v", due)
	}
	if due := a.vms.due(now.Add(time.Minute+2*time.Second), time.Second); len(due) != 1 || due[0].id != res.VMIDs[0] || !due[0].deadline {
		t.Fatalf("due after deadline+grace: %v", due)
	}
}

func TestInventoryMarksForeign(t *testing.T) {
	d := newFakeDriver()
	d.servers["x"] = driver.Server{ID: "x", Name: "someone-elses", Status: driver.StatusActive, Metadata: map[string]string{}}
	a := testAgent(t, d)
	inv, err := a.inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.VMs) != 1 || !inv.VMs[0].Foreign {
		t.Fatalf("inventory %+v", inv.VMs)
	}
}

func TestCommandLogBounded(t *testing.T) {
	l := newCommandLog(3)
	for i := range 10 {
		l.begin(fmt.Sprint(i))
	}
	if len(l.byID) != 3 || len(l.order) != 3 {
		t.Fatalf("log holds %d ids", len(l.byID))
	}
}
