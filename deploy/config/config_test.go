package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type inner struct {
	Cores int           `yaml:"cores"`
	Every time.Duration `yaml:"every"`
}

type base struct {
	Site string `yaml:"site"`
}

type sample struct {
	base    `yaml:",inline"`
	Name    string                       `yaml:"name"`
	Enabled bool                         `yaml:"enabled"`
	Ratio   float64                      `yaml:"ratio"`
	Hosts   []string                     `yaml:"hosts"`
	Inner   inner                        `yaml:"inner"`
	Ptr     *inner                       `yaml:"ptr"`
	Sites   map[string]inner             `yaml:"sites"`
	Labels  map[string]string            `yaml:"labels"`
	Nested  map[string]map[string]string `yaml:"nested"`
}

type exported struct {
	Base  `yaml:",inline"`
	Other string `yaml:"other"`
}

// Base is exported so inline works through reflection.
type Base struct {
	Site string `yaml:"site"`
}

func TestDecodeGood(t *testing.T) {
	src := `
name: demo
enabled: true
ratio: 0.5
hosts: [a, b]
inner: {cores: 4, every: 90s}
ptr:
  cores: 2
sites:
  west: {cores: 8}
labels: {k: v}
`
	var s sample
	if err := Decode("good.yaml", []byte(src), &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "demo" || !s.Enabled || s.Ratio != 0.5 || len(s.Hosts) != 2 || s.Inner.Cores != 4 ||
		s.Inner.Every != 90*time.Second || s.Ptr == nil || s.Ptr.Cores != 2 || s.Sites["west"].Cores != 8 || s.Labels["k"] != "v" {
		t.Fatalf("decoded %+v", s)
	}
}

func TestDecodeInline(t *testing.T) {
	var e exported
	if err := Decode("inline.yaml", []byte("site: west\nother: x\n"), &e); err != nil {
		t.Fatal(err)
	}
	if e.Site != "west" || e.Other != "x" {
		t.Fatalf("decoded %+v", e)
	}
}

func TestDecodeEmptyKeepsDefaults(t *testing.T) {
	s := sample{Name: "default"}
	if err := Decode("empty.yaml", nil, &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "default" {
		t.Fatal("empty file changed a default")
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name, src string
		line      int
		key       string
		msg       string
	}{
		{"unknown key", "name: x\nnmae: y\n", 2, "nmae", "unknown key"},
		{"unknown nested key", "inner:\n  cores: 1\n  coers: 2\n", 3, "inner.coers", "unknown key"},
		{"wrong type int", "inner:\n  cores: lots\n", 2, "inner.cores", "want an integer"},
		{"wrong type bool", "enabled: maybe\n", 1, "enabled", "want true or false"},
		{"bad duration", "inner: {every: 10 minutes}\n", 1, "inner.every", "want a duration"},
		{"list for scalar", "name: [a]\n", 1, "name", "want a string"},
		{"scalar for list", "hosts: a\n", 1, "hosts", "want a list"},
		{"scalar for mapping", "inner: 3\n", 1, "inner", "want a mapping"},
		{"duplicate key", "name: a\nname: b\n", 2, "name", "given twice"},
		{"bad list element", "sites:\n  west: {cores: x}\n", 2, "sites.west.cores", "want an integer"},
		{"NaN", "ratio: .nan\n", 1, "ratio", `want a finite number, got ".nan"`},
		{"infinity", "ratio: .inf\n", 1, "ratio", `want a finite number, got ".inf"`},
		{"minus infinity", "ratio: -.Inf\n", 1, "ratio", `want a finite number, got "-.Inf"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			err := Decode("site.yaml", []byte(tc.src), &s)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if ce.File != "site.yaml" || ce.Line != tc.line || ce.Key != tc.key || !strings.Contains(ce.Msg, tc.msg) {
				t.Fatalf("got %q (line %d key %q), want line %d key %q containing %q", err, ce.Line, ce.Key, tc.line, tc.key, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "site.yaml:") {
				t.Fatalf("message does not start with the file name: %q", err)
			}
		})
	}
}

func TestDecodeSyntaxErrorNamesFile(t *testing.T) {
	var s sample
	err := Decode("broken.yaml", []byte("name: [unclosed\n"), &s)
	if err == nil || !strings.Contains(err.Error(), "broken.yaml") {
		t.Fatalf("err = %v", err)
	}
}

// aliasBomb is a small file whose aliases expand to n×n values.
func aliasBomb(n int) string {
	var b strings.Builder
	b.WriteString("nested:\n  n0: &a {")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "k%d: x", i)
	}
	b.WriteString("}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  n%d: *a\n", i)
	}
	return b.String()
}

// TestDecodeRefusesAliasBomb: aliases that expand a 20 KB file into
// millions of values are refused, quickly; a moderate use of aliases is fine.
func TestDecodeRefusesAliasBomb(t *testing.T) {
	var s sample
	start := time.Now()
	err := Decode("bomb.yaml", []byte(aliasBomb(1500)), &s)
	var ce *Error
	if !errors.As(err, &ce) || ce.File != "bomb.yaml" || !strings.Contains(ce.Msg, "expands to more than 262144 values") {
		t.Fatalf("err = %v", err)
	}
	t.Logf("refused after %s", time.Since(start).Round(time.Millisecond))
	s = sample{}
	if err := Decode("aliases.yaml", []byte(aliasBomb(100)), &s); err != nil || len(s.Nested) != 100 || len(s.Nested["n99"]) != 100 {
		t.Fatalf("100×100 aliases: %v (%d)", err, len(s.Nested))
	}
}

// TestLoadRefusesHugeAndSpecialFiles: a config over MaxFileSize, and
// anything that is not a regular file, is refused before it is read, with
// an error naming the file (and the size and limit).
func TestLoadRefusesHugeAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.yaml")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(50 << 20); err != nil { // sparse: costs no disk
		t.Fatal(err)
	}
	f.Close()
	justOver := filepath.Join(dir, "over.yaml")
	if err := os.WriteFile(justOver, []byte("name: x\n"+strings.Repeat("#", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		want       []string
	}{
		{"50 MB", huge, []string{huge, "52428800 bytes", "limit 1048576"}},
		{"just over the limit", justOver, []string{justOver, "1048584 bytes", "limit 1048576"}},
		{"directory", dir, []string{dir, "not a regular file"}},
		{"device", "/dev/zero", []string{"/dev/zero", "not a regular file"}},
		{"fifo", fifo, []string{fifo, "not a regular file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sample
			err := Load(tt.path, &s)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	// At the limit is fine.
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte("name: x\n"+strings.Repeat("#", MaxFileSize-8)), 0o600); err != nil {
		t.Fatal(err)
	}
	var s sample
	if err := Load(ok, &s); err != nil || s.Name != "x" {
		t.Fatalf("file of exactly MaxFileSize bytes: %v, %+v", err, s)
	}
	if err := Decode("big.yaml", make([]byte, MaxFileSize+1), &s); err == nil || !strings.Contains(err.Error(), "big.yaml: config is 1048577 bytes, limit 1048576") {
		t.Fatalf("Decode of MaxFileSize+1 bytes: %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	var s sample
	err := Load(filepath.Join(t.TempDir(), "nope.yaml"), &s)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: x\ninner: {cores: 1, every: 1s}\nhosts: [a]\n"))
	f.Add([]byte("sites: {a: {cores: 1}}\nptr: ~\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s sample
		_ = Decode("fuzz.yaml", b, &s) // must not panic
	})
}
