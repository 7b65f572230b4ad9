//go:build integration

package userdata_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canopy-grid/canopy/protocol/userdata"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// The tools come from Debian's cloud-init package, made available by
// deploy/testbed/cloud-init/up.sh (it installs the package if missing).
var (
	cloudInit       string // the cloud-init command
	cloudInitPython string // the interpreter cloud-init's modules live with
)

// watched are the places cloud-init would touch if it acted on this
// machine; the tests check that none changed.
var watched = []string{"/var/lib/cloud", "/run/cloud-init", "/var/log/cloud-init.log", "/var/log/cloud-init-output.log",
	"/etc/cloud", "/etc/hostname", "/etc/hosts", "/etc/fstab", "/etc/canopy", "/etc/condor", "/etc/cvmfs", "/etc/motd",
	"/etc/sysctl.d"}

func TestMain(m *testing.M) {
	os.Exit(runIntegration(m))
}

func runIntegration(m *testing.M) int {
	script, err := filepath.Abs("../../deploy/testbed/cloud-init/up.sh")
	if err != nil {
		fmt.Fprintln(os.Stderr, "find testbed script:", err)
		return 1
	}
	out, err := exec.Command(script).Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s failed: %v\n", script, err)
		return 1
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	cloudInit, cloudInitPython = env["CLOUD_INIT"], env["CLOUD_INIT_PYTHON"]
	if cloudInit == "" || cloudInitPython == "" {
		fmt.Fprintf(os.Stderr, "%s did not say where cloud-init is:\n%s", script, out)
		return 1
	}
	before := snapshot()
	code := m.Run()
	if after := snapshot(); after != before {
		fmt.Fprintf(os.Stderr, "cloud-init changed the machine:\nbefore:\n%s\nafter:\n%s", before, after)
		return 1
	}
	return code
}

// snapshot describes the watched paths: every file and directory with its
// size, mode and modification time.
func snapshot() string {
	var b strings.Builder
	for _, root := range watched {
		n := 0
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if n++; n > 10000 {
				return filepath.SkipAll
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %v %d %s\n", path, info.Mode(), info.Size(), info.ModTime().Format(time.RFC3339Nano))
			return nil
		})
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", root, err)
		}
	}
	return b.String()
}

// schema runs `cloud-init schema --config-file` on one cloud-config part.
func schema(t *testing.T, content []byte) (string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "part.yaml")
	if err := os.WriteFile(f, content, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cloudInit, "schema", "--config-file", f)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func settingsVariants() map[string]vmproto.Settings {
	ca, err := os.ReadFile("../vmproto/testdata/agent-ca.pem")
	if err != nil {
		panic(err)
	}
	minimal := vmproto.Settings{AgentURL: "https://10.0.0.5:7080", AgentCA: string(ca), EnrollToken: "eyJzaXRlIjoiZWFzdCJ9.c2ln",
		CondorHost: "cm.example.org:9618", Site: "east", Group: "atlas", VMType: "el9"}
	full := minimal
	full.CheckinEvery = 10 * time.Second
	full.CondorTrustDomain, full.CondorUIDDomain, full.CondorCCBAddress = "cm.example.org", "example.org", "cm.example.org:9618"
	full.GossipJoin, full.GossipAgentKey = "10.0.0.5:7946", "MCowBQYDK2VwAyEA"
	full.Gluster = &vmproto.GlusterMount{Servers: []string{"gl1.example.org", "gl2.example.org"}, Volume: "software", MountPoint: "/mnt/canopy"}
	full.Proxies = [][]string{{"http://squid1.example.org:3128", "http://squid2.example.org:3128"}, {"http://squid3.example.org:3128"}}
	return map[string]vmproto.Settings{"minimal": minimal, "full": full}
}

func siteParts(t *testing.T) []userdata.Part {
	t.Helper()
	var parts []userdata.Part
	for _, p := range []string{"../../deploy/cloud-init/site-example.yaml", "../../deploy/cloud-init/site-example.sh"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		typ, err := userdata.TypeOf(b)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, userdata.Part{Type: typ, Filename: filepath.Base(p), Content: b})
	}
	return parts
}

// TestCloudInitSchemaAcceptsEveryPart: every cloud-config part of every
// user-data an agent renders (the vmagent's own, the site examples) passes
// cloud-init's own schema check.
func TestCloudInitSchemaAcceptsEveryPart(t *testing.T) {
	for name, s := range settingsVariants() {
		t.Run(name, func(t *testing.T) {
			own, err := vmproto.RenderUserData(s)
			if err != nil {
				t.Fatal(err)
			}
			ud, err := userdata.Compose(append([]userdata.Part{{Type: userdata.TypeCloudConfig, Filename: "canopy-vmagent.yaml", Content: own}}, siteParts(t)...))
			if err != nil {
				t.Fatal(err)
			}
			parts, err := userdata.Split(ud)
			if err != nil {
				t.Fatal(err)
			}
			checked := 0
			for _, p := range parts {
				if p.Type != userdata.TypeCloudConfig {
					continue
				}
				out, err := schema(t, p.Content)
				if err != nil || !strings.Contains(out, "Valid cloud-config") {
					t.Errorf("cloud-init schema refused part %s: %v\n%s\n%s", p.Filename, err, out, p.Content)
				}
				checked++
			}
			if checked != 2 {
				t.Fatalf("checked %d cloud-config parts, want 2", checked)
			}
		})
	}
}

// TestCloudInitSchemaHasTeeth: the check above would catch a broken part.
func TestCloudInitSchemaHasTeeth(t *testing.T) {
	for name, doc := range map[string]string{
		"write_files not a list": "#cloud-config\nwrite_files: 3\n",
		"permissions a number":   "#cloud-config\nwrite_files:\n- path: /x\n  content: y\n  permissions: [1]\n",
	} {
		out, err := schema(t, []byte(doc))
		if err == nil {
			t.Errorf("%s: cloud-init schema accepted it:\n%s", name, out)
		}
	}
}

// parseScript prints, for each part cloud-init's own user-data processor
// finds in a file: its content type, file name, sha256 and size. The
// processor works in a temporary cloud_dir, not the machine's.
const parseScript = `
import sys, tempfile, hashlib
from cloudinit import user_data, helpers
d = tempfile.mkdtemp()
p = helpers.Paths({'cloud_dir': d, 'run_dir': d})
msg = user_data.UserDataProcessor(p).process(open(sys.argv[1], 'rb').read())
for part in msg.walk():
    if part.get_content_maintype() == 'multipart':
        continue
    payload = part.get_payload(decode=True)
    print(part.get_content_type(), part.get_filename(), hashlib.sha256(payload).hexdigest(), len(payload))
`

// TestCloudInitReadsComposedUserData: cloud-init's own parser finds in a
// composed message exactly the parts Compose put in, byte for byte.
func TestCloudInitReadsComposedUserData(t *testing.T) {
	s := settingsVariants()["full"]
	own, err := vmproto.RenderUserData(s)
	if err != nil {
		t.Fatal(err)
	}
	parts := append([]userdata.Part{{Type: userdata.TypeCloudConfig, Filename: "canopy-vmagent.yaml", Content: own}}, siteParts(t)...)
	ud, err := userdata.Compose(parts)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(f, ud, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cloudInitPython, "-c", parseScript, f)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cloud-init's parser: %v", err)
	}
	var want strings.Builder
	for _, p := range parts {
		sum := sha256.Sum256(p.Content)
		fmt.Fprintf(&want, "%s %s %s %d\n", p.Type, p.Filename, hex.EncodeToString(sum[:]), len(p.Content))
	}
	if string(out) != want.String() {
		t.Fatalf("cloud-init read:\n%s\nwant:\n%s", out, want.String())
	}
}

// TestSplitReadsMakeMime: what `cloud-init devel make-mime` writes now
// splits into the files it was given.
func TestSplitReadsMakeMime(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{
		"a.yaml": []byte("#cloud-config\nruncmd:\n- [echo, hi]\n"),
		"b.sh":   []byte("#!/bin/sh\necho 'caf\xc3\xa9'\n"),
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), c, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(cloudInit, "devel", "make-mime", "-a", "a.yaml:cloud-config", "-a", "b.sh:x-shellscript")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make-mime: %v", err)
	}
	parts, err := userdata.Split(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Type != userdata.TypeCloudConfig || parts[1].Type != userdata.TypeShellScript ||
		!bytes.Equal(parts[0].Content, files["a.yaml"]) || !bytes.Equal(parts[1].Content, files["b.sh"]) ||
		parts[0].Filename != "a.yaml" || parts[1].Filename != "b.sh" {
		t.Fatalf("parts %+v", parts)
	}
}
