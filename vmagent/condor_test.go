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
		"HS06PerCore = 10.5",
		"STARTD_ATTRS = $(STARTD_ATTRS) HS06PerCore",
		"START = (TARGET.CanopyGroup =?= MY.CanopyGroup) || (TARGET.AcctGroup =?= MY.CanopyGroup)",
		"SLOT_TYPE_1_PARTITIONABLE = True",
		"SEC_TOKEN_DIRECTORY = /etc/condor/tokens.d",
		"SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS",
		"TRUST_DOMAIN = cm.example.org",
		"UID_DOMAIN = example.org",
		"CCB_ADDRESS = cm.example.org:9618",
		"DEFAULT_MASTER_SHUTDOWN_SCRIPT = /sbin/poweroff",
	} {
		if !containsLine(conf, line) {
			t.Errorf("config lacks %q", line)
		}
	}
	// Optional settings absent: no line at all (HTCondor's defaults).
	minimal, err := CondorConfig(testMetadata, minimalSettings())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"TRUST_DOMAIN", "UID_DOMAIN", "CCB_ADDRESS", "SEC_PASSWORD_DIRECTORY", "SEC_TOKEN_POOL_SIGNING_KEY_FILE", "HS06PerCore"} {
		if strings.Contains(minimal, key+" =") {
			t.Errorf("minimal config sets %s", key)
		}
	}
	if strings.Contains(conf, "PASSWORD") || strings.Contains(conf, "passwords.d") {
		t.Error("config mentions the pool password: VMs never hold the signing key")
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
	for path, mode := range map[string]os.FileMode{conf: 0o644, filepath.Join(root, CondorTokenDir): 0o700 | os.ModeDir} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
		}
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

// TestWriteCondorToken: the token file is replaced whole (never a second
// file beside it: the daemons would use whichever sorts first), mode
// 0600 in a 0700 directory; a token that is not a JWT is refused.
func TestWriteCondorToken(t *testing.T) {
	root := t.TempDir()
	second := testIDToken[:len(testIDToken)-2] + "xy"
	tests := []struct {
		name, tok string
		want      string // "" for written
	}{
		{"first", testIDToken, ""},
		{"renewed", second, ""},
		{"with a newline", "a.b.c\nd.e.f", "not an IDTOKEN"},
		{"not a JWT", "secret", "not an IDTOKEN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := WriteCondorToken(root, tc.tok)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), tc.tok) {
					t.Fatalf("err %v, want one saying %q without the token", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, filepath.Join(root, CondorTokenPath)); got != tc.tok+"\n" {
				t.Errorf("token file holds %q", got)
			}
			entries, _ := os.ReadDir(filepath.Join(root, CondorTokenDir))
			if len(entries) != 1 {
				t.Errorf("token dir holds %d entries", len(entries))
			}
			for path, mode := range map[string]os.FileMode{filepath.Join(root, CondorTokenPath): 0o600,
				filepath.Join(root, CondorTokenDir): 0o700 | os.ModeDir} {
				if st, err := os.Stat(path); err != nil || st.Mode() != mode {
					t.Errorf("%s: %v %v, want %v", path, st.Mode(), err, mode)
				}
			}
		})
	}
	if got := readFile(t, filepath.Join(root, CondorTokenPath)); got != second+"\n" {
		t.Errorf("a refused token replaced the file: %q", got)
	}
}
