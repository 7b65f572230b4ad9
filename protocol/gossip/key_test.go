package gossip

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != KeySize {
		t.Fatalf("key is %d bytes", len(k1))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %#o", st.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("second load gave another key")
	}
	parsed, err := ParseKey(EncodeKey(k1) + "\n")
	if err != nil || !bytes.Equal(parsed, k1) {
		t.Fatalf("ParseKey(EncodeKey) = %x, %v", parsed, err)
	}
}

func TestLoadKeyRejects(t *testing.T) {
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    string
	}{
		{"short", []byte("short"), 0o600, "5 bytes"},
		{"group readable", make([]byte, KeySize), 0o640, "group or others"},
		{"world readable", make([]byte, KeySize), 0o604, "group or others"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), KeyFile)
			if err := os.WriteFile(path, tt.content, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreateKey(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "missing-dir", KeyFile)); err == nil {
		t.Fatal("created a key in a missing directory")
	}
}

func TestParseKeyRejects(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"not base64", "!!!", "not base64"},
		{"too short", EncodeKey([]byte("0123456789")), "10 bytes"},
		{"empty", "", "0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKey(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
