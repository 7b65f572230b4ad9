package glusterfake

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadScenario(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "out.xml"), []byte("<cliOutput/>"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		text    string
		wantErr string
	}{
		{"ok", "# c\n@taken_at\t2026-11-22T13:34:13Z\nout.xml\t0\tgluster --xml volume info\n-\t1\tgluster peer status\n", ""},
		{"bad field count", "out.xml\t0\n", "want FIXTURE<TAB>EXIT<TAB>COMMAND, got 2 fields"},
		{"bad exit", "out.xml\tzero\tgluster x\n", `exit code "zero"`},
		{"missing fixture", "nope.xml\t0\tgluster x\n", "nope.xml"},
		{"bad time", "@taken_at\tyesterday\n", "cannot parse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".tsv")
			if err := os.WriteFile(p, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			f, sc, err := LoadScenario(p, dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sc.TakenAt.IsZero() || len(sc.Fixtures) != 1 {
				t.Errorf("scenario %+v", sc)
			}
			out, _, code, err := f.Run(context.Background(), "gluster", "--xml", "volume", "info")
			if err != nil || code != 0 || string(out) != "<cliOutput/>" {
				t.Errorf("got %q %d %v", out, code, err)
			}
			if _, _, code, _ := f.Run(context.Background(), "gluster", "peer", "status"); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if _, _, _, err := f.Run(context.Background(), "gluster", "pool", "list"); err == nil {
				t.Error("unrecorded command answered")
			}
			want := []string{"gluster --xml volume info", "gluster peer status", "gluster pool list"}
			if got := f.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("calls %q, want %q", got, want)
			}
		})
	}
}

func TestBlockHonoursContext(t *testing.T) {
	f := New()
	f.Set("gluster x", Response{Block: make(chan struct{})})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := f.Run(ctx, "gluster", "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
}
