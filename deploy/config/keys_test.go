package config

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

type keysInner struct {
	Cores int `yaml:"cores"`
}

type KeysEmbedded struct {
	Shared string `yaml:"shared"`
}

type keysSample struct {
	KeysEmbedded `yaml:",inline"`
	Name         string               `yaml:"name"`
	Every        time.Duration        `yaml:"every"`
	Caps         *keysInner           `yaml:"caps"`
	Sites        map[string]keysInner `yaml:"sites"`
	Items        []keysInner          `yaml:"items"`
	Tags         []string             `yaml:"tags"`
	Skipped      string               `yaml:"-"`
	Plain        int
}

func TestKeys(t *testing.T) {
	got := Keys(reflect.TypeFor[keysSample]())
	want := []string{"caps", "caps.cores", "every", "items", "items.*.cores", "name", "plain", "shared", "sites", "sites.*.cores", "tags"}
	if !slices.Equal(got, want) {
		t.Errorf("Keys = %v\nwant   %v", got, want)
	}
}

func TestMentioned(t *testing.T) {
	doc := []byte(`name: x
sites:
  west:
    cores: 4
# every: 10s    a commented-out setting
items:
  # - cores: 2
  - {}
`)
	m, err := Mentioned("t.yaml", doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"name", true},
		{"sites", true},
		{"sites.*.cores", true}, // set under a map entry
		{"every", true},         // commented out
		{"items.*.cores", true}, // commented-out list item
		{"caps", false},
		{"caps.shared", false},
		{"plain", false},
	} {
		if got := m.Has(tc.key); got != tc.want {
			t.Errorf("Has(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
	if _, err := Mentioned("bad.yaml", []byte("a: [")); err == nil {
		t.Error("Mentioned of broken YAML: no error")
	}
}
