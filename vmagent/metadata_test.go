package vmagent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canopy-grid/canopy/protocol/vmproto"
)

func TestParseMetadata(t *testing.T) {
	nova := readFile(t, "testdata/metadata/nova-meta_data.json")
	tests := []struct {
		name string
		in   string
		want string // error substring; "" for success
	}{
		{"nova document", nova, ""},
		{"minimal", `{"uuid":"1b4e28ba-2fa1-41d2-883f-0016d3cca427","name":"vm-1"}`, ""},
		{"empty", ``, "not a JSON object"},
		{"array", `[]`, "not a JSON object"},
		{"truncated", `{"uuid":"1b4e28ba-`, "not a JSON object"},
		{"no uuid", `{"name":"vm-1"}`, "lacks uuid"},
		{"no name", `{"uuid":"1b4e28ba-2fa1-41d2-883f-0016d3cca427"}`, "lacks name"},
		{"uuid not a uuid", `{"uuid":"../../etc","name":"vm-1"}`, "not a UUID"},
		{"name with newline", `{"uuid":"1b4e28ba-2fa1-41d2-883f-0016d3cca427","name":"vm\nSTART = True"}`, "not a plain name"},
		{"name with dollar", `{"uuid":"1b4e28ba-2fa1-41d2-883f-0016d3cca427","name":"$(HOME)"}`, "not a plain name"},
		{"meta value not a string", `{"uuid":"1b4e28ba-2fa1-41d2-883f-0016d3cca427","name":"vm-1","meta":{"a":1}}`, `field "meta" must be string`},
		{"uuid a number", `{"uuid":12,"name":"vm-1"}`, `field "uuid" must be string`},
		{"not utf-8", "{\"uuid\":\"\xff\"}", "not UTF-8"},
		{"too big", `{"x":"` + strings.Repeat("a", MaxMetaData) + `"}`, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md, err := ParseMetadata([]byte(tt.in))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if md.UUID != testMetadata.UUID {
					t.Errorf("uuid %q", md.UUID)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
	md, err := ParseMetadata([]byte(nova))
	if err != nil {
		t.Fatal(err)
	}
	if md.Name != "canopy-east-p1-0-0" || md.Meta["canopy_group"] != "atlas" || md.AvailabilityZone != "nova" {
		t.Errorf("parsed %+v", md)
	}
}

// metadataServer serves an OpenStack-style metadata service on loopback.
func metadataServer(t testing.TB, meta string, userData []byte) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openstack/latest/meta_data.json", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(meta))
	})
	mux.HandleFunc("GET /openstack/latest/user_data", func(w http.ResponseWriter, r *http.Request) {
		if userData == nil {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(userData)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestHTTPSource(t *testing.T) {
	meta := readFile(t, "testdata/metadata/nova-meta_data.json")
	ud, err := vmproto.RenderUserData(minimalSettings())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("ok", func(t *testing.T) {
		s := metadataServer(t, meta, ud)
		md, got, err := HTTPSource{BaseURL: s.URL + "/"}.Fetch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if md.UUID != testMetadata.UUID || string(got) != string(ud) {
			t.Fatalf("got %+v, %q", md, got)
		}
	})
	t.Run("no user-data", func(t *testing.T) {
		s := metadataServer(t, meta, nil)
		_, _, err := HTTPSource{BaseURL: s.URL}.Fetch(context.Background())
		if !errors.Is(err, ErrNoUserData) {
			t.Fatalf("err %v, want ErrNoUserData", err)
		}
	})
	t.Run("user-data too big", func(t *testing.T) {
		s := metadataServer(t, meta, make([]byte, MaxUserData+1))
		_, _, err := HTTPSource{BaseURL: s.URL}.Fetch(context.Background())
		if err == nil || !strings.Contains(err.Error(), "limit") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("bad meta_data.json", func(t *testing.T) {
		s := metadataServer(t, `{"uuid": 3}`, ud)
		_, _, err := HTTPSource{BaseURL: s.URL}.Fetch(context.Background())
		if err == nil || !strings.Contains(err.Error(), `field "uuid"`) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("server error", func(t *testing.T) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}))
		defer s.Close()
		_, _, err := HTTPSource{BaseURL: s.URL}.Fetch(context.Background())
		if err == nil || !strings.Contains(err.Error(), "500") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("unchunked body longer than limit", func(t *testing.T) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "999999999")
			_, _ = w.Write([]byte("{}"))
		}))
		defer s.Close()
		_, _, err := HTTPSource{BaseURL: s.URL}.Fetch(context.Background())
		if err == nil || !strings.Contains(err.Error(), "limit") {
			t.Fatalf("err %v", err)
		}
	})
}

func writeDrive(t *testing.T, dir string, meta string, ud []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meta_data.json"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	if ud != nil {
		if err := os.WriteFile(filepath.Join(dir, "user_data"), ud, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfigDriveAndDirSource(t *testing.T) {
	meta := readFile(t, "testdata/metadata/nova-meta_data.json")
	ud, err := vmproto.RenderUserData(minimalSettings())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("mounted drive", func(t *testing.T) {
		dir := t.TempDir()
		writeDrive(t, filepath.Join(dir, "openstack", "latest"), meta, ud)
		md, got, err := ConfigDrive{Dir: dir}.Fetch(ctx)
		if err != nil || md.UUID != testMetadata.UUID || string(got) != string(ud) {
			t.Fatalf("Fetch = %+v, %q, %v", md, got, err)
		}
	})
	t.Run("drive mounted by the vmagent", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "drive")
		dev := filepath.Join(t.TempDir(), "config-2")
		if err := os.WriteFile(dev, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := newFakeRunner(t, map[string][]answer{"mount": {{}}})
		r.onRun = func(line string) { writeDrive(t, filepath.Join(dir, "openstack", "latest"), meta, ud) }
		md, _, err := ConfigDrive{Dir: dir, Device: dev, Runner: r}.Fetch(ctx)
		if err != nil || md.Name != testMetadata.Name {
			t.Fatalf("Fetch = %+v, %v", md, err)
		}
		if calls := r.Calls(); len(calls) != 1 || calls[0] != "mount -o ro "+dev+" "+dir {
			t.Fatalf("calls %q", calls)
		}
	})
	t.Run("no device", func(t *testing.T) {
		_, _, err := ConfigDrive{Dir: t.TempDir(), Device: "/nonexistent/config-2"}.Fetch(ctx)
		if err == nil || !strings.Contains(err.Error(), "no device") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("mount fails", func(t *testing.T) {
		dev := filepath.Join(t.TempDir(), "config-2")
		if err := os.WriteFile(dev, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r := newFakeRunner(t, map[string][]answer{"mount": {{stderr: "mount: wrong fs type", code: 32}}})
		_, _, err := ConfigDrive{Dir: t.TempDir(), Device: dev, Runner: r}.Fetch(ctx)
		if err == nil || !strings.Contains(err.Error(), "wrong fs type") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("plain directory", func(t *testing.T) {
		dir := t.TempDir()
		writeDrive(t, dir, meta, ud)
		md, _, err := DirSource{Dir: dir}.Fetch(ctx)
		if err != nil || md.UUID != testMetadata.UUID {
			t.Fatalf("Fetch = %+v, %v", md, err)
		}
	})
	t.Run("directory without user_data", func(t *testing.T) {
		dir := t.TempDir()
		writeDrive(t, dir, meta, nil)
		if _, _, err := (DirSource{Dir: dir}).Fetch(ctx); !errors.Is(err, ErrNoUserData) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("user_data is a directory", func(t *testing.T) {
		dir := t.TempDir()
		writeDrive(t, dir, meta, nil)
		if err := os.Mkdir(filepath.Join(dir, "user_data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := (DirSource{Dir: dir}).Fetch(ctx); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("err %v", err)
		}
	})
}

// FuzzParseMetadata: never a panic; what it accepts is well formed.
func FuzzParseMetadata(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		md, err := ParseMetadata(b)
		if err != nil {
			return
		}
		if !uuidRE.MatchString(md.UUID) || !serverNameRE.MatchString(md.Name) {
			t.Fatalf("accepted %+v", md)
		}
	})
}
