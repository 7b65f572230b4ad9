package openstack

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Defaults applied to zero Config fields.
const (
	DefaultMaxConcurrentRequests   = 8
	DefaultRequestTimeout          = 60 * time.Second
	DefaultMaxRetries              = 4
	DefaultMaxRetryWait            = 30 * time.Second
	DefaultCredentialExpiryWarning = 14 * 24 * time.Hour
	DefaultDomain                  = "Default"
)

// Secret is a credential. Its String, GoString and text forms are redacted so
// that a Config can be printed, logged or marshalled without leaking it; use
// Reveal to get the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer with a redacted form.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer with a redacted form.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.String()) }

// MarshalText redacts the secret in YAML, JSON and other text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is one OpenStack cloud (project) as a site admin describes it in the
// agent's config file, under `openstack:`.
//
// Authentication is one of: a clouds.yaml entry (Cloud, optionally
// CloudsFile); a password (Username or UserID, Password, a project); an
// application credential (ApplicationCredentialID, or its name with the
// user, plus ApplicationCredentialSecret). Names are resolved in the user
// and project domains, "Default" when not given.
type Config struct {
	// Cloud names an entry in a clouds.yaml file that holds the
	// authentication settings; Region, when also set, overrides the entry's.
	Cloud string `yaml:"cloud"`
	// CloudsFile is the clouds.yaml to read Cloud from. Empty: the
	// standard search ($OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
	// ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml).
	CloudsFile string `yaml:"clouds_file"`

	// AuthURL is Keystone's URL, e.g. https://keystone.example.org:5000/v3.
	AuthURL string `yaml:"auth_url"`
	// Region selects the catalog's endpoints; empty takes the first one.
	Region string `yaml:"region"`
	// Interface is the endpoint interface: public (default), internal or admin.
	Interface string `yaml:"interface"`
	// CACertFile is a PEM bundle of the CAs to trust for every endpoint,
	// instead of the system's.
	CACertFile string `yaml:"ca_cert_file"`

	// Username or UserID, with Password, for password authentication;
	// the user is looked up in UserDomainName or UserDomainID.
	Username       string `yaml:"username"`
	UserID         string `yaml:"user_id"`
	Password       Secret `yaml:"password"`
	UserDomainName string `yaml:"user_domain_name"`
	UserDomainID   string `yaml:"user_domain_id"`

	// ProjectName (in ProjectDomainName or ProjectDomainID) or ProjectID
	// is the project the password login is scoped to.
	ProjectName       string `yaml:"project_name"`
	ProjectID         string `yaml:"project_id"`
	ProjectDomainName string `yaml:"project_domain_name"`
	ProjectDomainID   string `yaml:"project_domain_id"`

	// ApplicationCredentialID, or ApplicationCredentialName with the
	// user, and ApplicationCredentialSecret authenticate with an
	// application credential (bound to its project).
	ApplicationCredentialID     string `yaml:"application_credential_id"`
	ApplicationCredentialName   string `yaml:"application_credential_name"`
	ApplicationCredentialSecret Secret `yaml:"application_credential_secret"`

	// KeyName is the Nova keypair injected into every server booted.
	KeyName string `yaml:"key_name"`
	// Network is the Neutron network (name or ID) servers are booted on;
	// "none" boots without a network and "auto" lets Nova pick (both need
	// compute API 2.37). Empty: the Nova default.
	Network string `yaml:"network"`
	// SecurityGroups are the names of the security groups for new servers.
	SecurityGroups []string `yaml:"security_groups"`
	// DefaultImage (name or ID) is booted when a boot names no image.
	DefaultImage string `yaml:"default_image"`
	// DefaultFlavor (name or ID) is booted when a boot names no flavor.
	DefaultFlavor string `yaml:"default_flavor"`
	// AvailabilityZone for new servers; empty lets Nova choose.
	AvailabilityZone string `yaml:"availability_zone"`

	// KeepAlive is how long an idle VM is kept before retirement.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// CoresSoftMax is a soft ceiling on cores Canopy plans to use here
	// (foreign usage is subtracted by the planner); 0 means none.
	CoresSoftMax int `yaml:"cores_soft_max"`
	// CoresMax caps the project's core limit as Canopy sees it; 0 means the quota.
	CoresMax int `yaml:"cores_max"`
	// RAMMaxMiB caps the project's RAM limit as Canopy sees it; 0 means the quota.
	RAMMaxMiB int `yaml:"ram_max_mib"`
	// Enabled, when false, keeps the cloud configured but unused. Default true.
	Enabled *bool `yaml:"enabled"`

	// MaxConcurrentRequests bounds in-flight API calls to this cloud
	// (default 8).
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
	// RequestTimeout bounds each API operation, retries included (default
	// 60s). Image transfers are bounded only by the caller's context.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxRetries is how often a rate-limited, failed-with-5xx or timed-out
	// idempotent call is retried (default 4; -1 disables retries).
	MaxRetries int `yaml:"max_retries"`
	// MaxRetryWait is the longest Retry-After the driver waits for itself
	// (default 30s); a longer one is returned as a rate_limited error.
	MaxRetryWait time.Duration `yaml:"max_retry_wait"`
	// CredentialExpiryWarning is how long before an application
	// credential's expiry the driver starts warning (default 14 days).
	CredentialExpiryWarning time.Duration `yaml:"credential_expiry_warning"`
	// ComputeMicroversion pins the Nova API microversion; empty picks 2.47
	// when the cloud supports it, else 2.1.
	ComputeMicroversion string `yaml:"compute_microversion"`
}

// IsEnabled reports whether the cloud is enabled (the default).
func (c Config) IsEnabled() bool { return c.Enabled == nil || *c.Enabled }

// usesAppCred reports whether the config authenticates with an application credential.
func (c Config) usesAppCred() bool {
	return c.ApplicationCredentialID != "" || c.ApplicationCredentialName != "" || c.ApplicationCredentialSecret != ""
}

// authMethod names the configured authentication method.
func (c Config) authMethod() string {
	switch {
	case c.Cloud != "":
		return "clouds.yaml:" + c.Cloud
	case c.usesAppCred():
		return "application_credential"
	default:
		return "password"
	}
}

// String summarises the config without its secrets.
func (c Config) String() string {
	who := c.Username
	if who == "" {
		who = c.UserID
	}
	if c.ApplicationCredentialID != "" {
		who = "appcred " + c.ApplicationCredentialID
	}
	project := c.ProjectName
	if project == "" {
		project = c.ProjectID
	}
	return fmt.Sprintf("openstack{auth=%s url=%q region=%q user=%q project=%q network=%q enabled=%t}",
		c.authMethod(), c.AuthURL, c.Region, who, project, c.Network, c.IsEnabled())
}

// GoString is String: a config printed with %#v shows no secrets.
func (c Config) GoString() string { return c.String() }

// withDefaults returns c with zero tunables replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.MaxConcurrentRequests == 0 {
		c.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	} else if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.MaxRetryWait == 0 {
		c.MaxRetryWait = DefaultMaxRetryWait
	}
	if c.CredentialExpiryWarning == 0 {
		c.CredentialExpiryWarning = DefaultCredentialExpiryWarning
	}
	if c.Cloud == "" {
		if c.UserDomainName == "" && c.UserDomainID == "" {
			c.UserDomainName = DefaultDomain
		}
		if c.ProjectDomainName == "" && c.ProjectDomainID == "" {
			c.ProjectDomainName = DefaultDomain
		}
	}
	return c
}

// Validate checks the config without contacting the cloud. The error names
// every problem found, by YAML key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("openstack.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	authFields := map[string]bool{
		"auth_url": c.AuthURL != "", "username": c.Username != "", "user_id": c.UserID != "",
		"password": c.Password != "", "project_name": c.ProjectName != "", "project_id": c.ProjectID != "",
		"application_credential_id":     c.ApplicationCredentialID != "",
		"application_credential_name":   c.ApplicationCredentialName != "",
		"application_credential_secret": c.ApplicationCredentialSecret != "",
		"user_domain_name":              c.UserDomainName != "", "user_domain_id": c.UserDomainID != "",
		"project_domain_name": c.ProjectDomainName != "", "project_domain_id": c.ProjectDomainID != "",
	}
	if c.Cloud != "" {
		for _, k := range slices.Sorted(maps.Keys(authFields)) {
			if authFields[k] {
				bad(k, "must not be set together with cloud %q (the clouds.yaml entry holds the credentials)", c.Cloud)
			}
		}
	} else {
		if c.CloudsFile != "" {
			bad("clouds_file", "is set but cloud is not: name the clouds.yaml entry to use")
		}
		switch u, err := url.Parse(c.AuthURL); {
		case c.AuthURL == "":
			bad("auth_url", "is required (or set cloud to use a clouds.yaml entry)")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("auth_url", "%q is not an http(s) URL", c.AuthURL)
		}
		if c.usesAppCred() {
			if c.Password != "" {
				bad("password", "must not be set together with an application credential: use one method")
			}
			if c.ApplicationCredentialSecret == "" {
				bad("application_credential_secret", "is required with an application credential")
			}
			if c.ApplicationCredentialID == "" {
				if c.ApplicationCredentialName == "" {
					bad("application_credential_id", "is required (or application_credential_name with username or user_id)")
				} else if c.Username == "" && c.UserID == "" {
					bad("username", "is required to find application credential %q by name (or use application_credential_id)", c.ApplicationCredentialName)
				}
			}
			if c.ProjectName != "" || c.ProjectID != "" {
				bad("project_name", "must not be set with an application credential: it is bound to its project")
			}
		} else {
			if c.Username == "" && c.UserID == "" {
				bad("username", "is required for password authentication (or user_id, or an application credential)")
			}
			if c.Password == "" {
				bad("password", "is required for password authentication")
			}
			if c.ProjectName == "" && c.ProjectID == "" {
				bad("project_name", "is required (or project_id): servers live in a project")
			}
		}
		if c.UserDomainName != "" && c.UserDomainID != "" {
			bad("user_domain_id", "set user_domain_name or user_domain_id, not both")
		}
		if c.ProjectDomainName != "" && c.ProjectDomainID != "" {
			bad("project_domain_id", "set project_domain_name or project_domain_id, not both")
		}
	}
	switch c.Interface {
	case "", "public", "internal", "admin":
	default:
		bad("interface", "%q is not one of public, internal, admin", c.Interface)
	}
	for i, g := range c.SecurityGroups {
		if strings.TrimSpace(g) == "" {
			bad(fmt.Sprintf("security_groups[%d]", i), "is empty")
		}
	}
	nonNeg := func(key string, v int64) {
		if v < 0 {
			bad(key, "must not be negative, got %d", v)
		}
	}
	nonNeg("keep_alive", int64(c.KeepAlive))
	nonNeg("cores_soft_max", int64(c.CoresSoftMax))
	nonNeg("cores_max", int64(c.CoresMax))
	nonNeg("ram_max_mib", int64(c.RAMMaxMiB))
	nonNeg("max_concurrent_requests", int64(c.MaxConcurrentRequests))
	nonNeg("request_timeout", int64(c.RequestTimeout))
	nonNeg("max_retry_wait", int64(c.MaxRetryWait))
	nonNeg("credential_expiry_warning", int64(c.CredentialExpiryWarning))
	if c.MaxRetries < -1 {
		bad("max_retries", "must be -1 (no retries) or more, got %d", c.MaxRetries)
	}
	if c.MaxConcurrentRequests > 256 {
		bad("max_concurrent_requests", "%d is more than 256", c.MaxConcurrentRequests)
	}
	if c.CoresSoftMax > 0 && c.CoresMax > 0 && c.CoresSoftMax > c.CoresMax {
		bad("cores_soft_max", "%d is above cores_max %d", c.CoresSoftMax, c.CoresMax)
	}
	if c.ComputeMicroversion != "" {
		if _, err := parseMicroversion(c.ComputeMicroversion); err != nil {
			bad("compute_microversion", "%v", err)
		}
	}
	return errors.Join(errs...)
}

// FillFromEnv fills authentication fields that are empty from the standard
// OpenStack environment variables (OS_AUTH_URL, OS_PASSWORD, OS_CLOUD, ...),
// looked up with lookup (os.LookupEnv in production). Nothing is filled when
// the config already names a clouds.yaml entry or an auth URL of its own,
// except the secrets, so that a config file can leave them to the
// environment.
func (c *Config) FillFromEnv(lookup func(string) (string, bool)) {
	get := func(k string) string {
		v, _ := lookup(k)
		return v
	}
	set := func(dst *string, k string) {
		if *dst == "" {
			*dst = get(k)
		}
	}
	setSecret := func(dst *Secret, k string) {
		if *dst == "" {
			*dst = Secret(get(k))
		}
	}
	if c.Cloud == "" && c.AuthURL == "" {
		set(&c.Cloud, "OS_CLOUD")
		if c.Cloud != "" {
			set(&c.CloudsFile, "OS_CLIENT_CONFIG_FILE")
		} else {
			set(&c.AuthURL, "OS_AUTH_URL")
			set(&c.Username, "OS_USERNAME")
			set(&c.UserID, "OS_USER_ID")
			set(&c.UserDomainName, "OS_USER_DOMAIN_NAME")
			set(&c.UserDomainID, "OS_USER_DOMAIN_ID")
			set(&c.ApplicationCredentialID, "OS_APPLICATION_CREDENTIAL_ID")
			set(&c.ApplicationCredentialName, "OS_APPLICATION_CREDENTIAL_NAME")
			if c.ApplicationCredentialID == "" && c.ApplicationCredentialName == "" {
				set(&c.ProjectName, "OS_PROJECT_NAME")
				set(&c.ProjectID, "OS_PROJECT_ID")
				set(&c.ProjectDomainName, "OS_PROJECT_DOMAIN_NAME")
				set(&c.ProjectDomainID, "OS_PROJECT_DOMAIN_ID")
			}
			set(&c.Region, "OS_REGION_NAME")
			set(&c.Interface, "OS_INTERFACE")
			set(&c.CACertFile, "OS_CACERT")
		}
	}
	if c.Cloud == "" {
		if c.usesAppCred() {
			setSecret(&c.ApplicationCredentialSecret, "OS_APPLICATION_CREDENTIAL_SECRET")
		} else {
			setSecret(&c.Password, "OS_PASSWORD")
		}
	}
}

// secrets returns the credentials that must never appear in messages.
func (c Config) secrets() []string {
	var out []string
	for _, s := range []Secret{c.Password, c.ApplicationCredentialSecret} {
		if s != "" {
			out = append(out, string(s))
		}
	}
	return out
}
