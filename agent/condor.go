package agent

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/canopy-grid/canopy/agent/idtoken"
	"github.com/canopy-grid/canopy/protocol/vmproto"
)

// CondorConfig is the agent config's condor: section: how the agent mints
// each VM's HTCondor IDTOKEN, and the HTCondor settings every VM's startd
// configuration gets.
//
// The pool signing key (or a key of its own, see KeyID) stays on the
// agent host: the agent mints each VM a token of its own, limited to
// Authz, valid for TokenLifetime, sends it over the VM's TLS enrollment,
// and renews it through check-ins. No VM ever holds the key.
type CondorConfig struct {
	// TrustDomain is the central manager's TRUST_DOMAIN: the tokens'
	// issuer, and the VMs' TRUST_DOMAIN. Required with SigningKeyFile.
	TrustDomain string `yaml:"trust_domain"`
	// SigningKeyFile is a copy of the central manager's signing key file
	// for KeyID (passwords.d/POOL, or passwords.d/<key_id>), mode 0600.
	// Empty: VMs get no HTCondor token (a pool without IDTOKENS, or the
	// demo's VMs, which run no HTCondor).
	SigningKeyFile string `yaml:"signing_key_file"`
	// KeyID names the key (the tokens' kid); default POOL. A key of its
	// own (a file of random bytes named <id> in the central manager's
	// SEC_PASSWORD_DIRECTORY, owned by the pool's daemons, mode 0600)
	// lets the workers' tokens be revoked all at once by removing it,
	// without touching the pool key.
	KeyID string `yaml:"key_id"`
	// Identity is what the tokens authenticate as; default
	// canopy-worker@<trust_domain>. The central manager must let it
	// advertise (deploy/htcondor/README.md: ALLOW_ADVERTISE_STARTD and
	// ALLOW_ADVERTISE_MASTER).
	Identity string `yaml:"identity"`
	// TokenLifetime is how long a VM's token is valid (default 24h);
	// check-ins renew it when a third is left.
	TokenLifetime time.Duration `yaml:"token_lifetime"`
	// Authz are the authorization levels tokens are limited to; default
	// ADVERTISE_STARTD and ADVERTISE_MASTER, the minimum a worker needs
	// (measured on a live HTCondor 24 pool: the startd and master send
	// only UPDATE_STARTD_AD and UPDATE_MASTER_AD with their token; claims
	// and jobs use the schedd's match sessions).
	Authz []string `yaml:"authz"`
	// UIDDomain is the VMs' UID_DOMAIN: set it only when the VMs have the
	// submitters' accounts (jobs then run as their owners). Optional.
	UIDDomain string `yaml:"uid_domain"`
	// CCBAddress is the VMs' CCB_ADDRESS, for workers behind NAT (or a
	// firewall) that the central manager cannot reach: usually the
	// collector, host:port. Optional.
	CCBAddress string `yaml:"ccb_address"`
}

// DefaultWorkerAuthz are the authorizations a worker's token is limited to
// by default.
var DefaultWorkerAuthz = []string{"ADVERTISE_STARTD", "ADVERTISE_MASTER"}

// Defaults of the condor: section.
const (
	defaultTokenLifetime = 24 * time.Hour
	defaultWorkerUser    = "canopy-worker"
)

var condorAddrRE = regexp.MustCompile(`^[A-Za-z0-9.:\[\]_-]+$`)

func (c CondorConfig) withDefaults() CondorConfig {
	if c.KeyID == "" {
		c.KeyID = idtoken.PoolKeyID
	}
	if c.Identity == "" && c.TrustDomain != "" {
		c.Identity = defaultWorkerUser + "@" + c.TrustDomain
	}
	if c.TokenLifetime == 0 {
		c.TokenLifetime = defaultTokenLifetime
	}
	if len(c.Authz) == 0 {
		c.Authz = slices.Clone(DefaultWorkerAuthz)
	}
	return c
}

// validate checks the section (with defaults applied by the caller's
// withDefaults or not); errors name the key.
func (c CondorConfig) validate(checkinEvery time.Duration) error {
	d := c.withDefaults()
	if c.TokenLifetime < 0 {
		return fmt.Errorf("token_lifetime is %s: it must be positive (or absent for %s)", c.TokenLifetime, defaultTokenLifetime)
	}
	if d.TokenLifetime < 9*checkinEvery {
		return fmt.Errorf("token_lifetime (%s) must be at least 9 × checkin_every (%s): tokens are renewed at a check-in in their last third",
			d.TokenLifetime, checkinEvery)
	}
	if c.SigningKeyFile != "" && c.TrustDomain == "" {
		return errors.New("trust_domain is required with signing_key_file (the central manager's TRUST_DOMAIN)")
	}
	if c.TrustDomain != "" {
		if err := idtoken.ValidTrustDomain(c.TrustDomain); err != nil {
			return fmt.Errorf("trust_domain: %w", err)
		}
	}
	if c.SigningKeyFile != "" {
		if err := idtoken.ValidateSpec(idtoken.Spec{Identity: d.Identity, Authz: d.Authz, Lifetime: d.TokenLifetime}); err != nil {
			return err
		}
		if err := idtoken.ValidKeyID(d.KeyID); err != nil {
			return fmt.Errorf("key_id: %w", err)
		}
	}
	for _, f := range []struct{ name, v string }{{"uid_domain", c.UIDDomain}, {"ccb_address", c.CCBAddress}} {
		if f.v != "" && (!condorAddrRE.MatchString(f.v) || len(f.v) > 253) {
			return fmt.Errorf("%s %.80q: want a host name, or host:port for ccb_address", f.name, f.v)
		}
	}
	return nil
}

// condorMinter mints VMs' HTCondor tokens.
type condorMinter struct {
	signer *idtoken.Signer
	spec   idtoken.Spec
}

// signer loads the signing key and returns a minter; nil without
// signing_key_file.
func (c CondorConfig) signer() (*condorMinter, error) {
	if c.SigningKeyFile == "" {
		return nil, nil
	}
	d := c.withDefaults()
	key, err := idtoken.LoadKey(d.SigningKeyFile, d.KeyID)
	if err != nil {
		return nil, fmt.Errorf("signing_key_file: %w", err)
	}
	s, err := idtoken.NewSigner(key, d.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust_domain: %w", err)
	}
	return &condorMinter{signer: s, spec: idtoken.Spec{Identity: d.Identity, Authz: slices.Clone(d.Authz), Lifetime: d.TokenLifetime}}, nil
}

// mint returns a new token for a VM.
func (m *condorMinter) mint(now time.Time) (*vmproto.CondorToken, idtoken.Token, error) {
	tok, err := m.signer.Mint(m.spec, now)
	if err != nil {
		return nil, tok, err
	}
	return &vmproto.CondorToken{Token: tok.Raw, Expires: tok.Expires.UTC()}, tok, nil
}

// due reports whether a VM whose token expires at exp (zero: it holds
// none) should get a new one now: within the last third of the lifetime.
func (m *condorMinter) due(exp, now time.Time) bool {
	return exp.IsZero() || exp.Sub(now) < m.spec.Lifetime/3
}

// retryAfter is how long a VM that still reports an expiring token after
// it was sent a new one waits for another: a minute, or a tenth of the
// lifetime if that is shorter (the renewal window is a third).
func (m *condorMinter) retryAfter() time.Duration {
	return min(time.Minute, m.spec.Lifetime/10)
}

// describe is the minter's settings for the start-up log (no secret).
func (m *condorMinter) describe() string {
	return fmt.Sprintf("identity %s, trust domain %s, authz %s, lifetime %s", m.spec.Identity, m.signer.TrustDomain(),
		strings.Join(m.spec.Authz, ","), m.spec.Lifetime)
}
