package vmagent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol/userdata"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// fakeAgent answers check-ins: ready until it has seen readyCheckins,
// then a retirement order.
type fakeAgent struct {
	t             testing.TB
	token         string
	readyCheckins int
	retiring      chan struct{} // closed at the first "retiring" check-in

	mu     sync.Mutex
	states []string
}

func (a *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != vmproto.PathCheckin || r.Header.Get("Authorization") != "Bearer "+a.token {
		http.Error(w, "no", http.StatusForbidden)
		return
	}
	var req vmproto.CheckinRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.states = append(a.states, req.State)
	n := len(a.states)
	if req.State == vmproto.CheckinRetiring && a.retiring != nil {
		close(a.retiring)
		a.retiring = nil
	}
	a.mu.Unlock()
	resp := vmproto.CheckinResponse{}
	if n > a.readyCheckins {
		resp = vmproto.CheckinResponse{Retire: true, Deadline: time.Hour, Reason: "demand fell"}
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func (a *fakeAgent) States() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.states...)
}

// compact removes consecutive duplicates.
func compact(s []string) []string {
	var out []string
	for _, v := range s {
		if len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}

func TestRunContextualizesChecksInAndRetires(t *testing.T) {
	retiring := make(chan struct{})
	agent := &fakeAgent{t: t, token: "tok.sig", readyCheckins: 2, retiring: retiring}
	agentSrv := httptest.NewServer(agent)
	defer agentSrv.Close()

	s := fullSettings()
	s.AgentURL, s.Token, s.CheckinEvery = agentSrv.URL, agent.token, 5*time.Millisecond
	own, err := vmproto.RenderUserData(s)
	if err != nil {
		t.Fatal(err)
	}
	ud, err := userdata.Compose([]userdata.Part{
		{Type: userdata.TypeCloudConfig, Filename: "canopy.yaml", Content: own},
		{Type: userdata.TypeShellScript, Filename: "site.sh", Content: []byte("#!/bin/sh\ntrue\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	md := readFile(t, "testdata/metadata/nova-meta_data.json")
	mdSrv := metadataServer(t, md, ud)

	root := t.TempDir()
	r := newFakeRunner(t, map[string][]answer{
		"mount":         {{}},
		"condor_master": {{}},
		"condor_who": {
			recorded(t, "live02_worker1_condor_who-quick_idle"),
			recorded(t, "live07_worker1_condor_who-quick_retiring"),
			recorded(t, "live09_worker1_condor_who-quick_startd-exited"),
		},
		"condor_off": {
			recorded(t, "live06_worker1_condor_off-peaceful-startd"),
			recorded(t, "live29_try1_condor_off-peaceful-master-addr"),
		},
		"condor_status": {
			recorded(t, "live05_worker1_condor_status-direct-addr_2jobs"),
			recorded(t, "live08_worker1_condor_status-direct-addr_retiring"),
		},
	})
	log, hook := testLog()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The job finishes only once the agent has heard that the VM retires.
	polls := 0
	r.onRun = func(line string) {
		if line == statusCmd {
			if polls++; polls == 2 {
				select {
				case <-retiring:
				case <-ctx.Done():
				}
			}
		}
	}
	err = Run(ctx, Options{Root: root, Source: HTTPSource{BaseURL: mdSrv.URL}, Runner: r, Log: log, RetirePoll: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run ended by the test's timeout")
	}
	for _, p := range []string{CondorConfigPath, CondorTokenPath, FstabPath, CVMFSLocalConfigPath, CondorStartedPath} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if got, want := compact(agent.States()), []string{vmproto.CheckinReady, vmproto.CheckinRetiring, vmproto.CheckinDrained}; !reflect.DeepEqual(got, want) {
		t.Errorf("check-in states %q, want %q", got, want)
	}
	calls := r.Calls()
	// Retirement: probe, stop, probe (jobs finish), probe (startd gone):
	// drained, reported; then the master is stopped at its own address.
	want := []string{"mount /mnt/canopy", "condor_master", whoCmd, statusCmd, offCmd, whoCmd, statusCmd, whoCmd,
		whoCmd, masterOffCmd}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("commands:\n%q\nwant\n%q", calls, want)
	}
	if !hasEntry(hook, "contextualized") || !hasEntry(hook, "retirement ordered") || !hasEntry(hook, "retired; reported drained") {
		t.Error("missing log lines")
	}
}

// TestRunRestartedVMAgent: a vmagent restarted within one boot does not
// start HTCondor again, and reconfigures it only if its config changed.
func TestRunRestartedVMAgent(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	r := newFakeRunner(t, map[string][]answer{"condor_master": {{}}, "condor_reconfig": {{}}})
	if err := startCondor(ctx, root, r, true); err != nil {
		t.Fatal(err)
	}
	if err := startCondor(ctx, root, r, false); err != nil {
		t.Fatal(err)
	}
	if err := startCondor(ctx, root, r, true); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Calls(), []string{"condor_master", "condor_reconfig"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
}

func TestRunFailsClearly(t *testing.T) {
	md := readFile(t, "testdata/metadata/nova-meta_data.json")
	tests := []struct {
		name string
		ud   []byte
		want string
	}{
		{"no user-data", nil, "no user-data"},
		{"no settings", []byte("#!/bin/sh\n"), "read settings from user-data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := testLog()
			srv := metadataServer(t, md, tt.ud)
			err := Run(context.Background(), Options{Root: t.TempDir(), Source: HTTPSource{BaseURL: srv.URL},
				Runner: newFakeRunner(t, nil), Log: log})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// BenchmarkBootToConfig measures what a VM does between the vmagent's start
// and a written, valid configuration: read the local metadata service
// (meta_data.json and a two-part user-data), parse the settings and write
// every file (HTCondor config and secrets, fstab, CVMFS) into a fresh root.
func BenchmarkBootToConfig(b *testing.B) {
	s := fullSettings()
	own, err := vmproto.RenderUserData(s)
	if err != nil {
		b.Fatal(err)
	}
	site, err := os.ReadFile("../deploy/cloud-init/site-example.yaml")
	if err != nil {
		b.Fatal(err)
	}
	ud, err := userdata.Compose([]userdata.Part{
		{Type: userdata.TypeCloudConfig, Filename: "canopy.yaml", Content: own},
		{Type: userdata.TypeCloudConfig, Filename: "site.yaml", Content: site},
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := metadataServer(b, readFile(b, "testdata/metadata/nova-meta_data.json"), ud)
	src := HTTPSource{BaseURL: srv.URL, Client: srv.Client()}
	log, _ := testLog()
	r := LogRunner{Log: log}
	dir := b.TempDir()
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		root := filepath.Join(dir, fmt.Sprintf("r%d", i))
		md, data, err := src.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		set, err := vmproto.ParseUserData(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Contextualize(ctx, root, md, set, StaticProxies(set.Proxies), r, log); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecontextualize is the same on a root already configured: what
// a restarted vmagent does (reads, compares, writes nothing).
func BenchmarkRecontextualize(b *testing.B) {
	s := fullSettings()
	ud, err := vmproto.RenderUserData(s)
	if err != nil {
		b.Fatal(err)
	}
	srv := metadataServer(b, readFile(b, "testdata/metadata/nova-meta_data.json"), ud)
	src := HTTPSource{BaseURL: srv.URL, Client: srv.Client()}
	log, _ := testLog()
	r := LogRunner{Log: log}
	root := b.TempDir()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		md, data, err := src.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		set, err := vmproto.ParseUserData(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Contextualize(ctx, root, md, set, StaticProxies(set.Proxies), r, log); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetchAndParse is the reading half of BenchmarkBootToConfig:
// the metadata service's two answers and the settings, no file written.
func BenchmarkFetchAndParse(b *testing.B) {
	ud, err := vmproto.RenderUserData(fullSettings())
	if err != nil {
		b.Fatal(err)
	}
	srv := metadataServer(b, readFile(b, "testdata/metadata/nova-meta_data.json"), ud)
	src := HTTPSource{BaseURL: srv.URL, Client: srv.Client()}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, data, err := src.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := vmproto.ParseUserData(data); err != nil {
			b.Fatal(err)
		}
	}
}
