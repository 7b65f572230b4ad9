package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/canopy-grid/canopy/protocol/userdata"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// VMContext is what a site admin configures for contextualizing the
// site's VMs, beyond the agent's own settings: the GlusterFS volume to
// mount, the squid proxies for CVMFS, and extra cloud-init parts (examples
// in deploy/cloud-init/). It holds no credential: user-data is readable by
// every process in a VM, so secrets travel over the VM's enrollment.
type VMContext struct {
	// CondorIDTokenFile and PoolSigningKeyFile are retired: a site-wide
	// IDTOKEN or the pool signing key in every VM's user-data let any job
	// read them. Setting either is an error naming what replaced it (the
	// condor: section: the agent mints each VM a token of its own).
	CondorIDTokenFile  string `yaml:"condor_idtoken_file"`
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
	gluster *vmproto.GlusterMount
	proxies [][]string
	parts   []userdata.Part
}

// maxContextFile bounds a credential or part file.
const maxContextFile = userdata.MaxSize

// validate refuses the retired credential settings.
func (c VMContext) validate() error {
	switch {
	case c.CondorIDTokenFile != "":
		return errors.New("condor_idtoken_file is no longer supported: a site-wide IDTOKEN in user-data is readable by every job; " +
			"the agent mints each VM its own token (condor: signing_key_file, trust_domain)")
	case c.PoolSigningKeyFile != "":
		return errors.New("pool_signing_key_file is no longer supported: the pool signing key must never reach a VM; " +
			"give it to the agent instead (condor: signing_key_file), which mints each VM its own token")
	}
	return nil
}

// NewUserDataRenderer reads and checks the files c names. caPEM is the CA
// the VMs verify the agent by (the hub's), which every user-data carries.
func NewUserDataRenderer(c VMContext, caPEM string) (*UserDataRenderer, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("vm context: %w", err)
	}
	r := &UserDataRenderer{gluster: c.Gluster, proxies: c.Proxies}
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
	probe := vmproto.Settings{AgentURL: "https://127.0.0.1:1", AgentCA: caPEM, EnrollToken: strings.Repeat("x", 400), CondorHost: "cm.invalid",
		Site: "site", Group: "group", VMType: "vmtype"}
	if _, err := r.Render(probe); err != nil {
		return nil, fmt.Errorf("vm context: %w", err)
	}
	return r, nil
}

// Render returns the user-data for one VM: s (which carries the VM's
// enrollment token, site, group and type) completed with the site's
// volume and proxies, followed by the site's extra parts. A nil renderer
// adds nothing to s.
func (r *UserDataRenderer) Render(s vmproto.Settings) ([]byte, error) {
	if r == nil {
		r = &UserDataRenderer{}
	}
	s.Gluster, s.Proxies = r.gluster, r.proxies
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
