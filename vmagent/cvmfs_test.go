package vmagent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestCVMFSProxyValue(t *testing.T) {
	tests := []struct {
		groups [][]string
		want   string
	}{
		{nil, "DIRECT"},
		{[][]string{{"http://s1:3128"}}, "http://s1:3128;DIRECT"},
		{[][]string{{"http://s1:3128", "http://s2:3128"}, {"http://s3:3128"}}, "http://s1:3128|http://s2:3128;http://s3:3128;DIRECT"},
		{[][]string{{"http://[fd00::1]:3128"}}, "http://[fd00::1]:3128;DIRECT"},
	}
	for _, tt := range tests {
		got, err := CVMFSProxyValue(tt.groups)
		if err != nil || got != tt.want {
			t.Errorf("CVMFSProxyValue(%v) = %q, %v; want %q", tt.groups, got, err, tt.want)
		}
	}
	if _, err := CVMFSProxyValue([][]string{{"http://s1:3128;DIRECT"}}); err == nil {
		t.Error("a proxy holding a separator was accepted")
	}
}

func TestSetProxyLine(t *testing.T) {
	const line = "CVMFS_HTTP_PROXY='DIRECT'"
	tests := []struct{ name, in, want string }{
		{"empty", "", line + "\n"},
		{"others kept", "CVMFS_QUOTA_LIMIT=20000\n", "CVMFS_QUOTA_LIMIT=20000\n" + line + "\n"},
		{"replaced in place", "CVMFS_REPOSITORIES=atlas.cern.ch\nCVMFS_HTTP_PROXY=\"http://old:3128\"\nCVMFS_QUOTA_LIMIT=1\n",
			"CVMFS_REPOSITORIES=atlas.cern.ch\n" + line + "\nCVMFS_QUOTA_LIMIT=1\n"},
		{"export form and duplicates", "export CVMFS_HTTP_PROXY=a\n  CVMFS_HTTP_PROXY = b\n", line + "\n"},
		{"comment kept", "# CVMFS_HTTP_PROXY=old\n", "# CVMFS_HTTP_PROXY=old\n" + line + "\n"},
		{"other proxy variable kept", "CVMFS_FALLBACK_PROXY=x\n", "CVMFS_FALLBACK_PROXY=x\n" + line + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(setProxyLine([]byte(tt.in), line)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestApplyCVMFSProxies(t *testing.T) {
	ctx := context.Background()
	groups := fullSettings().Proxies
	conf := func(root string) string { return readFile(t, filepath.Join(root, CVMFSLocalConfigPath)) }

	t.Run("without CVMFS installed: written, no reload", func(t *testing.T) {
		root := t.TempDir()
		r := newFakeRunner(t, nil)
		changed, err := ApplyCVMFSProxies(ctx, root, groups, r)
		if err != nil || !changed {
			t.Fatalf("changed %v, err %v", changed, err)
		}
		want := "CVMFS_HTTP_PROXY='http://squid1.example.org:3128|http://squid2.example.org:3128;http://squid3.example.org:3128;DIRECT'\n"
		if got := conf(root); got != want {
			t.Fatalf("default.local %q, want %q", got, want)
		}
		if len(r.Calls()) != 0 {
			t.Fatalf("calls %q", r.Calls())
		}
	})
	t.Run("with CVMFS: reload on change only", func(t *testing.T) {
		root := t.TempDir()
		tool := filepath.Join(root, CVMFSConfigTool)
		if err := os.MkdirAll(filepath.Dir(tool), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(tool, nil, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, "etc", "cvmfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		site := "CVMFS_REPOSITORIES=atlas.cern.ch,sft.cern.ch\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_QUOTA_LIMIT=20000\n"
		if err := os.WriteFile(filepath.Join(root, CVMFSLocalConfigPath), []byte(site), 0o644); err != nil {
			t.Fatal(err)
		}
		r := newFakeRunner(t, map[string][]answer{"cvmfs_config": {{}}})
		if changed, err := ApplyCVMFSProxies(ctx, root, groups, r); err != nil || !changed {
			t.Fatalf("changed %v, err %v", changed, err)
		}
		got := conf(root)
		if !containsAll(got, "CVMFS_REPOSITORIES=atlas.cern.ch,sft.cern.ch\n", "CVMFS_QUOTA_LIMIT=20000\n", "|http://squid2.example.org:3128;") ||
			strings.Contains(got, "CVMFS_HTTP_PROXY=DIRECT") {
			t.Fatalf("default.local %q", got)
		}
		if changed, err := ApplyCVMFSProxies(ctx, root, groups, r); err != nil || changed {
			t.Fatalf("second run: changed %v, err %v", changed, err)
		}
		if calls := r.Calls(); len(calls) != 1 || calls[0] != "cvmfs_config reload" {
			t.Fatalf("calls %q", calls)
		}
		// A failing reload is an error.
		r2 := newFakeRunner(t, map[string][]answer{"cvmfs_config": {{stderr: "Failed to reload", code: 1}}})
		if _, err := ApplyCVMFSProxies(ctx, root, nil, r2); err == nil || !strings.Contains(err.Error(), "Failed to reload") {
			t.Fatalf("err %v", err)
		}
	})
}

type failingProxies struct{}

func (failingProxies) Proxies(context.Context) ([][]string, error) {
	return nil, errors.New("no squid answered")
}

func TestContextualize(t *testing.T) {
	ctx := context.Background()
	log, hook := testLog()
	root := t.TempDir()
	s := fullSettings()
	r := newFakeRunner(t, map[string][]answer{"mount": {{}}})
	res, err := Contextualize(ctx, root, testMetadata, s, StaticProxies(s.Proxies), r, log)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Condor || !res.Fstab || !res.CVMFS {
		t.Fatalf("result %+v", res)
	}
	for _, p := range []string{CondorConfigPath, FstabPath, CVMFSLocalConfigPath} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s not written: %v", p, err)
		}
	}
	// A second run with the same input changes nothing.
	if err := os.MkdirAll(filepath.Join(root, "proc", "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc", "self", "mounts"), []byte("x /mnt/canopy fuse.glusterfs ro 0 0\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if res, err = Contextualize(ctx, root, testMetadata, s, StaticProxies(s.Proxies), r, log); err != nil || res != (ContextResult{}) {
		t.Fatalf("second run: %+v, %v", res, err)
	}
	// A failing proxy source leaves CVMFS on DIRECT, with a warning.
	res, err = Contextualize(ctx, root, testMetadata, s, failingProxies{}, r, log)
	if err != nil || !res.CVMFS {
		t.Fatalf("failing source: %+v, %v", res, err)
	}
	if got := readFile(t, filepath.Join(root, CVMFSLocalConfigPath)); got != "CVMFS_HTTP_PROXY='DIRECT'\n" {
		t.Fatalf("default.local %q", got)
	}
	if !hasEntry(hook, "no usable squid proxies; CVMFS goes DIRECT") {
		t.Error("no warning logged")
	}
}
