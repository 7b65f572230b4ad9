package vmagent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestExecRunnerFindsCondorTools: HTCondor's tools are split over bin and
// sbin (condor_off is an sbin tool); either directory alone finds both.
// Other commands come from PATH.
func TestExecRunnerFindsCondorTools(t *testing.T) {
	root := t.TempDir()
	bin, sbin := filepath.Join(root, "bin"), filepath.Join(root, "sbin")
	for dir, tools := range map[string][]string{bin: {"condor_who", "condor_status"}, sbin: {"condor_off", "condor_master"}} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tool := range tools {
			if err := os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\necho "+filepath.Base(dir)+" \"$@\"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv("PATH", "/usr/bin:/bin")
	for _, r := range []ExecRunner{{CondorBin: bin}, {CondorSbin: sbin}, {CondorBin: bin, CondorSbin: sbin}} {
		for tool, want := range map[string]string{"condor_who": "bin -quick\n", "condor_off": "sbin -quick\n", "condor_master": "sbin -quick\n"} {
			out, _, code, err := r.Run(context.Background(), tool, "-quick")
			if err != nil || code != 0 || string(out) != want {
				t.Errorf("%+v: %s: %q, code %d, %v; want %q", r, tool, out, code, err, want)
			}
		}
		if out, _, code, err := r.Run(context.Background(), "echo", "from PATH"); err != nil || code != 0 || string(out) != "from PATH\n" {
			t.Errorf("%+v: echo: %q %d %v", r, out, code, err)
		}
	}
}
