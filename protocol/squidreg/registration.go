package squidreg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Kind is the upstream a squid caches for.
type Kind string

// Upstream kinds.
const (
	KindCVMFS    Kind = "cvmfs"
	KindFrontier Kind = "frontier"
)

// Kinds lists every known upstream kind.
var Kinds = []Kind{KindCVMFS, KindFrontier}

// ParseKind checks that s names a known upstream kind.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindCVMFS, KindFrontier:
		return k, nil
	}
	return "", fmt.Errorf("unknown squid kind %q (want cvmfs or frontier)", truncate(s, 32))
}

// Access says which clients may be sent to a squid.
type Access string

// Access levels.
const (
	// AccessGlobal: any client.
	AccessGlobal Access = "global"
	// AccessSameDomain: only clients that say they are in the squid's
	// domain (or at its site).
	AccessSameDomain Access = "same-domain"
	// AccessLocalOnly: only clients that say they are at the squid's site.
	AccessLocalOnly Access = "local-only"
)

// ParseAccess checks that s names a known access level.
func ParseAccess(s string) (Access, error) {
	switch a := Access(s); a {
	case AccessGlobal, AccessSameDomain, AccessLocalOnly:
		return a, nil
	}
	return "", fmt.Errorf("unknown squid access level %q (want global, same-domain or local-only)", truncate(s, 32))
}

// DefaultMaxLoad is the load, in KB/s sent to clients, at which a squid
// counts as fully loaded when its registration names no max_load (shoal's
// default: about 1 Gbit/s).
const DefaultMaxLoad = 122000

// Limits on registrations.
const (
	// MaxRegistrationSize bounds one encoded registration.
	MaxRegistrationSize = 16 << 10
	maxNameLen          = 253
	maxLabelLen         = 128
)

// Registration is what the hub is told about one squid, either from a site
// agent's configuration or advertised by the cache host itself (see
// Advertiser). It is also the JSON body of POST /api/v1/squids.
type Registration struct {
	// Name identifies the squid in the registry; default "host:port".
	// A later registration with the same name replaces the earlier one.
	Name string `json:"name,omitempty" yaml:"name"`
	// Host is the address clients use: an IP address or a DNS name.
	Host string `json:"host" yaml:"host"`
	// Port is the squid's HTTP proxy port.
	Port int `json:"port" yaml:"port"`
	// Kinds are the upstreams this squid caches for.
	Kinds []Kind `json:"kinds" yaml:"kinds"`
	// Access says which clients may use it.
	Access Access `json:"access" yaml:"access"`
	// Site is the Canopy site the squid belongs to (required for local-only).
	Site string `json:"site,omitempty" yaml:"site"`
	// Domain is the network domain the squid serves (required for
	// same-domain), e.g. "example.org".
	Domain string `json:"domain,omitempty" yaml:"domain"`
	// Load is the advertised load in KB/s sent to clients; used when the hub
	// cannot read the squid's cache manager.
	Load float64 `json:"load,omitempty" yaml:"load"`
	// MaxLoad is the load at which the squid is full; 0 means DefaultMaxLoad.
	MaxLoad float64 `json:"max_load,omitempty" yaml:"max_load"`
	// CacheManager says the hub may read the squid's cache manager
	// (http://host:port/squid-internal-mgr/counters) to measure its load.
	CacheManager bool `json:"cache_manager,omitempty" yaml:"cache_manager"`
	// GeoIP is the address to locate the squid by when Host is a DNS name
	// (or a private address the GeoIP database does not know).
	GeoIP string `json:"geoip,omitempty" yaml:"geoip"`
	// Latitude and Longitude, when both set, place the squid without GeoIP.
	Latitude  *float64 `json:"latitude,omitempty" yaml:"latitude"`
	Longitude *float64 `json:"longitude,omitempty" yaml:"longitude"`
}

// Address is host:port, with IPv6 hosts in brackets.
func (r Registration) Address() string {
	return hostPort(r.Host, r.Port)
}

func hostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// Normalize validates r and fills defaults (Name, MaxLoad), sorting and
// de-duplicating Kinds. The error names the field that is wrong.
func (r Registration) Normalize() (Registration, error) {
	if r.Host == "" {
		return r, errors.New("squid registration: host is required")
	}
	if err := validHost(r.Host); err != nil {
		return r, fmt.Errorf("squid registration: host: %w", err)
	}
	if r.Port < 1 || r.Port > 65535 {
		return r, fmt.Errorf("squid registration %s: port %d out of range 1-65535", r.Host, r.Port)
	}
	if r.Name == "" {
		r.Name = r.Address()
	}
	if err := validName(r.Name); err != nil {
		return r, fmt.Errorf("squid registration: name: %w", err)
	}
	fail := func(format string, args ...any) (Registration, error) {
		return r, fmt.Errorf("squid registration %s: %s", r.Name, fmt.Sprintf(format, args...))
	}
	if len(r.Kinds) == 0 {
		return fail("kinds is required (cvmfs, frontier)")
	}
	if len(r.Kinds) > len(Kinds)*4 {
		return fail("%d kinds listed", len(r.Kinds))
	}
	kinds := make([]Kind, 0, len(r.Kinds))
	for _, k := range r.Kinds {
		if _, err := ParseKind(string(k)); err != nil {
			return fail("%v", err)
		}
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	r.Kinds = kinds
	if _, err := ParseAccess(string(r.Access)); err != nil {
		return fail("%v", err)
	}
	for field, v := range map[string]string{"site": r.Site, "domain": r.Domain} {
		if err := ValidLabel(v); err != nil {
			return fail("%s: %v", field, err)
		}
	}
	r.Domain = strings.ToLower(r.Domain)
	if r.Access == AccessLocalOnly && r.Site == "" {
		return fail("access local-only needs a site")
	}
	if r.Access == AccessSameDomain && r.Domain == "" {
		return fail("access same-domain needs a domain")
	}
	if !finite(r.Load) || r.Load < 0 {
		return fail("load %v must be a finite number >= 0", r.Load)
	}
	if !finite(r.MaxLoad) || r.MaxLoad < 0 {
		return fail("max_load %v must be a finite number >= 0", r.MaxLoad)
	}
	if r.MaxLoad == 0 {
		r.MaxLoad = DefaultMaxLoad
	}
	if r.GeoIP != "" {
		if _, err := netip.ParseAddr(r.GeoIP); err != nil {
			return fail("geoip %q is not an IP address", truncate(r.GeoIP, 64))
		}
	}
	if (r.Latitude == nil) != (r.Longitude == nil) {
		return fail("latitude and longitude go together")
	}
	if r.Latitude != nil {
		if !finite(*r.Latitude) || *r.Latitude < -90 || *r.Latitude > 90 {
			return fail("latitude %v out of range -90..90", *r.Latitude)
		}
		if !finite(*r.Longitude) || *r.Longitude < -180 || *r.Longitude > 180 {
			return fail("longitude %v out of range -180..180", *r.Longitude)
		}
	}
	return r, nil
}

// DecodeRegistration reads one JSON registration (at most
// MaxRegistrationSize bytes) and normalizes it. Unknown fields are ignored
// so that newer advertisers can talk to older hubs.
func DecodeRegistration(b []byte) (Registration, error) {
	var r Registration
	if len(b) > MaxRegistrationSize {
		return r, fmt.Errorf("squid registration is %d bytes, limit %d", len(b), MaxRegistrationSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return Registration{}, fmt.Errorf("squid registration: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Registration{}, errors.New("squid registration: trailing data after the JSON object")
	}
	return r.Normalize()
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// validHost accepts an IP address (no zone) or an RFC 1123 host name, so a
// host can be written into a PAC file or a CVMFS configuration as it is.
func validHost(h string) error {
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("%q: zoned addresses are not usable by clients", truncate(h, 64))
		}
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host name is %d characters, limit 253", len(h))
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is neither an IP address nor a valid host name", truncate(h, 64))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("%q is neither an IP address nor a valid host name", truncate(h, 64))
			}
		}
	}
	return nil
}

// validName accepts names made of letters, digits and . _ : - [ ].
func validName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("must be 1-%d characters", maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return fmt.Errorf("%q has a character outside [A-Za-z0-9._:-[]]", truncate(s, 64))
		}
	}
	return nil
}

// ValidLabel accepts empty strings and site/domain labels made of letters,
// digits and . _ -.
func ValidLabel(s string) error {
	if len(s) > maxLabelLen {
		return fmt.Errorf("is %d characters, limit %d", len(s), maxLabelLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q has a character outside [A-Za-z0-9._-]", truncate(s, 64))
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == ':' || c == '[' || c == ']'
}

// truncate shortens untrusted text quoted in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
