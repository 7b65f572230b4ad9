package agent

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/canopy-grid/canopy/protocol/userdata"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// VMContext is what a site admin configures for contextualizing the
// site's VMs, beyond the agent's own settings: HTCondor credentials, the
// GlusterFS volume to mount, the squid proxies for CVMFS, and extra
// cloud-init parts (examples in deploy/cloud-init/).
type VMContext struct {
	// CondorIDTokenFile holds the IDTOKEN worker startds present to the
	// collector (e.g. made with condor_token_create on the central
	// manager). Optional.
	CondorIDTokenFile string `yaml:"condor_idtoken_file"`
	// PoolSigningKeyFile holds the pool signing key (the central manager's
	// /etc/condor/passwords.d/POOL). Giving it to workers lets them check
	// the central manager's tokens and use PASSWORD authentication, but
	// every VM then holds the pool's secret. Optional.
	PoolSigningKeyFile string `yaml:"pool_signing_key_file"`
	// Gluster is a read-only GlusterFS volume every VM mounts. Optional.
	Gluster *vmproto.GlusterMount `yaml:"gluster"`
	// Proxies are the squid proxies for CVMFS, ordered groups of
	// http://host:port (load-balanced within a group, failover between
	// groups, DIRECT last). Optional.
	Proxies [][]string `yaml:"proxies"`
	// UserDataParts are files added to every VM's user-data after the
	// vmagent's own part, each a #cloud-config document or a script
	// (#!...), typed by its first line as cloud-init does.
	UserDataParts []string `yaml:"user_data_parts"`
}

// UserDataRenderer renders each VM's user-data: the vmagent's settings as
// a #cloud-config part, plus the site's extra parts as a multi-part MIME
// message. It reads and checks the site's files once, at agent start.
type UserDataRenderer struct {
	idToken string
	poolKey string
	gluster *vmproto.GlusterMount
	proxies [][]string
	parts   []userdata.Part
}

// maxContextFile bounds a credential or part file.
const maxContextFile = userdata.MaxSize

// NewUserDataRenderer reads and checks the files c names.
func NewUserDataRenderer(c VMContext) (*UserDataRenderer, error) {
	r := &UserDataRenderer{gluster: c.Gluster, proxies: c.Proxies}
	if c.CondorIDTokenFile != "" {
		b, err := readContextFile(c.CondorIDTokenFile)
		if err != nil {
			return nil, fmt.Errorf("vm context: condor IDTOKEN: %w", err)
		}
		r.idToken = strings.TrimSpace(string(b))
	}
	if c.PoolSigningKeyFile != "" {
		b, err := readContextFile(c.PoolSigningKeyFile)
		if err != nil {
			return nil, fmt.Errorf("vm context: pool signing key: %w", err)
		}
		r.poolKey = base64.StdEncoding.EncodeToString(b)
	}
	for _, path := range c.UserDataParts {
		b, err := readContextFile(path)
		if err != nil {
			return nil, fmt.Errorf("vm context: user-data part: %w", err)
		}
		t, err := userdata.TypeOf(b)
		if err != nil {
			return nil, fmt.Errorf("vm context: user-data part %s: %w", path, err)
		}
		r.parts = append(r.parts, userdata.Part{Type: t, Filename: filepath.Base(path), Content: b})
	}
	// Render once with placeholder values: a bad token, volume or proxy
	// list, or parts too big for Nova, fail the agent's start, not a boot.
	probe := vmproto.Settings{AgentURL: "http://127.0.0.1:1", Token: strings.Repeat("x", 400), CondorHost: "cm.invalid",
		Site: "site", Group: "group", VMType: "vmtype"}
	if _, err := r.Render(probe); err != nil {
		return nil, fmt.Errorf("vm context: %w", err)
	}
	return r, nil
}

// Render returns the user-data for one VM: s (which carries the VM's own
// token, site, group and type) completed with the site's credentials,
// volume and proxies, followed by the site's extra parts. A nil renderer
// adds nothing to s.
func (r *UserDataRenderer) Render(s vmproto.Settings) ([]byte, error) {
	if r == nil {
		r = &UserDataRenderer{}
	}
	s.CondorIDToken, s.PoolSigningKey, s.Gluster, s.Proxies = r.idToken, r.poolKey, r.gluster, r.proxies
	own, err := vmproto.RenderUserData(s)
	if err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	parts := append([]userdata.Part{{Type: userdata.TypeCloudConfig, Filename: "canopy-vmagent.yaml", Content: own}}, r.parts...)
	ud, err := userdata.Compose(parts)
	if err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	return ud, nil
}

// readContextFile reads a small, non-empty file.
func readContextFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxContextFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	switch {
	case len(b) == 0:
		return nil, fmt.Errorf("%s is empty", path)
	case len(b) > maxContextFile:
		return nil, fmt.Errorf("%s is over %d bytes", path, maxContextFile)
	}
	return b, nil
}
