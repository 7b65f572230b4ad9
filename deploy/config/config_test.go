package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
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
	Name    string            `yaml:"name"`
	Enabled bool              `yaml:"enabled"`
	Ratio   float64           `yaml:"ratio"`
	Hosts   []string          `yaml:"hosts"`
	Inner   inner             `yaml:"inner"`
	Ptr     *inner            `yaml:"ptr"`
	Sites   map[string]inner  `yaml:"sites"`
	Labels  map[string]string `yaml:"labels"`
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
