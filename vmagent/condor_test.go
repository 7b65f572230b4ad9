package vmagent

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestCondorConfigGolden(t *testing.T) {
	for name, s := range map[string]vmproto.Settings{"minimal": minimalSettings(), "full": fullSettings()} {
		t.Run(name, func(t *testing.T) {
			got, err := CondorConfig(testMetadata, s)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "condor", name+".conf")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := readFile(t, path); got != want {
				t.Fatalf("config differs from %s:\n%s", path, got)
			}
		})
	}
}

func TestCondorConfigContent(t *testing.T) {
	conf, err := CondorConfig(testMetadata, fullSettings())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"CONDOR_HOST = cm.example.org:9618",
		`CanopyVMID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"`,
		`CanopySite = "east"`,
		`CanopyGroup = "atlas"`,
		`VMType = "el9"`,
		"STARTD_ATTRS = $(STARTD_ATTRS) CanopyVMID CanopyVMName CanopySite CanopyGroup VMType",
		"START = (TARGET.CanopyGroup =?= MY.CanopyGroup) || (TARGET.AcctGroup =?= MY.CanopyGroup)",
		"SLOT_TYPE_1_PARTITIONABLE = True",
		"SEC_TOKEN_DIRECTORY = /etc/condor/tokens.d",
		"SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS, PASSWORD",
		"DEFAULT_MASTER_SHUTDOWN_SCRIPT = /sbin/poweroff",
	} {
		if !containsLine(conf, line) {
			t.Errorf("config lacks %q", line)
		}
	}
	// Metadata from the cloud is untrusted too.
	bad := testMetadata
	bad.Name = "x\nSTART = True"
	if _, err := CondorConfig(bad, fullSettings()); err == nil {
		t.Error("CondorConfig accepted a name with a newline")
	}
}

func TestWriteCondorConfigIdempotent(t *testing.T) {
	root := t.TempDir()
	s := fullSettings()
	changed, err := WriteCondorConfig(root, testMetadata, s)
	if err != nil || !changed {
		t.Fatalf("first write: changed %v, err %v", changed, err)
	}
	conf := filepath.Join(root, CondorConfigPath)
	token := filepath.Join(root, CondorTokenPath)
	key := filepath.Join(root, PoolSigningKeyPath)
	for path, mode := range map[string]os.FileMode{conf: 0o644, token: 0o600, key: 0o600,
		filepath.Join(root, CondorTokenDir): 0o700 | os.ModeDir} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	if got := readFile(t, token); got != s.CondorIDToken+"\n" {
		t.Errorf("token file holds %q", got)
	}
	if got := readFile(t, key); got != "secret-pool-key" {
		t.Errorf("pool key file holds %q", got)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(conf, old, old); err != nil {
		t.Fatal(err)
	}

	// Same settings: nothing written.
	changed, err = WriteCondorConfig(root, testMetadata, s)
	if err != nil || changed {
		t.Fatalf("second write: changed %v, err %v", changed, err)
	}
	if st, _ := os.Stat(conf); !st.ModTime().Equal(old) {
		t.Error("unchanged config was rewritten")
	}
	// A loosened mode is put back.
	if err := os.Chmod(token, 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err = WriteCondorConfig(root, testMetadata, s); err != nil || !changed {
		t.Fatalf("after chmod: changed %v, err %v", changed, err)
	}
	if st, _ := os.Stat(token); st.Mode() != 0o600 {
		t.Errorf("token mode %v after rewrite", st.Mode())
	}
	// An edited file is rewritten; no temporary file is left behind.
	if err := os.WriteFile(conf, []byte("START = True\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err = WriteCondorConfig(root, testMetadata, s); err != nil || !changed {
		t.Fatalf("after edit: changed %v, err %v", changed, err)
	}
	if strings.Contains(readFile(t, conf), "START = True") {
		t.Error("edited config not rewritten")
	}
	entries, err := os.ReadDir(filepath.Dir(conf))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("config dir holds %d entries, want 1", len(entries))
	}
}
