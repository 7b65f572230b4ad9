// Package demo starts a whole Canopy system on one machine from the example
// configurations: a hub with a simulated pool, and two site agents ("west"
// and "east") whose local clouds run VMs as vmagent processes, everything on
// loopback. It backs `make demo` and the end-to-end tests.
package demo

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/canopy-grid/canopy/deploy"
)

// Sites are the demo's sites, in the order their agents start.
var Sites = []string{"west", "east"}

// Options configure a demo system.
type Options struct {
	// BinDir holds the hub, agent and vmagent binaries.
	BinDir string
	// Dir is the working directory for configs, PKI, state and logs.
	Dir string
	// Trace, if set, replaces the bundled demo trace (YAML text).
	Trace string
	// Replace are extra text substitutions applied to the hub config.
	Replace map[string]string
	// AgentReplace are extra text substitutions applied to the agents'
	// configs; SiteReplace to one site's agent config only (after
	// AgentReplace). The hub's QUIC address in agent configs is written
	// "127.0.0.1:7443" before substitution.
	AgentReplace map[string]string
	SiteReplace  map[string]map[string]string
	// Output receives the processes' log lines, prefixed by their name.
	Output io.Writer
}

// System is a running demo.
type System struct {
	Dir     string
	HTTPURL string
	// HubAddr is the hub's QUIC address.
	HubAddr string
	// AgentURLs are the agents' metrics listeners (/metrics, /v1/vms), by site.
	AgentURLs map[string]string
	bin       string
	out       io.Writer
	opts      Options
	procs     []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start builds the configuration and starts the hub and both agents. It
// returns once the hub answers HTTP; agents connect shortly after.
func Start(ctx context.Context, o Options) (*System, error) {
	if o.Output == nil {
		o.Output = io.Discard
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	bin, err := filepath.Abs(o.BinDir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"etc", "traces", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	pkiDir := filepath.Join(dir, "pki")
	if err := run(filepath.Join(bin, "hub"), "tls", "init", "--dir", pkiDir, "--host", "localhost", "--host", "127.0.0.1"); err != nil {
		return nil, err
	}
	for _, s := range Sites {
		// The agent's certificate and its VM endpoint's (VMs reach it on
		// loopback), both from the hub's CA, as on a real site.
		if err := run(filepath.Join(bin, "hub"), "tls", "issue-agent", "--dir", pkiDir, "--site", s,
			"--vm-host", "127.0.0.1", "--vm-host", "localhost"); err != nil {
			return nil, err
		}
	}
	quicPort, err := freePort("udp")
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	hubAddr := fmt.Sprintf("127.0.0.1:%d", quicPort)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)

	trace := o.Trace
	if trace == "" {
		b, err := deploy.Examples.ReadFile("traces/demo.yaml")
		if err != nil {
			return nil, err
		}
		trace = string(b)
	}
	if err := os.WriteFile(filepath.Join(dir, "traces", "demo.yaml"), []byte(trace), 0o644); err != nil {
		return nil, err
	}
	repl := map[string]string{
		"127.0.0.1:7443":  hubAddr,
		"127.0.0.1:8080":  httpAddr,
		"/var/lib/canopy": dir,
		"/usr/local/bin/": bin + "/",
	}
	for k, v := range o.Replace {
		repl[k] = v
	}
	if err := writeConfig("examples/hub.yaml", filepath.Join(dir, "etc", "hub.yaml"), repl); err != nil {
		return nil, err
	}
	agentURLs := map[string]string{}
	for _, s := range Sites {
		// Fixed ports for what VMs reach (check-ins, gossip), as in a real
		// site: a restarted agent is found again by the VMs it booted.
		vmPort, err := freePort("tcp")
		if err != nil {
			return nil, err
		}
		gossipPort, err := freePort("udp")
		if err != nil {
			return nil, err
		}
		metricsPort, err := freePort("tcp")
		if err != nil {
			return nil, err
		}
		agentURLs[s] = fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
		agentRepl := map[string]string{
			"vm_listen: 127.0.0.1:0":      fmt.Sprintf("vm_listen: 127.0.0.1:%d", vmPort),
			"gossip_listen: 127.0.0.1:0":  fmt.Sprintf("gossip_listen: 127.0.0.1:%d", gossipPort),
			"metrics_listen: 127.0.0.1:0": fmt.Sprintf("metrics_listen: 127.0.0.1:%d", metricsPort),
		}
		for k, v := range repl {
			agentRepl[k] = v
		}
		for k, v := range o.AgentReplace {
			agentRepl[k] = v
		}
		for k, v := range o.SiteReplace[s] {
			agentRepl[k] = v
		}
		if err := writeConfig("examples/agent-"+s+".yaml", filepath.Join(dir, "etc", "agent-"+s+".yaml"), agentRepl); err != nil {
			return nil, err
		}
	}

	sys := &System{Dir: dir, HTTPURL: "http://" + httpAddr, HubAddr: hubAddr, AgentURLs: agentURLs, bin: bin, out: o.Output, opts: o}
	if err := sys.start(o, "hub", filepath.Join(bin, "hub"), "run", "--config", filepath.Join(dir, "etc", "hub.yaml")); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, sys.HTTPURL+"/api/v1/sites", 20*time.Second); err != nil {
		sys.Stop()
		return nil, fmt.Errorf("hub did not come up: %w (log: %s)", err, filepath.Join(dir, "log", "hub.log"))
	}
	for _, s := range Sites {
		if err := sys.start(o, s, filepath.Join(bin, "agent"), "run", "--config", filepath.Join(dir, "etc", "agent-"+s+".yaml")); err != nil {
			sys.Stop()
			return nil, err
		}
	}
	return sys, nil
}

// writeConfig copies an embedded example, applying text substitutions, so
// the demo runs from exactly the documented file.
func writeConfig(name, dst string, repl map[string]string) error {
	b, err := deploy.Examples.ReadFile(name)
	if err != nil {
		return err
	}
	// One pass over the example, longer keys first, so that a
	// substitution of a whole line's part ("addr: 127.0.0.1:7443") wins
	// over one of its address alone, and text a substitution inserts is
	// never substituted again (a path under /var/lib/canopy-testbed stays).
	keys := slices.Collect(maps.Keys(repl))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	pairs := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		pairs = append(pairs, k, repl[k])
	}
	return os.WriteFile(dst, []byte(strings.NewReplacer(pairs...).Replace(string(b))), 0o600)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (s *System) start(o Options, name, path string, args ...string) error {
	logf, err := os.Create(filepath.Join(s.Dir, "log", name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			fmt.Fprintf(o.Output, "[%-4s] %s\n", name, line)
		}
	})
	go func() {
		_ = cmd.Wait()
		_ = pw.Close()
		wg.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	return nil
}

// Kill ends a process of the system ("hub" or a site's agent) with
// SIGKILL, as a crash would, and waits for it to be gone.
func (s *System) Kill(name string) error {
	for _, p := range s.procs {
		if p.name != name {
			continue
		}
		select {
		case <-p.done:
			continue
		default:
		}
		if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
			return err
		}
		<-p.done
		return nil
	}
	return fmt.Errorf("no running process %q", name)
}

// Restart starts a process of the system again from its config and state
// ("hub" or a site's agent).
func (s *System) Restart(name string) error {
	if name == "hub" {
		return s.start(s.opts, "hub", filepath.Join(s.bin, "hub"), "run", "--config", filepath.Join(s.Dir, "etc", "hub.yaml"))
	}
	return s.start(s.opts, name, filepath.Join(s.bin, "agent"), "run", "--config", filepath.Join(s.Dir, "etc", "agent-"+name+".yaml"))
}

// PIDs returns the PIDs of the hub and agents.
func (s *System) PIDs() []int {
	var out []int
	for _, p := range s.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// Stop ends the agents and then the hub (SIGTERM, then SIGKILL to the
// process group after 10 s), then every VM of the sites' local clouds
// (`agent local-cloud stop`): VMs outlive their agent, as in a real cloud.
func (s *System) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
	s.StopVMs()
}

// stop ends one process: SIGTERM, then SIGKILL to its group after 10 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// CloudDir is the local cloud directory of a site's agent.
func (s *System) CloudDir(site string) string {
	return filepath.Join(s.Dir, "agent-"+site, "cloud")
}

// StopVMs stops every VM of every site's local cloud.
func (s *System) StopVMs() {
	for _, site := range Sites {
		dir := s.CloudDir(site)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		out, err := exec.Command(filepath.Join(s.bin, "agent"), "local-cloud", "stop", "--dir", dir).CombinedOutput()
		if err != nil && s.out != nil {
			fmt.Fprintf(s.out, "[demo] stop VMs of %s: %v: %s\n", site, err, strings.TrimSpace(string(out)))
		}
	}
}

// Exited reports whether any process has exited, and which.
func (s *System) Exited() (string, bool) {
	for _, p := range s.procs {
		select {
		case <-p.done:
			return p.name, true
		default:
		}
	}
	return "", false
}

func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if err := GetJSON(ctx, url, nil); err == nil {
			return nil
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer from %s within %s: %w", url, limit, last)
}

// GetJSON fetches url and decodes the JSON answer into out (if not nil).
func GetJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
