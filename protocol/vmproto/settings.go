package vmproto

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
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
//
// User-data is readable by every process in the VM (the metadata service
// answers anyone who asks), jobs included, so it carries nothing a job
// could misuse: where the agent is and the certificate authority to
// verify it by, what the VM was booted for, non-secret configuration, and
// a single-use enrollment token. vmagent spends that token at boot, before
// HTCondor starts and so before any job runs, on the agent's enrollment
// endpoint (PathEnroll, over TLS), and receives the VM's secrets there: its
// check-in token, its HTCondor IDTOKEN and the site's gossip key. A job
// that reads the user-data later finds a spent token.
type Settings struct {
	// AgentURL is the site agent's VM endpoint, https://host:port.
	AgentURL string `yaml:"agent_url"`
	// AgentCA is the PEM certificate of the authority that issued the
	// agent's VM endpoint certificate (the hub's CA): vmagent trusts
	// nothing else for AgentURL.
	AgentCA string `yaml:"agent_ca"`
	// EnrollToken is the single-use enrollment token, bound to this
	// server and short-lived (see agent/vmtoken).
	EnrollToken string `yaml:"enroll_token"`
	// CondorHost is the HTCondor central manager (collector) address.
	CondorHost string `yaml:"condor_host"`
	// CondorTrustDomain is the pool's TRUST_DOMAIN, written into the
	// startd's configuration (its IDTOKEN is issued for it). Optional.
	CondorTrustDomain string `yaml:"condor_trust_domain,omitempty"`
	// CondorUIDDomain is UID_DOMAIN for the startd: set it only when the
	// VMs have the submitters' accounts (jobs then run as their owners;
	// otherwise as nobody). Optional.
	CondorUIDDomain string `yaml:"condor_uid_domain,omitempty"`
	// CondorCCBAddress is CCB_ADDRESS for workers behind NAT (usually the
	// collector): the central manager's daemons then reach the startd
	// through a connection the startd opened. Optional.
	CondorCCBAddress string `yaml:"condor_ccb_address,omitempty"`
	// Site, Group and VMType are what the VM was booted for; the startd
	// advertises them and admits only the group's jobs.
	Site   string `yaml:"site"`
	Group  string `yaml:"group"`
	VMType string `yaml:"vm_type"`
	// HS06PerCore is the HS06 rating per core of the VM's flavor, as its
	// site rates it; the startd advertises it (HS06PerCore) so that jobs'
	// Requirements may test it. Zero: not rated, not advertised.
	HS06PerCore float64 `yaml:"hs06_per_core,omitempty"`
	// CheckinEvery is how often the VM reports to its agent.
	CheckinEvery time.Duration `yaml:"checkin_every"`
	// Gluster is a GlusterFS volume to mount read-only. Optional.
	Gluster *GlusterMount `yaml:"gluster"`
	// Proxies are the squid proxies for CVMFS: groups in order of
	// preference, proxies in a group load-balanced. DIRECT always follows.
	Proxies [][]string `yaml:"proxies"`
	// CVMFSProbeURL is fetched through each squid candidate to check it
	// (e.g. a stratum 1's /cvmfs/REPO/.cvmfspublished); empty: candidates
	// are used in the agent's order unchecked.
	CVMFSProbeURL string `yaml:"cvmfs_probe_url"`
	// GossipJoin is the site agent's gossip pool address and
	// GossipAgentKey the agent's public signing key (base64). The pool's
	// encryption key is a secret: it comes with the enrollment. Empty
	// GossipJoin: no gossip, check-ins only.
	GossipJoin     string `yaml:"gossip_join"`
	GossipAgentKey string `yaml:"gossip_agent_key"`
	// KeepAlive and MaxLifetime are the jobs' own requests (+VMKeepAlive,
	// +VMMaxLifetime) the VM was booted for; the startd advertises them
	// (CanopyKeepAlive, CanopyMaxLifetime, in seconds). The hub's planner
	// acts on them; zero means none. Optional.
	KeepAlive   time.Duration `yaml:"keep_alive,omitempty"`
	MaxLifetime time.Duration `yaml:"max_lifetime,omitempty"`
}

// retiredSettings are keys older agents put into user-data, each a secret
// that now travels over the enrollment instead.
var retiredSettings = []string{"token", "condor_idtoken", "pool_signing_key", "gossip_key"}

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
	// domainRE is what TRUST_DOMAIN and UID_DOMAIN may look like.
	domainRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$`)
)

// MaxHS06PerCore bounds Settings.HS06PerCore: far above any CPU's rating.
const MaxHS06PerCore = 10000

// Limits on settings values.
const (
	maxToken          = 4 << 10
	maxIDToken        = 8 << 10
	maxAgentCA        = 16 << 10
	maxProxyGroups    = 16
	maxProxiesInGroup = 16
)

// ValidToken reports whether tok can be an agent token (check-in or
// enrollment): non-empty, at most 4096 bytes of letters, digits and
// . _ ~ + / = -.
func ValidToken(tok string) error {
	if tok == "" || len(tok) > maxToken || !tokenRE.MatchString(tok) {
		return errors.New("not a token (letters, digits and . _ ~ + / = -, 1 to 4096 bytes)")
	}
	return nil
}

// ValidIDToken reports whether tok can be an HTCondor IDTOKEN: a compact
// JWT of at most 8192 bytes (it is written to a token file as one line).
func ValidIDToken(tok string) error {
	if len(tok) > maxIDToken || !idTokenRE.MatchString(tok) {
		return fmt.Errorf("not an IDTOKEN (a JWT of at most %d bytes)", maxIDToken)
	}
	return nil
}

// ParseAgentCA reads the PEM certificates of AgentCA.
func ParseAgentCA(pemText string) ([]*x509.Certificate, error) {
	if len(pemText) > maxAgentCA {
		return nil, fmt.Errorf("agent_ca is over %d bytes", maxAgentCA)
	}
	var certs []*x509.Certificate
	rest := []byte(pemText)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("agent_ca holds a %q block; want CERTIFICATE blocks only", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("agent_ca: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("agent_ca holds no PEM certificate")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("agent_ca has text after its certificates")
	}
	return certs, nil
}

// Validate checks that the settings can drive a VM, and that every value
// that ends up in a configuration file is well formed.
func (s Settings) Validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"agent_url", s.AgentURL}, {"agent_ca", s.AgentCA}, {"enroll_token", s.EnrollToken},
		{"condor_host", s.CondorHost}, {"site", s.Site}, {"group", s.Group}, {"vm_type", s.VMType}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("vmagent settings lack %s", strings.Join(missing, ", "))
	}
	u, err := url.Parse(s.AgentURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return fmt.Errorf("vmagent settings: agent_url %.100q is not an https://host:port URL (the VM endpoint is TLS only)", s.AgentURL)
	}
	if _, err := ParseAgentCA(s.AgentCA); err != nil {
		return fmt.Errorf("vmagent settings: %w", err)
	}
	if err := ValidToken(s.EnrollToken); err != nil {
		return fmt.Errorf("vmagent settings: enroll_token: %w", err)
	}
	if !hostRE.MatchString(s.CondorHost) {
		return fmt.Errorf("vmagent settings: condor_host %.100q is not a host[:port]", s.CondorHost)
	}
	for _, f := range []struct{ name, v string }{{"condor_trust_domain", s.CondorTrustDomain}, {"condor_uid_domain", s.CondorUIDDomain}} {
		if f.v != "" && !domainRE.MatchString(f.v) {
			return fmt.Errorf("vmagent settings: %s %.100q must be letters, digits and . : _ - (at most 253)", f.name, f.v)
		}
	}
	if s.CondorCCBAddress != "" && !hostRE.MatchString(s.CondorCCBAddress) {
		return fmt.Errorf("vmagent settings: condor_ccb_address %.100q is not a host[:port]", s.CondorCCBAddress)
	}
	for _, f := range []struct{ name, v string }{{"site", s.Site}, {"group", s.Group}, {"vm_type", s.VMType}} {
		if !nameRE.MatchString(f.v) {
			return fmt.Errorf("vmagent settings: %s %.100q must be letters, digits and . _ @ + - (at most 128)", f.name, f.v)
		}
	}
	if s.CheckinEvery < 0 {
		return fmt.Errorf("vmagent settings: checkin_every %s is negative", s.CheckinEvery)
	}
	if s.KeepAlive < 0 || s.MaxLifetime < 0 {
		return fmt.Errorf("vmagent settings: keep_alive %s or max_lifetime %s is negative", s.KeepAlive, s.MaxLifetime)
	}
	if s.HS06PerCore != 0 && !(s.HS06PerCore > 0 && s.HS06PerCore <= MaxHS06PerCore) {
		return fmt.Errorf("vmagent settings: hs06_per_core %v is not a rating above 0 and at most %d", s.HS06PerCore, MaxHS06PerCore)
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
	if k := retiredKey(&doc); k != "" {
		return s, fmt.Errorf("user-data:%s: key %s came from an older site agent: secrets no longer travel in user-data "+
			"(vmagent enrolls with enroll_token over TLS); upgrade the site agent", SettingsPath, k)
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

// retiredKey returns the first top-level key of the settings document that
// names a secret older agents put into user-data, or "".
func retiredKey(doc *yaml.Node) string {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return ""
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if slices.Contains(retiredSettings, m.Content[i].Value) {
			return m.Content[i].Value
		}
	}
	return ""
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
