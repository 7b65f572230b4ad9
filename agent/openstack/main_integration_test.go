//go:build integration

package openstack

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcos "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// The testbed: deploy/testbed/openstack/up.sh, Keystone on 127.0.0.1:5000.
const keystoneURL = "http://127.0.0.1:5000/v3"

var (
	testbedDir  string // state dir of the testbed (clouds.yaml, testbed.env)
	cloudsYAML  string
	testbedEnv  map[string]string
	scriptDir   string
	startedHere bool
)

func TestMain(m *testing.M) {
	os.Exit(runIntegration(m))
}

func runIntegration(m *testing.M) int {
	testbedDir = os.Getenv("OSTB_DIR")
	if testbedDir == "" {
		testbedDir = "/var/lib/canopy-testbed/openstack"
	}
	cloudsYAML = filepath.Join(testbedDir, "clouds.yaml")
	var err error
	if scriptDir, err = filepath.Abs("../../deploy/testbed/openstack"); err != nil {
		fmt.Fprintln(os.Stderr, "find testbed scripts:", err)
		return 1
	}
	_, statErr := os.Stat(cloudsYAML)
	if !keystoneUp() || statErr != nil {
		fmt.Fprintln(os.Stderr, "openstack testbed not up; running deploy/testbed/openstack/up.sh (first run installs packages, ~6 min)")
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(scriptDir, "up.sh"))
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "up.sh failed: %v\n%s", err, out.String())
			return 1
		}
		startedHere = true
		fmt.Fprintf(os.Stderr, "testbed up in %s\n", time.Since(start).Round(time.Second))
	}
	if testbedEnv, err = readEnvFile(filepath.Join(testbedDir, "testbed.env")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if startedHere {
		cmd := exec.Command(filepath.Join(scriptDir, "down.sh"))
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "down.sh failed: %v\n%s", err, out)
			return 1
		}
	}
	return code
}

// keystoneUp probes Keystone on 127.0.0.1:5000.
func keystoneUp() bool {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(keystoneURL)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read testbed env: %w", err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m, nil
}

// cloudAuth returns the clouds.yaml entry's authentication options.
func cloudAuth(t testing.TB, cloud string) gophercloud.AuthOptions {
	t.Helper()
	ao, _, _, err := clouds.Parse(clouds.WithCloudName(cloud), clouds.WithLocations(cloudsYAML))
	if err != nil {
		t.Fatalf("parse %s entry %s: %v", cloudsYAML, cloud, err)
	}
	return ao
}

// passwordConfig is a password Config for a testbed cloud ("canopy-a", "canopy-b").
func passwordConfig(t testing.TB, cloud string) Config {
	ao := cloudAuth(t, cloud)
	return Config{
		AuthURL: ao.IdentityEndpoint, Region: "RegionOne",
		Username: ao.Username, Password: Secret(ao.Password), UserDomainName: ao.DomainName,
		ProjectName: ao.Scope.ProjectName, ProjectDomainName: ao.Scope.DomainName,
	}
}

// rawProvider is a plain gophercloud client for a testbed cloud, used by
// tests to set things up behind the driver's back.
func rawProvider(t testing.TB, ctx context.Context, cloud string) *gophercloud.ProviderClient {
	t.Helper()
	ao := cloudAuth(t, cloud)
	ao.AllowReauth = true
	p, err := gcos.AuthenticatedClient(ctx, ao)
	if err != nil {
		t.Fatalf("authenticate %s: %v", cloud, err)
	}
	return p
}

func newDriver(t testing.TB, ctx context.Context, cfg Config) *Driver {
	t.Helper()
	d, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}
