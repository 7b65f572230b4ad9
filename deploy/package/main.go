// Command package builds Canopy's Debian packages (canopy-hub,
// canopy-agent, canopy-vmagent) with nfpm, from binaries already built:
//
//	go run ./deploy/package --bin bin --out dist --version 0.1.0 [--arch amd64]
//
// `make package` builds the binaries and runs it. Each package carries its
// binary as /usr/bin/canopy-NAME, its hardened systemd unit from
// deploy/systemd, config examples in /etc/canopy/ and docs; the hub and
// agent packages create the canopy system user in their postinst. No unit
// is enabled by the hub and agent packages (they need a config and
// certificates first); the vmagent package, which a site bakes into its
// worker image, enables its unit.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("package", flag.ContinueOnError)
	bin := fl.String("bin", "bin", "directory holding the built hub, agent and vmagent binaries")
	out := fl.String("out", "dist", "directory the .deb files are written to")
	version := fl.String("version", "", "package version (Debian syntax, starts with a digit; required)")
	arch := fl.String("arch", runtime.GOARCH, "Debian architecture of the binaries")
	src := fl.String("src", ".", "repository root (deploy/, docs/, README.md)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	paths, err := Build(Options{Bin: *bin, Out: *out, Version: *version, Arch: *arch, Src: *src})
	for _, p := range paths {
		fmt.Println(p)
	}
	return err
}

// Options say what to package and where.
type Options struct {
	Bin, Out, Version, Arch, Src string
	// MTime is the time stamped on every file (zero: the version's commit
	// is unknown, so a fixed time keeps builds reproducible).
	MTime time.Time
}

var versionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*$`)

// Packages are the packages Build makes, by binary name.
var Packages = []string{"hub", "agent", "vmagent"}

// Build writes one .deb per binary into o.Out and returns their paths.
func Build(o Options) ([]string, error) {
	if !versionRE.MatchString(o.Version) {
		return nil, fmt.Errorf("version %q: want a Debian version starting with a digit (such as 0.1.0~git1a2b3c4)", o.Version)
	}
	if o.MTime.IsZero() {
		o.MTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	scripts, err := os.MkdirTemp("", "canopy-package-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scripts)
	var paths []string
	for _, name := range Packages {
		info, err := describe(name, o, scripts)
		if err != nil {
			return paths, fmt.Errorf("canopy-%s: %w", name, err)
		}
		p := filepath.Join(o.Out, fmt.Sprintf("canopy-%s_%s_%s.deb", name, o.Version, o.Arch))
		if err := write(info, p); err != nil {
			return paths, fmt.Errorf("canopy-%s: %w", name, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func write(info *nfpm.Info, path string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
		}
	}()
	return deb.Default.Package(info, f)
}

// describe is the nfpm description of canopy-NAME.
func describe(name string, o Options, scripts string) (*nfpm.Info, error) {
	binPath := filepath.Join(o.Bin, name)
	st, err := os.Stat(binPath)
	if err != nil {
		return nil, fmt.Errorf("binary: %w (run make build first)", err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("binary %s is not an executable file", binPath)
	}
	srcPath := func(p string) string { return filepath.Join(o.Src, p) }
	file := func(src, dst string, mode fs.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst,
			FileInfo: &files.ContentFileInfo{Mode: mode, MTime: o.MTime}}
	}
	doc := "/usr/share/doc/canopy-" + name + "/"
	contents := files.Contents{
		file(binPath, "/usr/bin/canopy-"+name, 0o755),
		file(srcPath("deploy/systemd/canopy-"+name+".service"), "/lib/systemd/system/canopy-"+name+".service", 0o644),
		file(srcPath("README.md"), doc+"README.md", 0o644),
		file(srcPath("docs/operations.md"), doc+"operations.md", 0o644),
	}
	conf := func(src, dst string) {
		c := file(srcPath(src), dst, 0o640)
		c.Type = files.TypeConfigNoReplace
		contents = append(contents, c)
	}
	desc := ""
	var depends, suggests []string
	switch name {
	case "hub":
		desc = "Canopy hub: one HTCondor pool across many OpenStack clouds.\n" +
			"The hub reads the demand from the HTCondor queue, plans which cloud boots\n" +
			"which worker VMs, talks to one agent per site over QUIC with mutual TLS,\n" +
			"and serves the status page, the admin API and Prometheus metrics."
		conf("deploy/examples/hub.yaml", "/etc/canopy/hub.yaml.example")
		contents = append(contents,
			file(srcPath("deploy/prometheus/alerts.yml"), "/usr/share/canopy/prometheus/alerts.yml", 0o644),
			file(srcPath("deploy/prometheus/gluster-alerts.yml"), "/usr/share/canopy/prometheus/gluster-alerts.yml", 0o644),
			file(srcPath("deploy/grafana/canopy.json"), "/usr/share/canopy/grafana/canopy.json", 0o644),
			file(srcPath("deploy/htcondor/README.md"), doc+"htcondor.md", 0o644))
		depends = []string{"adduser"}
	case "agent":
		desc = "Canopy site agent: boots, lists and deletes a site's worker VMs.\n" +
			"One agent per cloud tenant holds the cloud credentials, keeps a session\n" +
			"with the Canopy hub and answers its worker VMs' enrollments and check-ins."
		conf("deploy/examples/agent-openstack.yaml", "/etc/canopy/agent.yaml.example")
		depends = []string{"adduser"}
		suggests = []string{"glusterfs-server"}
	case "vmagent":
		desc = "Canopy vmagent: contextualizes a Canopy worker VM.\n" +
			"Baked into the worker image, it reads its settings from the user-data,\n" +
			"configures HTCondor, GlusterFS and CVMFS, enrolls with the site agent and\n" +
			"checks in until the VM retires. It needs HTCondor installed."
		suggests = []string{"glusterfs-client", "cvmfs"}
	default:
		return nil, errors.New("unknown package")
	}
	if name != "vmagent" {
		contents = append(contents, &files.Content{Destination: "/etc/canopy", Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Mode: 0o755, MTime: o.MTime}})
	}
	sc, err := writeScripts(name, scripts)
	if err != nil {
		return nil, err
	}
	info := &nfpm.Info{
		Name:        "canopy-" + name,
		Arch:        o.Arch,
		Platform:    "linux",
		Version:     o.Version,
		Section:     "admin",
		Priority:    "optional",
		Maintainer:  "Canopy developers <canopy@localhost>",
		Description: desc,
		Homepage:    "https://github.com/canopy-grid/canopy",
		MTime:       o.MTime,
		Overridables: nfpm.Overridables{
			Depends:  depends,
			Suggests: suggests,
			Contents: contents,
			Scripts:  sc,
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return nil, err
	}
	return info, nil
}

// writeScripts writes the maintainer scripts of canopy-NAME into dir.
func writeScripts(name, dir string) (nfpm.Scripts, error) {
	var post, prerm string
	unit := "canopy-" + name + ".service"
	switch name {
	case "hub", "agent":
		post = fmt.Sprintf(`#!/bin/sh
# canopy-%[1]s postinst: the canopy system user, /etc/canopy readable by it
# only. The unit is not enabled: it needs /etc/canopy/%[1]s.yaml and the
# certificates first (docs/operations.md). An upgrade restarts a running one.
set -e
if [ "$1" = configure ]; then
  if ! getent passwd canopy >/dev/null; then
    adduser --system --group --home /var/lib/canopy --no-create-home --shell /usr/sbin/nologin canopy
  fi
  chgrp canopy /etc/canopy /etc/canopy/%[1]s.yaml.example
  chmod 0750 /etc/canopy
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n "$2" ]; then
      systemctl try-restart %[2]s || true
    fi
  fi
fi
exit 0
`, name, unit)
		prerm = fmt.Sprintf(`#!/bin/sh
# canopy-%[1]s prerm: stop the service when the package is removed (not on upgrade).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop %[2]s || true
fi
if [ "$1" = remove ]; then
  systemctl disable %[2]s >/dev/null 2>&1 || true
fi
exit 0
`, name, unit)
	case "vmagent":
		post = fmt.Sprintf(`#!/bin/sh
# canopy-vmagent postinst: enable the unit, so that a worker image with the
# package installed runs the vmagent at every boot. systemctl enable works
# in an image being built (a chroot without a running systemd).
set -e
if [ "$1" = configure ]; then
  systemctl enable %[1]s >/dev/null 2>&1 || echo "canopy-vmagent: could not enable %[1]s; run systemctl enable %[1]s" >&2
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
  fi
fi
exit 0
`, unit)
		prerm = fmt.Sprintf(`#!/bin/sh
# canopy-vmagent prerm: on removal only disable the unit. It is not stopped:
# its KillMode=process would leave the condor_master and the jobs running
# anyway, and a package removal must never end a job.
set -e
if [ "$1" = remove ]; then
  systemctl disable %[1]s >/dev/null 2>&1 || true
fi
exit 0
`, unit)
	}
	s := nfpm.Scripts{PostInstall: filepath.Join(dir, name+".postinst"), PreRemove: filepath.Join(dir, name+".prerm")}
	if err := os.WriteFile(s.PostInstall, []byte(post), 0o755); err != nil {
		return s, err
	}
	if err := os.WriteFile(s.PreRemove, []byte(prerm), 0o755); err != nil {
		return s, err
	}
	return s, nil
}
