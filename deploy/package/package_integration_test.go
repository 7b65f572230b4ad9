//go:build integration

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func command(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestPackagesInstall builds the three packages from freshly built
// binaries, unpacks each into a scratch root with dpkg and checks the
// files, their modes, the control data, the maintainer scripts and the
// systemd unit (systemd-analyze's offline security exposure).
func TestPackagesInstall(t *testing.T) {
	src, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	command(t, src, "go", "build", "-o", bin, "./hub/cmd/hub", "./agent/cmd/agent", "./vmagent/cmd/vmagent")
	out := t.TempDir()
	paths, err := Build(Options{Bin: bin, Out: out, Version: "1.2.3~test", Arch: "amd64", Src: src})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 3 {
		t.Fatalf("built %v, want 3 packages", paths)
	}
	exposure := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, tc := range []struct {
		name     string
		files    map[string]os.FileMode // path: mode
		conf     []string
		unitHas  []string
		unitLack []string
		maxExp   float64
		postinst []string
	}{
		{name: "hub",
			files: map[string]os.FileMode{"/usr/bin/canopy-hub": 0o755, "/lib/systemd/system/canopy-hub.service": 0o644,
				"/etc/canopy/hub.yaml.example": 0o640, "/usr/share/canopy/prometheus/alerts.yml": 0o644,
				"/usr/share/canopy/grafana/canopy.json": 0o644, "/usr/share/doc/canopy-hub/operations.md": 0o644},
			conf:    []string{"/etc/canopy/hub.yaml.example"},
			unitHas: []string{"ExecStart=/usr/bin/canopy-hub run --config /etc/canopy/hub.yaml", "ExecReload=/bin/kill -HUP $MAINPID", "User=canopy", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "ConditionPathExists=/etc/canopy/hub.yaml"},
			maxExp:  2.5, postinst: []string{"adduser --system --group", "canopy"}},
		{name: "agent",
			files: map[string]os.FileMode{"/usr/bin/canopy-agent": 0o755, "/lib/systemd/system/canopy-agent.service": 0o644,
				"/etc/canopy/agent.yaml.example": 0o640},
			conf:    []string{"/etc/canopy/agent.yaml.example"},
			unitHas: []string{"ExecStart=/usr/bin/canopy-agent run --config /etc/canopy/agent.yaml", "User=canopy", "NoNewPrivileges=yes", "ProtectSystem=strict", "MemoryDenyWriteExecute=yes"},
			maxExp:  2.5, postinst: []string{"adduser --system --group", "canopy"}},
		{name: "vmagent",
			files:    map[string]os.FileMode{"/usr/bin/canopy-vmagent": 0o755, "/lib/systemd/system/canopy-vmagent.service": 0o644},
			unitHas:  []string{"ExecStart=/usr/bin/canopy-vmagent run", "KillMode=process", "Delegate=yes"},
			unitLack: []string{"NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=", "User="},
			maxExp:   10, postinst: []string{"systemctl enable canopy-vmagent.service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deb := filepath.Join(out, "canopy-"+tc.name+"_1.2.3~test_amd64.deb")
			fields := command(t, "", "dpkg-deb", "-f", deb, "Package", "Version", "Architecture")
			if want := "Package: canopy-" + tc.name + "\nVersion: 1.2.3~test\nArchitecture: amd64\n"; fields != want {
				t.Errorf("control fields:\n%s\nwant:\n%s", fields, want)
			}
			root := t.TempDir()
			command(t, "", "dpkg", "-x", deb, root)
			for p, mode := range tc.files {
				st, err := os.Stat(filepath.Join(root, p))
				if err != nil {
					t.Errorf("missing %s: %v", p, err)
					continue
				}
				if st.Mode().Perm() != mode {
					t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), mode)
				}
			}
			// The binary is the real one: it runs and names itself.
			if out, _ := exec.Command(filepath.Join(root, "usr/bin/canopy-"+tc.name)).CombinedOutput(); !strings.Contains(string(out), tc.name) {
				t.Errorf("canopy-%s without arguments: %q, want its usage", tc.name, out)
			}
			ctrl := t.TempDir()
			command(t, "", "dpkg-deb", "-e", deb, ctrl)
			conffiles, _ := os.ReadFile(filepath.Join(ctrl, "conffiles"))
			if got := strings.Fields(string(conffiles)); strings.Join(got, " ") != strings.Join(tc.conf, " ") {
				t.Errorf("conffiles %v, want %v", got, tc.conf)
			}
			for _, s := range []string{"postinst", "prerm"} {
				command(t, "", "sh", "-n", filepath.Join(ctrl, s))
			}
			post, err := os.ReadFile(filepath.Join(ctrl, "postinst"))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.postinst {
				if !strings.Contains(string(post), w) {
					t.Errorf("postinst lacks %q:\n%s", w, post)
				}
			}
			unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/canopy-"+tc.name+".service"))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.unitHas {
				if !strings.Contains(string(unit), w) {
					t.Errorf("unit lacks %q", w)
				}
			}
			for _, w := range tc.unitLack {
				if regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(w)).Match(unit) {
					t.Errorf("unit has %q, which would bind the condor_master and the jobs", w)
				}
			}
			sec := command(t, "", "systemd-analyze", "security", "--offline=yes", "--root="+root, "canopy-"+tc.name+".service")
			m := exposure.FindStringSubmatch(sec)
			if m == nil {
				t.Fatalf("systemd-analyze security: no exposure level in:\n%s", sec)
			}
			level, _ := strconv.ParseFloat(m[1], 64)
			t.Logf("canopy-%s.service: systemd exposure level %.1f", tc.name, level)
			if level > tc.maxExp {
				t.Errorf("canopy-%s.service: exposure %.1f, want at most %.1f", tc.name, level, tc.maxExp)
			}
		})
	}
}
