package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/hub"
)

const testTrace = `jobs:
  - group: atlas
    vm_type: el9
    cpus: 1
    memory_mib: 2000
    arrivals:
      - {at: 0s, count: 4, runtime: 1h}
`

// testHubConfig is a hub config with one site (west, cores cap CAP).
func testHubConfig(dir, cap string) string {
	return `id: clitest
listen: 127.0.0.1:0
http: 127.0.0.1:0
admin_listen: 127.0.0.1:0
admin_socket: ` + filepath.Join(dir, "hub.sock") + `
tls_dir: ` + filepath.Join(dir, "pki") + `
state_file: ` + filepath.Join(dir, "hub.db") + `
plan_every: 200ms
sites:
  west:
    caps:
      cores: ` + cap + `
groups:
  atlas: {}
demand:
  source: trace
  trace:
    file: trace.yaml
`
}

// runningHub starts a hub from a config file in dir, as `hub run` does,
// with SIGHUP delivered through the returned channel.
func runningHub(t testing.TB) (dir string, cfgPath string, hup chan os.Signal, h *hub.Hub) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cli") // short: a socket path has ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := run([]string{"tls", "init", "--dir", filepath.Join(dir, "pki")}, io.Discard); err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(filepath.Join(dir, "trace.yaml"), []byte(testTrace), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(testHubConfig(dir, "8")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	src, err := newSource(cfg, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	h, err = hub.New(cfg, src, log.WithField("t", t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	h.SetReloader(func() (hub.Config, error) { return loadConfig(cfgPath) })
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.Run(ctx, func(net.Addr, net.Addr) { close(ready) })
	}()
	hup = make(chan os.Signal, 1)
	go watchReload(ctx, hup, func() error { return reloadFile(ctx, h, cfgPath, log) }, func(error) {})
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("hub did not start")
	}
	return dir, cfgPath, hup, h
}

// cli runs one hub command and returns its output.
func cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(args, &out)
	return out.String(), err
}

// eventually polls f until it holds or 20 s pass.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		<-poll.C
	}
}

// TestCLIRoundTrips runs every operator command against a running hub,
// through its admin socket (found from --config) and its admin TLS
// listener with an admin certificate.
func TestCLIRoundTrips(t *testing.T) {
	dir, cfgPath, _, h := runningHub(t)
	sock := []string{"--config", cfgPath}
	tests := []struct {
		name    string
		args    []string
		want    []string // in the output
		wantErr string
	}{
		{"status", []string{"status"}, []string{"hub clitest", "west", "SITE", "UNKNOWN", "atlas"}, ""},
		{"status json", []string{"status", "-o", "json"}, []string{`"hub_id": "clitest"`, `"name": "west"`}, ""},
		{"pause", []string{"site", "pause", "west"}, []string{"west: pause done"}, ""},
		{"paused in status", []string{"status"}, []string{"paused"}, ""},
		{"resume", []string{"cloud", "resume", "west"}, []string{"west: resume done"}, ""},
		{"disable", []string{"cloud", "disable", "west"}, []string{"west: disable done"}, ""},
		{"drain", []string{"cloud", "drain", "west"}, []string{"west: drain done"}, ""},
		{"draining in status", []string{"status"}, []string{"draining"}, ""},
		{"unknown site", []string{"cloud", "pause", "nowhere"}, nil, "no such site"},
		{"bad action", []string{"cloud", "explode", "west"}, nil, "usage"},
		{"vm ls", []string{"vm", "ls"}, []string{"ID", "NAME", "STATE"}, ""},
		{"vm ls json", []string{"vm", "ls", "-o", "json"}, []string{"[]"}, ""},
		{"vm hold unknown", []string{"vm", "hold", "no-such-id"}, nil, "no such VM"},
		{"vm release unknown", []string{"vm", "release", "no-such-id"}, nil, "no such VM"},
		{"vm retire unknown", []string{"vm", "retire", "no-such-id"}, nil, "no such VM"},
		{"events", []string{"events", "--site", "west"}, []string{"site_paused", "site_resumed", "site_disabled", "site_draining", "by socket"}, ""},
		{"events by kind", []string{"events", "--kind", "site_paused", "-o", "json"}, []string{`"kind":"site_paused"`}, ""},
		{"accounting", []string{"accounting", "--by", "group,cloud"}, []string{"VM-HOURS", "CORE-HOURS", "HS06-HOURS"}, ""},
		{"accounting csv", []string{"accounting", "-o", "csv", "--from", "2026-01-01"}, []string{"day,group,site,vm_hours"}, ""},
		{"accounting bad date", []string{"accounting", "--from", "yesterday"}, nil, "want YYYY-MM-DD"},
		{"reload unchanged", []string{"reload"}, []string{"reloaded: nothing changed"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, err := cli(t, append(append([]string{}, tc.args[:1]...), append(tc.args[1:], sock...)...)...)
			t.Logf("hub %s: %s", strings.Join(tc.args, " "), time.Since(start))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}

	// Remotely: an admin certificate over the admin TLS listener.
	if _, err := cli(t, "tls", "issue-admin", "alice", "--dir", filepath.Join(dir, "pki"), "--out", filepath.Join(dir, "alice")); err != nil {
		t.Fatal(err)
	}
	url := "https://" + strings.Replace(h.AdminAddr().String(), "127.0.0.1", "localhost", 1)
	remote := []string{"--hub", url, "--cert", filepath.Join(dir, "alice", "alice.crt"), "--key", filepath.Join(dir, "alice", "alice.key"),
		"--ca", filepath.Join(dir, "alice", "ca.crt")}
	if out, err := cli(t, append([]string{"cloud", "resume", "west"}, remote...)...); err != nil || !strings.Contains(out, "resume done") {
		t.Fatalf("remote resume: %q %v", out, err)
	}
	out, err := cli(t, append([]string{"events", "--kind", "site_resumed", "-o", "json"}, remote...)...)
	if err != nil || !strings.Contains(out, "by admin:alice") {
		t.Fatalf("remote action not logged with the admin's name: %q %v", out, err)
	}
	// Without a certificate (or with an agent's) the listener refuses.
	if _, err := cli(t, "tls", "issue-agent", "--dir", filepath.Join(dir, "pki"), "--site", "west", "--out", filepath.Join(dir, "agent")); err != nil {
		t.Fatal(err)
	}
	agent := []string{"--hub", url, "--cert", filepath.Join(dir, "agent", "west.crt"), "--key", filepath.Join(dir, "agent", "west.key"),
		"--ca", filepath.Join(dir, "agent", "ca.crt")}
	if _, err := cli(t, append([]string{"cloud", "pause", "west"}, agent...)...); err == nil {
		t.Fatal("an agent certificate administered the hub")
	}
	if _, err := cli(t, "cloud", "pause", "west", "--hub", url); err == nil || !strings.Contains(err.Error(), "needs --cert") {
		t.Fatalf("https without a certificate: %v", err)
	}
}

// TestReloadKeepsOldConfigOnError: SIGHUP (and `hub reload`) applies a
// changed config; an invalid one is refused with its file:line:key and
// the running config stays.
func TestReloadKeepsOldConfigOnError(t *testing.T) {
	dir, cfgPath, hup, _ := runningHub(t)
	sock := []string{"--config", cfgPath}
	caps := func() int {
		out, err := cli(t, append([]string{"status", "-o", "json"}, sock...)...)
		if err != nil {
			t.Fatal(err)
		}
		var s hub.Summary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		return s.Sites[0].Caps.Cores
	}
	if c := caps(); c != 8 {
		t.Fatalf("cores cap %d at start", c)
	}
	write := func(text string) {
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := testHubConfig(dir, "16")
	tests := []struct {
		name    string
		text    string
		signal  bool
		wantCap int
		wantErr string
	}{
		{"bad key by reload", strings.Replace(good, "  west:\n", "  west:\n    priorty: 2\n", 1), false, 8, cfgPath + `:11: key "sites.west.priorty": unknown key`},
		{"bad value by reload", strings.Replace(good, "cores: 16", "cores: many", 1), false, 8, cfgPath + `:12: key "sites.west.caps.cores": want an integer`},
		{"invalid by SIGHUP", strings.Replace(good, "plan_every: 200ms", "plan_every: 1ms", 1), true, 8, ""},
		{"good by SIGHUP", good, true, 16, ""},
		{"good by reload", testHubConfig(dir, "24"), false, 24, ""},
	}
	for _, tc := range tests {
		write(tc.text)
		if tc.signal {
			hup <- syscall.SIGHUP
			if tc.wantCap != 8 {
				eventually(t, tc.name, func() bool { return caps() == tc.wantCap })
			} else {
				// The refusal is logged; the running config stays. Wait for
				// the signal to be taken, then check.
				eventually(t, tc.name+" taken", func() bool { return len(hup) == 0 })
			}
		} else {
			out, err := cli(t, append([]string{"reload"}, sock...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("%s: error %v (out %q), want %q", tc.name, err, out, tc.wantErr)
				}
			} else if err != nil || !strings.Contains(out, "applied sites") {
				t.Fatalf("%s: %q %v", tc.name, out, err)
			}
		}
		if c := caps(); c != tc.wantCap {
			t.Fatalf("%s: cores cap %d, want %d", tc.name, c, tc.wantCap)
		}
	}
	out, err := cli(t, append([]string{"events", "--kind", "config_reloaded"}, sock...)...)
	if err != nil || !strings.Contains(out, "applied sites") || !strings.Contains(out, "SIGHUP") {
		t.Fatalf("reloads not in the events log: %q %v", out, err)
	}
}

// BenchmarkCLIStatus is `hub status` (table and JSON) against a running
// hub through its admin socket, in-process (no exec): dial, ask, render.
func BenchmarkCLIStatus(b *testing.B) {
	_, cfgPath, _, _ := runningHub(b)
	for _, o := range []string{"table", "json"} {
		b.Run(o, func(b *testing.B) {
			for b.Loop() {
				if err := run([]string{"status", "-o", o, "--config", cfgPath}, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
