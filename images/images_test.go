package images

import "testing"

func img(name, sha string, st Status) Image {
	return Image{Name: name, ID: name + "-id", Status: st, Checksums: []Checksum{{Algorithm: "sha256", Hex: sha}}}
}

func TestCompare(t *testing.T) {
	ref := []Image{img("a", "11", StatusActive), img("b", "22", StatusActive), img("c", "33", StatusActive), img("q", "44", StatusQueued)}
	other := []Image{img("a", "11", StatusActive), img("b", "99", StatusActive), img("x", "55", StatusActive), img("c", "33", StatusKilled)}
	d := Compare(ref, other)
	names := func(in []Image) (out []string) {
		for _, i := range in {
			out = append(out, i.Name)
		}
		return
	}
	if got := names(d.Missing); len(got) != 1 || got[0] != "c" {
		t.Fatalf("missing %v", got)
	}
	if got := names(d.Mismatched); len(got) != 1 || got[0] != "b" {
		t.Fatalf("mismatched %v", got)
	}
	if got := names(d.Extra); len(got) != 1 || got[0] != "x" {
		t.Fatalf("extra %v", got)
	}
	if Compare(ref[:1], other[:1]).Empty() != true {
		t.Fatal("equal inventories differ")
	}
}

func TestSameBytes(t *testing.T) {
	cases := []struct {
		name string
		a, b Image
		want bool
	}{
		{"same sha256", img("a", "AB", StatusActive), img("a", "ab", StatusActive), true},
		{"different sha256", img("a", "ab", StatusActive), img("a", "cd", StatusActive), false},
		{"no common algorithm", Image{Checksums: []Checksum{{"md5", "1"}}}, img("a", "1", StatusActive), false},
		{"one shared agrees, other disagrees", Image{Checksums: []Checksum{{"md5", "1"}, {"sha256", "2"}}},
			Image{Checksums: []Checksum{{"md5", "1"}, {"sha256", "3"}}}, false},
	}
	for _, tc := range cases {
		if got := SameBytes(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: SameBytes = %v", tc.name, got)
		}
	}
}
