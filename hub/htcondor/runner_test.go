package htcondor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeTool writes a shell script named name into dir.
func fakeTool(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestExecRunner runs real child processes standing in for the tools.
func TestExecRunner(t *testing.T) {
	dir := t.TempDir()
	fixture, err := filepath.Abs("testdata/recorded/11_condor_q-json_projection.out")
	if err != nil {
		t.Fatal(err)
	}
	fakeTool(t, dir, "condor_q", `cat '`+fixture+`'; echo "a warning" >&2; exit 0`)
	fakeTool(t, dir, "condor_status", `echo "ERROR: no collector" >&2; exit 3`)
	fakeTool(t, dir, "condor_advertise", `cat`)
	fakeTool(t, dir, "condor_hang", `exec sleep 600`)
	fakeTool(t, dir, "condor_spew", `yes garbage`)
	r := ExecRunner{BinDir: dir}
	ctx := context.Background()

	var out bytes.Buffer
	stderr, code, err := r.Run(ctx, Cmd{Name: "condor_q", Args: []string{"-json"}}, func(rd io.Reader) error {
		_, err := io.Copy(&out, rd)
		return err
	})
	want, _ := os.ReadFile(fixture)
	if err != nil || code != 0 || !bytes.Equal(out.Bytes(), want) || string(stderr) != "a warning\n" {
		t.Errorf("condor_q: code %d err %v stderr %q, %d bytes", code, err, stderr, out.Len())
	}

	stderr, code, err = r.Run(ctx, Cmd{Name: "condor_status"}, drain)
	if err != nil || code != 3 || !strings.Contains(string(stderr), "no collector") {
		t.Errorf("condor_status: code %d err %v stderr %q", code, err, stderr)
	}

	out.Reset()
	_, _, err = r.Run(ctx, Cmd{Name: "condor_advertise", Stdin: []byte("MyType = \"Query\"\n")}, func(rd io.Reader) error {
		_, err := io.Copy(&out, rd)
		return err
	})
	if err != nil || out.String() != "MyType = \"Query\"\n" {
		t.Errorf("condor_advertise: %v %q", err, out.String())
	}

	// A tool that never answers is killed when the context ends.
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = r.Run(tctx, Cmd{Name: "condor_hang"}, drain)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Errorf("hang: %v after %s", err, time.Since(start))
	}

	// Output that is garbage stops the tool at once.
	_, _, err = r.Run(ctx, Cmd{Name: "condor_spew"}, func(rd io.Reader) error {
		return newQueueErr(rd)
	})
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Errorf("spew: %v", err)
	}

	if _, _, err = r.Run(ctx, Cmd{Name: "condor_nosuchtool"}, drain); err == nil {
		t.Error("a missing tool ran")
	}
}

// newQueueErr reads rd as ads and returns the decode error.
func newQueueErr(rd io.Reader) error {
	_, err := newAdStream(rd, 0).next()
	return err
}

// TestExecRunnerFindsSbinTools: condor_advertise is in sbin, condor_q in
// bin, as HTCondor's relocatable build and its packages install them;
// either directory configured alone finds both.
func TestExecRunnerFindsSbinTools(t *testing.T) {
	root := t.TempDir()
	bin, sbin := filepath.Join(root, "bin"), filepath.Join(root, "sbin")
	for _, d := range []string{bin, sbin} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fakeTool(t, bin, "condor_q", `echo bin`)
	fakeTool(t, sbin, "condor_advertise", `echo sbin`)
	t.Setenv("PATH", "/nonexistent")
	for _, cfg := range []Config{{BinDir: bin}, {SbinDir: sbin}, {BinDir: bin, SbinDir: sbin}} {
		for tool, want := range map[string]string{"condor_q": "bin\n", "condor_advertise": "sbin\n"} {
			var out bytes.Buffer
			_, code, err := cfg.Runner().Run(context.Background(), Cmd{Name: tool}, func(rd io.Reader) error {
				_, err := io.Copy(&out, rd)
				return err
			})
			if err != nil || code != 0 || out.String() != want {
				t.Errorf("bin_dir %q sbin_dir %q: %s: code %d err %v out %q", cfg.BinDir, cfg.SbinDir, tool, code, err, out.String())
			}
		}
	}
	c := Config{SbinDir: "relative/sbin", VMTypes: []VMTypeConfig{{Name: "el9"}}}.WithDefaults()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sbin_dir") {
		t.Errorf("relative sbin_dir: %v", err)
	}
}

// TestQueryTimeoutEnv: condor_q's own timeout follows the hub's command
// timeout, unless the environment sets it.
func TestQueryTimeoutEnv(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	env := queryTimeoutEnv(ctx, []string{"PATH=/bin"})
	if len(env) != 2 || !strings.HasPrefix(env[1], "_CONDOR_Q_QUERY_TIMEOUT=8") {
		t.Errorf("env %q", env)
	}
	if env := queryTimeoutEnv(ctx, []string{"_CONDOR_Q_QUERY_TIMEOUT=5"}); len(env) != 1 {
		t.Errorf("an explicit setting was overridden: %q", env)
	}
	if env := queryTimeoutEnv(context.Background(), nil); len(env) != 0 {
		t.Errorf("no deadline: %q", env)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if env := queryTimeoutEnv(short, nil); len(env) != 0 {
		t.Errorf("a deadline under condor_q's default lowered it: %q", env)
	}
}
