package images

import (
	"strings"
	"testing"
)

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

func TestValidate(t *testing.T) {
	good := Image{ID: "i", Name: "n", SizeBytes: 1, Checksums: []Checksum{{"sha512", strings.Repeat("0a", 64)}}}
	cases := []struct {
		name string
		mut  func(*Image)
		want string
	}{
		{"good", func(*Image) {}, ""},
		{"negative size", func(i *Image) { i.SizeBytes = -1 }, "size_bytes is -1"},
		{"long name", func(i *Image) { i.Name = strings.Repeat("n", 256) }, "name is 256 bytes"},
		{"digest not hex", func(i *Image) { i.Checksums[0].Hex = "zz" }, "not hex"},
		{"empty algorithm", func(i *Image) { i.Checksums[0].Algorithm = "" }, "algorithm"},
		{"long visibility", func(i *Image) { i.Visibility = strings.Repeat("v", 65) }, "visibility is 65 bytes"},
	}
	for _, tc := range cases {
		im := good
		im.Checksums = append([]Checksum(nil), good.Checksums...)
		tc.mut(&im)
		err := im.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseHash(t *testing.T) {
	cases := []struct {
		in, algo, want string
	}{
		{"sha512:" + strings.Repeat("AB", 64), "sha512", ""},
		{"md5:" + strings.Repeat("0", 32), "md5", ""},
		{"sha512:abc", "", "3 hex digits, want 128"},
		{"crc32:00", "", `algorithm "crc32"`},
		{strings.Repeat("a", 64), "", "want algo:hex"},
		{"sha256:" + strings.Repeat("g", 64), "", "not hex"},
	}
	for _, tc := range cases {
		algo, h, err := ParseHash(tc.in)
		if tc.want == "" {
			if err != nil || algo != tc.algo || h != strings.ToLower(h) {
				t.Errorf("ParseHash(%q) = %q %q %v", tc.in, algo, h, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseHash(%q) error %v, want %q", tc.in, err, tc.want)
		}
	}
	r := Ref{Name: "x", Algo: "sha512", Hex: strings.Repeat("ab", 64)}
	if !r.Matches(Image{Checksums: []Checksum{{"SHA512", strings.Repeat("AB", 64)}}}) || r.Matches(Image{}) {
		t.Error("Ref.Matches")
	}
}
