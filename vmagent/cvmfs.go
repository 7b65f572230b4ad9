package vmagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/canopy-grid/canopy/protocol/vmproto"
	"github.com/canopy-grid/canopy/vmagent/proxy"
)

// ProxySource gives the squid proxies a VM should use, as ordered groups:
// CVMFS tries the groups in order (failover) and spreads load over the
// proxies within a group. Implementations: StaticProxies (the list in the
// VM's settings) and squid discovery (package vmagent/proxy).
type ProxySource interface {
	Proxies(ctx context.Context) ([][]string, error)
}

// discoveredProxies asks the site agent for the nearest squids, checks
// them from the VM and orders them by measured time (vmagent/proxy); the
// settings' static list is the fallback.
type discoveredProxies struct {
	s vmproto.Settings
	// client asks the agent (TLS, see AgentClient).
	client *http.Client
	log    *logrus.Entry
}

// Proxies implements ProxySource.
func (d discoveredProxies) Proxies(ctx context.Context) ([][]string, error) {
	var fallback []string
	for _, g := range d.s.Proxies {
		fallback = append(fallback, g...)
	}
	res, err := proxy.Discover(ctx, proxy.Options{AgentURL: d.s.AgentURL, Client: d.client, Kind: "cvmfs", ProbeURL: d.s.CVMFSProbeURL, Fallback: fallback})
	if err != nil {
		d.log.WithError(err).WithField("source", res.Source).Warn("squid discovery")
	}
	if len(res.Groups) == 0 && len(d.s.Proxies) > 0 && res.Source == "none" {
		return d.s.Proxies, nil
	}
	return res.Groups, nil
}

// StaticProxies is a fixed proxy list, e.g. Settings.Proxies.
type StaticProxies [][]string

// Proxies implements ProxySource.
func (p StaticProxies) Proxies(context.Context) ([][]string, error) { return p, nil }

// CVMFS paths, under the vmagent's root.
const (
	// CVMFSLocalConfigPath is the site-local CVMFS client configuration;
	// the vmagent manages only its CVMFS_HTTP_PROXY line.
	CVMFSLocalConfigPath = "/etc/cvmfs/default.local"
	// CVMFSConfigTool is the CVMFS client's tool; its presence means the
	// CVMFS client is installed.
	CVMFSConfigTool = "/usr/bin/cvmfs_config"
)

// CVMFSProxyValue renders proxy groups as a CVMFS_HTTP_PROXY value:
// proxies in a group joined by "|" (load-balanced), groups by ";"
// (failover), DIRECT last. No groups gives "DIRECT".
func CVMFSProxyValue(groups [][]string) (string, error) {
	if err := vmproto.ValidateProxies(groups); err != nil {
		return "", err
	}
	var b strings.Builder
	for _, g := range groups {
		b.WriteString(strings.Join(g, "|"))
		b.WriteByte(';')
	}
	b.WriteString("DIRECT")
	return b.String(), nil
}

var proxyLineRE = regexp.MustCompile(`^\s*(export\s+)?CVMFS_HTTP_PROXY\s*=`)

// setProxyLine returns the configuration file conf with line as its only
// CVMFS_HTTP_PROXY setting, in place of the first one, or appended.
func setProxyLine(conf []byte, line string) []byte {
	return replaceLine(conf, proxyLineRE.MatchString, line)
}

// ApplyCVMFSProxies sets CVMFS_HTTP_PROXY in root's default.local to the
// given groups (keeping the file's other lines) and, when the file changed
// and the CVMFS client is installed, reloads the client's configuration
// with `cvmfs_config reload`, which makes every mounted repository take the
// new proxies without unmounting. It reports whether the file changed.
func ApplyCVMFSProxies(ctx context.Context, root string, groups [][]string, r CommandRunner) (bool, error) {
	value, err := CVMFSProxyValue(groups)
	if err != nil {
		return false, fmt.Errorf("cvmfs proxies: %w", err)
	}
	old, err := readManaged(root, CVMFSLocalConfigPath)
	if err != nil {
		return false, fmt.Errorf("cvmfs proxies: %w", err)
	}
	// Single quotes: default.local is sourced by a shell, and ; and | are
	// shell operators. Validated proxies hold no quote.
	changed, err := writeFile(root, CVMFSLocalConfigPath, setProxyLine(old, "CVMFS_HTTP_PROXY='"+value+"'"), 0o644)
	if err != nil || !changed {
		return changed, err
	}
	if _, err := os.Stat(filepath.Join(root, CVMFSConfigTool)); errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if _, err := run(ctx, r, "cvmfs_config", "reload"); err != nil {
		return true, fmt.Errorf("cvmfs proxies: %w", err)
	}
	return true, nil
}
