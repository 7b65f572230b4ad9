package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEncodeRoundTrip(t *testing.T) {
	in := sample{Name: "demo", Enabled: true, Ratio: 0.5, Hosts: []string{"a", "b"},
		Inner: inner{Cores: 4, Every: 90 * time.Second}, Ptr: &inner{Every: time.Millisecond},
		Sites: map[string]inner{"west": {Cores: 8}}, Labels: map[string]string{"k": "v"}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "every: 1m30s") {
		t.Fatalf("duration not written as a duration string:\n%s", b)
	}
	if strings.Contains(string(b), "cores: 0") {
		t.Fatalf("zero value written:\n%s", b)
	}
	var out sample
	if err := Decode("encoded.yaml", b, &out); err != nil {
		t.Fatalf("decode what Encode wrote: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed the value:\n in %+v\nout %+v\n%s", in, out, b)
	}
}

func TestEncodeKeepsFieldOrder(t *testing.T) {
	b, err := Encode(struct {
		Zeta  string `yaml:"zeta"`
		Alpha string `yaml:"alpha"`
	}{"z", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "zeta: z\nalpha: a\n" {
		t.Fatalf("got %q", b)
	}
}
