package condortools

import (
	"os"
	"path/filepath"
	"testing"
)

// tree makes DIR/bin and DIR/sbin holding the named executables, laid out
// as HTCondor's relocatable build (and its packages) lay them out.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for dir, names := range map[string][]string{
		"bin":  {"condor_q", "condor_status", "condor_drain", "condor_config_val", "condor_who"},
		"sbin": {"condor_advertise", "condor_off", "condor_on", "condor_reconfig", "condor_restart", "condor_master"},
	} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(root, dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestResolved(t *testing.T) {
	tests := []struct{ in, want Dirs }{
		{Dirs{}, Dirs{}},
		{Dirs{Bin: "/usr/bin"}, Dirs{Bin: "/usr/bin", Sbin: "/usr/sbin"}},
		{Dirs{Sbin: "/opt/condor/sbin/"}, Dirs{Bin: "/opt/condor/bin", Sbin: "/opt/condor/sbin/"}},
		{Dirs{Bin: "/a/bin", Sbin: "/b/sbin"}, Dirs{Bin: "/a/bin", Sbin: "/b/sbin"}},
	}
	for _, tt := range tests {
		if got := tt.in.Resolved(); got != tt.want {
			t.Errorf("%+v.Resolved() = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestPath(t *testing.T) {
	root := tree(t)
	bin, sbin := filepath.Join(root, "bin"), filepath.Join(root, "sbin")
	t.Setenv("PATH", "/nonexistent")
	saved := standardSbin
	standardSbin = nil // this machine's own HTCondor must not answer
	t.Cleanup(func() { standardSbin = saved })
	tests := []struct {
		name string
		dirs Dirs
		tool string
		want string
	}{
		{"user tool, both dirs", Dirs{Bin: bin, Sbin: sbin}, "condor_q", filepath.Join(bin, "condor_q")},
		{"admin tool, both dirs", Dirs{Bin: bin, Sbin: sbin}, "condor_advertise", filepath.Join(sbin, "condor_advertise")},
		{"admin tool, bin only: sbin derived", Dirs{Bin: bin}, "condor_off", filepath.Join(sbin, "condor_off")},
		{"user tool, sbin only: bin derived", Dirs{Sbin: sbin}, "condor_status", filepath.Join(bin, "condor_status")},
		{"daemon", Dirs{Bin: bin}, "condor_master", filepath.Join(sbin, "condor_master")},
		{"admin tool found in bin when sbin lacks it", Dirs{Bin: bin, Sbin: t.TempDir()}, "condor_who", filepath.Join(bin, "condor_who")},
		{"missing tool names its own directory", Dirs{Bin: bin}, "condor_on_nothing", filepath.Join(bin, "condor_on_nothing")},
		{"missing admin tool names sbin", Dirs{Bin: "/nonexistent/bin"}, "condor_advertise", "/nonexistent/sbin/condor_advertise"},
		{"a path stays a path", Dirs{Bin: bin}, "/bin/true", "/bin/true"},
		{"nothing configured, not on PATH", Dirs{}, "condor_q", "condor_q"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.dirs.Path(tt.tool); got != tt.want {
				t.Errorf("Path(%q) = %q, want %q", tt.tool, got, tt.want)
			}
		})
	}
}

func TestPathFallsBackToPATH(t *testing.T) {
	root := tree(t)
	saved := standardSbin
	standardSbin = []string{filepath.Join(root, "sbin")}
	t.Cleanup(func() { standardSbin = saved })
	t.Setenv("PATH", filepath.Join(root, "bin")+":"+filepath.Join(root, "sbin"))
	if got, want := (Dirs{}).Path("condor_advertise"), filepath.Join(root, "sbin", "condor_advertise"); got != want {
		t.Errorf("Path = %q, want %q (from PATH)", got, want)
	}
	// Configured directories without the tool: PATH still finds it.
	empty := t.TempDir()
	if got, want := (Dirs{Bin: empty}).Path("condor_status"), filepath.Join(root, "bin", "condor_status"); got != want {
		t.Errorf("Path = %q, want %q (from PATH)", got, want)
	}
	// A service account's PATH without sbin: the standard sbin directories.
	t.Setenv("PATH", filepath.Join(root, "bin"))
	if got, want := (Dirs{}).Path("condor_off"), filepath.Join(root, "sbin", "condor_off"); got != want {
		t.Errorf("Path = %q, want %q (from the standard sbin directories)", got, want)
	}
}

func TestInSbin(t *testing.T) {
	for _, n := range []string{"condor_advertise", "condor_off", "condor_on", "condor_reconfig", "condor_restart", "condor_master", "condor_startd"} {
		if !InSbin(n) {
			t.Errorf("InSbin(%q) = false", n)
		}
	}
	for _, n := range []string{"condor_q", "condor_status", "condor_drain", "condor_who", "condor_history", "condor_token_create"} {
		if InSbin(n) {
			t.Errorf("InSbin(%q) = true", n)
		}
	}
}
