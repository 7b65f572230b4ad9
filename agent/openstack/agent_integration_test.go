//go:build integration

package openstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/agent/driver"
)

// proc is a Canopy binary started by a test.
type proc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startProc(t *testing.T, path string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(path, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestAgentKilledMidBurst: the hub orders a burst of boots on the real
// cloud; the agent is killed with SIGKILL while it boots, then restarted.
// The hub resends the command, the agent lists before booting, and every
// ordered server exists exactly once: none leaked, none duplicated.
func TestAgentKilledMidBurst(t *testing.T) {
	const burst = 10
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/",
		"github.com/canopy-grid/canopy/hub/cmd/hub", "github.com/canopy-grid/canopy/agent/cmd/agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(args ...string) {
		if out, err := exec.Command(filepath.Join(bin, "hub"), args...).CombinedOutput(); err != nil {
			t.Fatalf("hub %v: %v\n%s", args, err, out)
		}
	}
	pki := filepath.Join(dir, "pki")
	run("tls", "init", "--dir", pki)
	run("tls", "issue-agent", "--dir", pki, "--site", "osa", "--vm-host", "127.0.0.1")

	hubID := fmt.Sprintf("kill-test-%d", time.Now().UnixNano()%1e9)
	quicAddr, httpAddr := freeAddr(t, "udp"), freeAddr(t, "tcp")
	trace := fmt.Sprintf("jobs:\n  - {group: atlas, vm_type: el9, cpus: 1, memory_mib: 512, arrivals: [{at: 0s, count: %d, runtime: 1h}]}\n", burst)
	must(t, os.WriteFile(filepath.Join(dir, "trace.yaml"), []byte(trace), 0o644))
	hubCfg := fmt.Sprintf(`id: %s
listen: %s
http: %s
tls_dir: %s
state_file: %s/hub.db
plan_every: 1s
heartbeat_every: 1s
inventory_every: 2s
planner: {max_boots_per_cloud: %d}
demand: {source: trace, trace: {file: %s/trace.yaml}}
`, hubID, quicAddr, httpAddr, pki, dir, burst, dir)
	must(t, os.WriteFile(filepath.Join(dir, "hub.yaml"), []byte(hubCfg), 0o600))

	cfg := passwordConfig(t, "canopy-a")
	agentCfg := fmt.Sprintf(`site: osa
hub: {addr: %s, server_name: localhost, ca: %s/agents/ca.crt, cert: %s/agents/osa.crt, key: %s/agents/osa.key}
state_dir: %s/agent
vm_listen: 127.0.0.1:0
vm_cert: %s/agents/osa-vm.crt
vm_key: %s/agents/osa-vm.key
condor_host: 127.0.0.1:9618
gossip_listen: 127.0.0.1:0
reconnect_min: 100ms
reconnect_max: 1s
driver: openstack
openstack:
  auth_url: %s
  region: RegionOne
  username: %s
  password: %q
  user_domain_name: %s
  project_name: %s
  project_domain_name: %s
  network: none
  default_image: canopy-tiny
`, quicAddr, pki, pki, pki, dir, pki, pki, cfg.AuthURL, cfg.Username, cfg.Password.Reveal(), cfg.UserDomainName, cfg.ProjectName, cfg.ProjectDomainName)
	must(t, os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(agentCfg), 0o600))

	d := newDriver(t, ctx, cfg)
	ours := func() []driver.Server {
		srvs, err := d.Servers(ctx)
		if err != nil {
			t.Fatalf("list servers: %v", err)
		}
		var out []driver.Server
		for _, s := range srvs {
			if s.Metadata[driver.MetaHub] == hubID {
				out = append(out, s)
			}
		}
		return out
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		srvs, _ := d.Servers(cctx)
		for _, s := range srvs {
			if s.Metadata[driver.MetaHub] == hubID {
				_ = d.Delete(cctx, s.ID)
			}
		}
	})

	hub := startProc(t, filepath.Join(bin, "hub"), "run", "--config", filepath.Join(dir, "hub.yaml"))
	first := startProc(t, filepath.Join(bin, "agent"), "run", "--config", filepath.Join(dir, "agent.yaml"))

	// Kill the agent as soon as the first server exists: mid-burst.
	deadline := time.Now().Add(4 * time.Minute)
	for len(ours()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no server booted:\nhub:\n%s\nagent:\n%s", hub.out.String(), first.out.String())
		}
		waitTick(ctx, t, 100*time.Millisecond)
	}
	killedAt := len(ours())
	must(t, first.cmd.Process.Signal(syscall.SIGKILL))
	<-first.done
	t.Logf("agent killed with %d of %d servers created", killedAt, burst)

	second := startProc(t, filepath.Join(bin, "agent"), "run", "--config", filepath.Join(dir, "agent.yaml"))
	deadline = time.Now().Add(6 * time.Minute)
	for {
		srvs := ours()
		if len(srvs) >= burst && hubKnowsAll(t, ctx, "http://"+httpAddr, srvs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d servers after restart:\nhub:\n%s\nagent:\n%s", len(srvs), burst, hub.out.String(), second.out.String())
		}
		waitTick(ctx, t, 500*time.Millisecond)
	}
	// Let a few more plan cycles pass: nothing more may be booted.
	waitTick(ctx, t, 5*time.Second)
	srvs := ours()
	names := map[string]int{}
	for _, s := range srvs {
		names[s.Name]++
	}
	for name, n := range names {
		if n > 1 {
			t.Errorf("server %s exists %d times", name, n)
		}
	}
	if len(srvs) != burst {
		t.Errorf("%d servers for %d jobs (1 job per m1.tiny VM)", len(srvs), burst)
	}
	if !hubKnowsAll(t, ctx, "http://"+httpAddr, srvs) {
		t.Error("a server the hub does not know: leaked")
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", second.cmd.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
				t.Logf("agent %s", strings.Join(strings.Fields(line), " "))
			}
		}
	}
}

// hubKnowsAll reports whether the hub's VM list has every server, by id.
func hubKnowsAll(t *testing.T, ctx context.Context, base string, srvs []driver.Server) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/vms", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var vms []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vms); err != nil {
		return false
	}
	known := map[string]bool{}
	for _, v := range vms {
		known[v.ID] = true
	}
	for _, s := range srvs {
		if !known[s.ID] {
			return false
		}
	}
	return true
}

func waitTick(ctx context.Context, t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(d):
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
