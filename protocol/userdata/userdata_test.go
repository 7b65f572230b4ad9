package userdata

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestTypeOf(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"#cloud-config\na: 1\n", TypeCloudConfig, false},
		{"#!/bin/sh\necho\n", TypeShellScript, false},
		{"#cloud-boothook\n#!/bin/sh\n", TypeBoothook, false},
		{"#include\nhttp://x\n", TypeIncludeURL, false},
		{"#part-handler\n", TypePartHandler, false},
		{"## template: jinja\n#cloud-config\n", TypeJinja2, false},
		{"# just a comment\n", "", true},
		{"cloud-config\n", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := TypeOf([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("TypeOf(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func sampleParts() []Part {
	return []Part{
		{Type: TypeCloudConfig, Filename: "canopy-vmagent.yaml", Content: []byte("#cloud-config\nwrite_files:\n- path: /etc/canopy/vmagent.yaml\n  content: |\n    site: east\n")},
		{Type: TypeCloudConfig, Filename: "site.yaml", Content: []byte("#cloud-config\nruncmd:\n- [echo, hi]\n")},
		{Type: TypeShellScript, Filename: "site.sh", Content: []byte("#!/bin/sh\r\necho 'héllo'\n" + strings.Repeat("x", 2000) + "\n")},
	}
}

func TestComposeSplitRoundTrip(t *testing.T) {
	parts := sampleParts()
	b, err := Compose(parts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Compose(parts)
	if err != nil || !bytes.Equal(b, again) {
		t.Fatalf("Compose is not deterministic (err %v)", err)
	}
	if !bytes.Contains(b, []byte("Merge-Type: list(append)+dict(recurse_array)+str()")) {
		t.Error("cloud-config parts lack the Merge-Type header")
	}
	got, err := Split(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(parts) {
		t.Fatalf("Split gave %d parts, want %d", len(got), len(parts))
	}
	for i := range parts {
		if got[i].Type != parts[i].Type || got[i].Filename != parts[i].Filename || !bytes.Equal(got[i].Content, parts[i].Content) {
			t.Errorf("part %d: got %s %q %q, want %s %q %q", i, got[i].Type, got[i].Filename, got[i].Content,
				parts[i].Type, parts[i].Filename, parts[i].Content)
		}
	}
}

func TestComposeSinglePartIsItself(t *testing.T) {
	p := sampleParts()[0]
	b, err := Compose([]Part{p})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, p.Content) {
		t.Fatalf("single part composed to %q", b)
	}
	got, err := Split(b)
	if err != nil || len(got) != 1 || got[0].Type != TypeCloudConfig || !bytes.Equal(got[0].Content, p.Content) {
		t.Fatalf("Split(single) = %+v, %v", got, err)
	}
}

func TestComposeErrors(t *testing.T) {
	ok := sampleParts()[0]
	tests := []struct {
		name  string
		parts []Part
		want  string
	}{
		{"no parts", nil, "no parts"},
		{"type with params", []Part{ok, {Type: "text/x-shellscript; charset=x", Content: []byte("#!/bin/sh")}}, "content type"},
		{"non-text type", []Part{ok, {Type: "application/octet-stream", Content: []byte("x")}}, "content type"},
		{"filename with quote", []Part{ok, {Type: TypeShellScript, Filename: `a"b`, Content: []byte("#!/bin/sh")}}, "filename"},
		{"empty part", []Part{ok, {Type: TypeShellScript}}, "empty part"},
		{"cloud-config not a mapping", []Part{ok, {Type: TypeCloudConfig, Content: []byte("#cloud-config\n- a\n- b\n")}}, "not a YAML mapping"},
		{"cloud-config not YAML", []Part{ok, {Type: TypeCloudConfig, Content: []byte("#cloud-config\na: [\n")}}, "not YAML"},
		{"cloud-config without header", []Part{{Type: TypeCloudConfig, Content: []byte("a: 1\n")}}, "#cloud-config"},
		{"too big", []Part{ok, {Type: TypeShellScript, Content: append([]byte("#!/bin/sh\n"), bytes.Repeat([]byte("x"), MaxSize)...)}}, "limit"},
		{"too many parts", make([]Part, maxParts+1), "parts, limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compose(tt.parts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compose: err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestSplitMakeMime reads what `cloud-init devel make-mime` (22.4.2) wrote.
func TestSplitMakeMime(t *testing.T) {
	b, err := os.ReadFile("testdata/make-mime-cloud-config-and-script.txt")
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := os.ReadFile("testdata/make-mime-part1.yaml")
	p2, _ := os.ReadFile("testdata/make-mime-part2.sh")
	got, err := Split(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []Part{{TypeCloudConfig, "a.yaml", p1}, {TypeShellScript, "b.sh", p2}}
	if len(got) != len(want) {
		t.Fatalf("got %d parts, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Type != want[i].Type || got[i].Filename != want[i].Filename || !bytes.Equal(got[i].Content, want[i].Content) {
			t.Errorf("part %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSplitGzip(t *testing.T) {
	b, err := Compose(sampleParts())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Split(gz(t, b))
	if err != nil || len(got) != 3 {
		t.Fatalf("Split(gzip) = %d parts, %v", len(got), err)
	}
}

func mimeDoc(body string) string {
	return "Content-Type: multipart/mixed; boundary=\"B\"\r\nMIME-Version: 1.0\r\n\r\n" + body
}

func TestSplitErrors(t *testing.T) {
	nested := "Content-Type: text/cloud-config\r\n\r\n#cloud-config\r\na: 1\r\n"
	for i := range maxDepth + 1 {
		bnd := fmt.Sprintf("N%d", i)
		nested = "Content-Type: multipart/mixed; boundary=\"" + bnd + "\"\r\n\r\n--" + bnd + "\r\n" + nested + "\r\n--" + bnd + "--\r\n"
	}
	var many strings.Builder
	for range maxParts + 1 {
		many.WriteString("--B\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\r\n")
	}
	many.WriteString("--B--\r\n")
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"too big", bytes.Repeat([]byte("#"), MaxSize+1), "limit"},
		{"unknown #", []byte("# hello\n"), "not one of"},
		{"plain text", []byte("hello world\n"), "neither"},
		{"no content type", []byte("MIME-Version: 1.0\r\n\r\nbody"), "no Content-Type"},
		{"bad content type", []byte("Content-Type: ;;;\r\n\r\nbody"), "bad Content-Type"},
		{"multipart without boundary", []byte("Content-Type: multipart/mixed\r\n\r\nbody"), "without a boundary"},
		{"bad base64", []byte(mimeDoc("--B\r\nContent-Type: text/x-shellscript\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--B--\r\n")), "bad base64"},
		{"unsupported encoding", []byte(mimeDoc("--B\r\nContent-Type: text/x-shellscript\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nabc\r\n--B--\r\n")), "unsupported"},
		{"no parts", []byte(mimeDoc("--B--\r\n")), "no parts"},
		{"truncated", []byte(mimeDoc("--B\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\r\n")), "unexpected EOF"},
		{"nested too deep", []byte(nested), "nested"},
		{"too many parts", []byte(mimeDoc(many.String())), "more than"},
		{"bad gzip", []byte{0x1f, 0x8b, 0, 0}, "gzip"},
		{"gzip bomb", gz(t, bytes.Repeat([]byte("#"), maxGunzip+10)), "expands"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Split(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Split: err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSplitRetypesTextPlain(t *testing.T) {
	in := mimeDoc("--B\r\nContent-Type: text/plain\r\n\r\n#cloud-config\r\na: 1\r\n--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n#!/bin/sh\r\necho a=3Db\r\n--B--\r\n")
	got, err := Split([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Type != TypeCloudConfig || got[1].Type != TypeShellScript {
		t.Fatalf("got %+v", got)
	}
	if !bytes.Contains(got[1].Content, []byte("echo a=b")) {
		t.Errorf("quoted-printable not decoded: %q", got[1].Content)
	}
}

// FuzzSplit: Split never panics, keeps its bounds, and what it returns
// composes and splits back to the same parts.
func FuzzSplit(f *testing.F) {
	if b, err := Compose(sampleParts()); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, err := Split(b)
		if err != nil {
			return
		}
		if len(parts) == 0 || len(parts) > maxParts {
			t.Fatalf("%d parts", len(parts))
		}
		again, err := Compose(parts)
		if err != nil {
			return // not every readable part is one Compose writes
		}
		back, err := Split(again)
		if err != nil {
			t.Fatalf("Split(Compose(parts)): %v", err)
		}
		if len(back) != len(parts) {
			t.Fatalf("round trip: %d parts, want %d", len(back), len(parts))
		}
		for i := range parts {
			if !bytes.Equal(back[i].Content, parts[i].Content) || (len(parts) > 1 && back[i].Filename != parts[i].Filename) {
				t.Fatalf("round trip changed part %d", i)
			}
		}
	})
}
