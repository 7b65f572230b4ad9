package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildRefuses: bad versions and missing or non-executable binaries
// are refused with an error naming what is wrong, and nothing is left
// behind.
func TestBuildRefuses(t *testing.T) {
	src, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	full := t.TempDir()
	for _, n := range Packages {
		if err := os.WriteFile(filepath.Join(full, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	notExec := t.TempDir()
	for _, n := range Packages {
		if err := os.WriteFile(filepath.Join(notExec, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, bin, version, want string
	}{
		{"version with a letter first", full, "v1.0", "want a Debian version"},
		{"empty version", full, "", "want a Debian version"},
		{"version with a space", full, "1.0 beta", "want a Debian version"},
		{"no binaries", t.TempDir(), "1.0", "run make build first"},
		{"binaries not executable", notExec, "1.0", "not an executable file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			paths, err := Build(Options{Bin: tc.bin, Out: out, Version: tc.version, Arch: "amd64", Src: src})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want an error containing %q", err, tc.want)
			}
			if len(paths) != 0 {
				t.Errorf("paths %v after a failure", paths)
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("left %d files in %s", len(left), out)
			}
		})
	}
}

// TestBuildWritesThreeDebs builds from stand-in binaries and checks each
// file is an ar archive (a .deb) with Debian's member order.
func TestBuildWritesThreeDebs(t *testing.T) {
	src, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, n := range Packages {
		if err := os.WriteFile(filepath.Join(bin, n), []byte("#!/bin/sh\necho "+n+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	paths, err := Build(Options{Bin: bin, Out: t.TempDir(), Version: "0.1.0~git1a2b3c4", Arch: "amd64", Src: src})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != len(Packages) {
		t.Fatalf("paths %v", paths)
	}
	for i, p := range paths {
		if want := "canopy-" + Packages[i] + "_0.1.0~git1a2b3c4_amd64.deb"; filepath.Base(p) != want {
			t.Errorf("package %d is %s, want %s", i, filepath.Base(p), want)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "!<arch>\ndebian-binary") {
			t.Errorf("%s does not start as a .deb (ar archive, debian-binary first)", p)
		}
		if !strings.Contains(string(b[:200]), "2.0\n") {
			t.Errorf("%s: no format version 2.0", p)
		}
	}
}
