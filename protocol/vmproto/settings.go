package vmproto

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/canopy-grid/canopy/deploy/config"
	"github.com/canopy-grid/canopy/protocol/userdata"
)

// SettingsPath is where cloud-init writes the vmagent's settings inside a
// VM; vmagent reads the same entry straight from the user-data.
const SettingsPath = "/etc/canopy/vmagent.yaml"

// Settings are what a site agent tells a VM at boot, through user-data.
type Settings struct {
	// AgentURL is the site agent's VM endpoint, e.g. http://10.0.0.5:7080.
	AgentURL string `yaml:"agent_url"`
	// Token proves the VM's identity to its agent (see agent/vmtoken).
	Token string `yaml:"token"`
	// CondorHost is the HTCondor central manager (collector) address.
	CondorHost string `yaml:"condor_host"`
	// Site, Group and VMType are what the VM was booted for; the startd
	// advertises them and admits only the group's jobs.
	Site   string `yaml:"site"`
	Group  string `yaml:"group"`
	VMType string `yaml:"vm_type"`
	// CheckinEvery is how often the VM reports to its agent.
	CheckinEvery time.Duration `yaml:"checkin_every"`
	// CondorIDToken is the IDTOKEN the startd presents to the collector;
	// written to CondorTokenPath (mode 0600). Optional.
	CondorIDToken string `yaml:"condor_idtoken"`
	// PoolSigningKey is the pool's signing key (the POOL password file),
	// base64-encoded; written to PoolSigningKeyPath (mode 0600). With it
	// the startd can check the central manager's own tokens and use
	// PASSWORD authentication. Optional.
	PoolSigningKey string `yaml:"pool_signing_key"`
	// Gluster is a GlusterFS volume to mount read-only. Optional.
	Gluster *GlusterMount `yaml:"gluster"`
	// Proxies are the squid proxies for CVMFS: groups in order of
	// preference, proxies in a group load-balanced. DIRECT always follows.
	Proxies [][]string `yaml:"proxies"`
	// CVMFSProbeURL is fetched through each squid candidate to check it
	// (e.g. a stratum 1's /cvmfs/REPO/.cvmfspublished); empty: candidates
	// are used in the agent's order unchecked.
	CVMFSProbeURL string `yaml:"cvmfs_probe_url"`
	// GossipJoin is the site agent's gossip pool address; GossipKey the
	// pool's encryption key and GossipAgentKey the agent's public signing
	// key (both base64). Empty GossipJoin: no gossip, check-ins only.
	GossipJoin     string `yaml:"gossip_join"`
	GossipKey      string `yaml:"gossip_key"`
	GossipAgentKey string `yaml:"gossip_agent_key"`
}

var (
	// nameRE is what a site, group or VM type may look like: it ends up in
	// ClassAd strings and HTCondor config lines, where $ and quotes have
	// meanings of their own.
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$`)
	// tokenRE is what an agent token may hold (it travels in an HTTP header).
	tokenRE = regexp.MustCompile(`^[A-Za-z0-9._~+/=-]+$`)
	// idTokenRE is a JWT in compact form.
	idTokenRE = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$`)
	// hostRE is what condor_host may look like: it ends up in the startd's
	// configuration as it is.
	hostRE = regexp.MustCompile(`^[A-Za-z0-9.:\[\]_-]+$`)
)

// Limits on settings values.
const (
	maxToken          = 4 << 10
	maxIDToken        = 8 << 10
	maxPoolSigningKey = 4 << 10
	maxProxyGroups    = 16
	maxProxiesInGroup = 16
)

// Validate checks that the settings can drive a VM, and that every value
// that ends up in a configuration file is well formed.
func (s Settings) Validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"agent_url", s.AgentURL}, {"token", s.Token},
		{"condor_host", s.CondorHost}, {"site", s.Site}, {"group", s.Group}, {"vm_type", s.VMType}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("vmagent settings lack %s", strings.Join(missing, ", "))
	}
	u, err := url.Parse(s.AgentURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("vmagent settings: agent_url %.100q is not an http(s) URL", s.AgentURL)
	}
	if len(s.Token) > maxToken || !tokenRE.MatchString(s.Token) {
		return errors.New("vmagent settings: token is not a token (letters, digits and . _ ~ + / = -, at most 4096)")
	}
	if !hostRE.MatchString(s.CondorHost) {
		return fmt.Errorf("vmagent settings: condor_host %.100q is not a host[:port]", s.CondorHost)
	}
	for _, f := range []struct{ name, v string }{{"site", s.Site}, {"group", s.Group}, {"vm_type", s.VMType}} {
		if !nameRE.MatchString(f.v) {
			return fmt.Errorf("vmagent settings: %s %.100q must be letters, digits and . _ @ + - (at most 128)", f.name, f.v)
		}
	}
	if s.CheckinEvery < 0 {
		return fmt.Errorf("vmagent settings: checkin_every %s is negative", s.CheckinEvery)
	}
	if s.CondorIDToken != "" && (len(s.CondorIDToken) > maxIDToken || !idTokenRE.MatchString(s.CondorIDToken)) {
		return fmt.Errorf("vmagent settings: condor_idtoken is not an IDTOKEN (a JWT of at most %d bytes)", maxIDToken)
	}
	if s.PoolSigningKey != "" {
		k, err := base64.StdEncoding.DecodeString(s.PoolSigningKey)
		if err != nil || len(k) == 0 || len(k) > maxPoolSigningKey {
			return fmt.Errorf("vmagent settings: pool_signing_key must be base64 of 1 to %d bytes", maxPoolSigningKey)
		}
	}
	if s.Gluster != nil {
		if err := s.Gluster.Validate(); err != nil {
			return fmt.Errorf("vmagent settings: gluster: %w", err)
		}
	}
	if err := ValidateProxies(s.Proxies); err != nil {
		return fmt.Errorf("vmagent settings: proxies: %w", err)
	}
	return nil
}

type cloudConfig struct {
	WriteFiles []writeFileEntry `yaml:"write_files"`
}

type writeFileEntry struct {
	Path        string `yaml:"path"`
	Permissions string `yaml:"permissions,omitempty"`
	Owner       string `yaml:"owner,omitempty"`
	Encoding    string `yaml:"encoding,omitempty"`
	Content     string `yaml:"content"`
}

// RenderUserData renders s as a #cloud-config document whose write_files
// entry puts the settings at SettingsPath (mode 0600), so that a VM with
// cloud-init gets the file and vmagent can read the same entry directly.
// A site agent may add parts of its own around it (see package userdata).
func RenderUserData(s Settings) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	body, err := config.Encode(s)
	if err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	cc, err := yaml.Marshal(cloudConfig{WriteFiles: []writeFileEntry{{Path: SettingsPath, Permissions: "0600", Owner: "root:root", Content: string(body)}}})
	if err != nil {
		return nil, fmt.Errorf("render user-data: %w", err)
	}
	return append([]byte("#cloud-config\n"), cc...), nil
}

// ParseUserData finds the vmagent's settings in a VM's user-data: a
// #cloud-config document or a multi-part MIME message one of whose
// cloud-config parts has a write_files entry for SettingsPath.
func ParseUserData(b []byte) (Settings, error) {
	parts, err := userdata.Split(b)
	if err != nil {
		return Settings{}, err
	}
	var found []writeFileEntry
	var skipped []string
	for i, p := range parts {
		if p.Type != userdata.TypeCloudConfig {
			continue
		}
		var cc cloudConfig
		if err := yaml.Unmarshal(p.Content, &cc); err != nil {
			skipped = append(skipped, fmt.Sprintf("part %d: %v", i+1, err))
			continue
		}
		for _, f := range cc.WriteFiles {
			if f.Path == SettingsPath {
				found = append(found, f)
			}
		}
	}
	switch {
	case len(found) == 0 && len(skipped) > 0:
		return Settings{}, fmt.Errorf("user-data has no write_files entry for %s (unreadable cloud-config: %s)", SettingsPath, strings.Join(skipped, "; "))
	case len(found) == 0:
		return Settings{}, fmt.Errorf("user-data has no write_files entry for %s", SettingsPath)
	case len(found) > 1:
		return Settings{}, fmt.Errorf("user-data has %d write_files entries for %s", len(found), SettingsPath)
	}
	content := []byte(found[0].Content)
	switch found[0].Encoding {
	case "", "text/plain":
	case "b64", "base64":
		if content, err = base64.StdEncoding.DecodeString(found[0].Content); err != nil {
			return Settings{}, fmt.Errorf("user-data: %s: bad base64: %w", SettingsPath, err)
		}
	default:
		return Settings{}, fmt.Errorf("user-data: %s: unsupported encoding %q", SettingsPath, found[0].Encoding)
	}
	return decodeSettings(content)
}

// decodeSettings reads the settings file strictly (unknown keys are
// errors). YAML aliases are refused: a small document with nested aliases
// can otherwise expand to an enormous one.
func decodeSettings(b []byte) (Settings, error) {
	var s Settings
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return s, fmt.Errorf("user-data:%s: %w", SettingsPath, err)
	}
	if hasAlias(&doc, 0) {
		return s, fmt.Errorf("user-data:%s: YAML aliases (or nesting over %d deep) are not allowed", SettingsPath, maxYAMLDepth)
	}
	if err := config.Decode("user-data:"+SettingsPath, b, &s); err != nil {
		return Settings{}, err
	}
	if len(s.Proxies) == 0 {
		s.Proxies = nil // "proxies: []" means none, as an absent key does
	}
	if err := s.Validate(); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// maxYAMLDepth bounds the nesting of the settings document.
const maxYAMLDepth = 16

func hasAlias(n *yaml.Node, depth int) bool {
	if n.Kind == yaml.AliasNode || depth > maxYAMLDepth {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c, depth+1) {
			return true
		}
	}
	return false
}

// errEmptyProxyGroup is a proxy group with no proxy in it.
var errEmptyProxyGroup = errors.New("empty proxy group")

// ValidateProxies checks an ordered list of proxy groups: each proxy an
// http://host:port URL, no empty group, bounded sizes. DIRECT is implied at
// the end and must not be listed.
func ValidateProxies(groups [][]string) error {
	if len(groups) > maxProxyGroups {
		return fmt.Errorf("%d groups, limit %d", len(groups), maxProxyGroups)
	}
	for i, g := range groups {
		if len(g) == 0 {
			return fmt.Errorf("group %d: %w", i+1, errEmptyProxyGroup)
		}
		if len(g) > maxProxiesInGroup {
			return fmt.Errorf("group %d: %d proxies, limit %d", i+1, len(g), maxProxiesInGroup)
		}
		for _, p := range g {
			if err := validateProxy(p); err != nil {
				return fmt.Errorf("group %d: %w", i+1, err)
			}
		}
	}
	return nil
}

var proxyHostPortRE = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$`)

func validateProxy(p string) error {
	hp, ok := strings.CutPrefix(p, "http://")
	if !ok || !proxyHostPortRE.MatchString(hp) {
		return fmt.Errorf("proxy %.100q is not http://host:port", p)
	}
	port, _ := strconv.Atoi(hp[strings.LastIndexByte(hp, ':')+1:])
	if port < 1 || port > 65535 {
		return fmt.Errorf("proxy %.100q: port out of range", p)
	}
	return nil
}
