// Package idtoken mints HTCondor IDTOKENs in Go, so that a site agent can
// give every worker VM its own short-lived token without running HTCondor
// tools and without the pool signing key ever leaving the agent.
//
// An IDTOKEN is a JWT (compact form) signed with HMAC-SHA256:
//
//	header  {"alg":"HS256","kid":KEY_ID}
//	payload {"sub":IDENTITY,"iss":TRUST_DOMAIN,"iat":...,"exp":...,"jti":32 hex digits,
//	         "scope":"condor:/READ condor:/ADVERTISE_STARTD ..."}
//
// The HMAC key is derived from the signing key file as HTCondor does
// (src/condor_utils/store_cred.cpp getTokenSigningKey and
// src/condor_io/condor_auth_passwd.cpp generate_token), each step checked
// against HTCondor 24.0.23's live collector and condor_token_create (see
// the integration test):
//
//  1. the file's bytes are XORed with 0xDE 0xAD 0xBE 0xEF repeated
//     (HTCondor's "simple scramble");
//  2. for the key id POOL (the file SEC_TOKEN_POOL_SIGNING_KEY_FILE) the
//     unscrambled bytes are doubled (key || key), for backward
//     compatibility with pool passwords; other key ids (files named
//     SEC_PASSWORD_DIRECTORY/<key id>) are used once. The file is used
//     whole, embedded NUL bytes included (HTCondor truncates at the first
//     NUL only with SEC_TOKEN_POOL_SIGNING_KEY_IS_PASSWORD = True, which
//     this package does not support);
//  3. HKDF-SHA256 with salt "htcondor" and info "master jwt" stretches
//     that to the 32-byte HMAC key.
//
// The collector checks the signature, exp (a token past it is refused),
// that iss and jti are present, and applies the scope's condor:/ entries
// as authorization limits: a token scoped to ADVERTISE_STARTD cannot
// submit jobs or administer anything, whatever its identity may do. The
// client side (the startd) uses a token only if its iss is the trust
// domain the collector announces and its kid names a key the collector
// has.
//
// Why mint in Go rather than run condor_token_create: the agent host then
// needs no HTCondor installation and no HTCondor configuration pointing
// at the key; minting is a function call (benchmark: a few microseconds)
// rather than a process start per VM and per renewal; and the token's
// claims (jti, lifetime, scope) are exactly what the agent decides, with
// errors the agent can name.
package idtoken

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// PoolKeyID is the key id of the pool signing key
// (SEC_TOKEN_POOL_SIGNING_KEY_FILE on the central manager).
const PoolKeyID = "POOL"

// scramble is HTCondor's "simple scramble" of password files.
var scramble = [4]byte{0xDE, 0xAD, 0xBE, 0xEF}

// HKDF parameters HTCondor derives the JWT key with.
const (
	hkdfSalt = "htcondor"
	hkdfInfo = "master jwt"
	keyLen   = 32
)

// Limits on what a key file and a token may be.
const (
	maxKeyFile = 64 << 10
	maxToken   = 8 << 10
)

var (
	// keyIDRE is what a key id may be: a file name in the central
	// manager's SEC_PASSWORD_DIRECTORY.
	keyIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	// trustDomainRE is what TRUST_DOMAIN may be (HTCondor refuses spaces
	// and commas; this is stricter: it ends up in the VMs' config too).
	trustDomainRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$`)
	// identityRE is user@domain, as HTCondor's ALLOW lists name it.
	identityRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}@[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}$`)
	// authzRE is an authorization level (READ, ADVERTISE_STARTD, ...).
	authzRE = regexp.MustCompile(`^[A-Z][A-Z_]{0,63}$`)
)

// Key is a signing key, ready to sign and verify tokens. It never prints
// its secret.
type Key struct {
	id     string
	jwtKey []byte
}

// ID is the key id tokens carry in their kid header.
func (k *Key) ID() string { return k.id }

// String names the key without its secret.
func (k *Key) String() string { return "IDTOKEN signing key " + k.id }

// LoadKey reads a signing key file as the central manager holds it
// (passwords.d/POOL for the key id POOL, passwords.d/<id> otherwise). The
// file must be readable by its owner only, as HTCondor requires of its
// own copy: a key others can read is refused, naming the file.
func LoadKey(path, keyID string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("IDTOKEN signing key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("IDTOKEN signing key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("IDTOKEN signing key %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("IDTOKEN signing key %s has mode %04o: others than its owner can read it; chmod 600 it", path, perm)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("IDTOKEN signing key %s: %w", path, err)
	}
	k, err := NewKey(raw, keyID)
	if err != nil {
		return nil, fmt.Errorf("IDTOKEN signing key %s: %w", path, err)
	}
	return k, nil
}

// NewKey derives a signing key from a key file's content (scrambled, as
// HTCondor writes it) for key id keyID.
func NewKey(file []byte, keyID string) (*Key, error) {
	if err := ValidKeyID(keyID); err != nil {
		return nil, err
	}
	switch {
	case len(file) == 0:
		return nil, errors.New("the key file is empty")
	case len(file) > maxKeyFile:
		return nil, fmt.Errorf("the key file is over %d bytes", maxKeyFile)
	}
	secret := make([]byte, len(file), 2*len(file))
	for i, b := range file {
		secret[i] = b ^ scramble[i%len(scramble)]
	}
	if keyID == PoolKeyID {
		secret = append(secret, secret...)
	}
	jwtKey, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), hkdfInfo, keyLen)
	clear(secret)
	if err != nil {
		return nil, fmt.Errorf("derive the JWT key: %w", err)
	}
	return &Key{id: keyID, jwtKey: jwtKey}, nil
}

// header is the JOSE header; field order as HTCondor writes it.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// Claims are a token's payload, as HTCondor reads it.
type Claims struct {
	// Subject is the identity the token authenticates as (user@domain).
	Subject string `json:"sub"`
	// Issuer is the pool's TRUST_DOMAIN.
	Issuer string `json:"iss"`
	// IssuedAt and Expires are Unix seconds; Expires 0 is no expiry.
	IssuedAt int64 `json:"iat"`
	Expires  int64 `json:"exp,omitempty"`
	// ID is the token's unique id (jti): 32 hex digits.
	ID string `json:"jti"`
	// Scope holds the authorization limits, "condor:/READ condor:/..."
	// (space separated); empty: none beyond the identity's own.
	Scope string `json:"scope,omitempty"`
}

// Authz returns the authorization levels of the scope's condor:/ entries.
func (c Claims) Authz() []string {
	var out []string
	for s := range strings.FieldsSeq(c.Scope) {
		if a, ok := strings.CutPrefix(s, "condor:/"); ok {
			out = append(out, a)
		}
	}
	return out
}

// Spec is what a minted token says.
type Spec struct {
	// Identity is user@domain.
	Identity string
	// Authz are the authorization levels the token is limited to
	// (condor_token_create -authz); at least one.
	Authz []string
	// Lifetime is how long the token is valid; it must be positive.
	Lifetime time.Duration
}

// Token is a minted token.
type Token struct {
	// Raw is the compact JWT, as written to a token file.
	Raw string
	// ID is its jti; IssuedAt and Expires its iat and exp.
	ID       string
	IssuedAt time.Time
	Expires  time.Time
}

// Signer mints tokens for one pool (trust domain) with one key.
type Signer struct {
	key    *Key
	issuer string
	// Rand is the jti's randomness; nil means crypto/rand.
	Rand io.Reader
}

// NewSigner returns a signer whose tokens carry trustDomain as their
// issuer: the central manager's TRUST_DOMAIN, which the startd compares
// with what the collector announces before it uses a token.
func NewSigner(key *Key, trustDomain string) (*Signer, error) {
	if key == nil {
		return nil, errors.New("IDTOKEN signer: no key")
	}
	if err := ValidTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	return &Signer{key: key, issuer: trustDomain}, nil
}

// ValidTrustDomain reports whether d can be a pool's TRUST_DOMAIN (a
// token's issuer).
func ValidTrustDomain(d string) error {
	if !trustDomainRE.MatchString(d) {
		return fmt.Errorf("trust domain %.80q: want letters, digits and . : _ - (the pool's TRUST_DOMAIN)", d)
	}
	return nil
}

// ValidKeyID reports whether id can be a signing key id.
func ValidKeyID(id string) error {
	if !keyIDRE.MatchString(id) {
		return fmt.Errorf("key id %.80q: want letters, digits and . _ - (a file name in SEC_PASSWORD_DIRECTORY)", id)
	}
	return nil
}

// Key is the signer's key (to verify what it minted).
func (s *Signer) Key() *Key { return s.key }

// TrustDomain is the issuer the signer's tokens carry.
func (s *Signer) TrustDomain() string { return s.issuer }

// ValidateSpec checks what a token would say, naming what is wrong.
func ValidateSpec(sp Spec) error {
	if !identityRE.MatchString(sp.Identity) {
		return fmt.Errorf("identity %.80q: want user@domain (letters, digits and . _ - before the @)", sp.Identity)
	}
	if len(sp.Authz) == 0 {
		return errors.New("no authorization levels: a token for a worker must be limited (e.g. READ, ADVERTISE_STARTD, ADVERTISE_MASTER)")
	}
	for _, a := range sp.Authz {
		if !authzRE.MatchString(a) {
			return fmt.Errorf("authorization level %.40q: want an HTCondor level such as READ or ADVERTISE_STARTD", a)
		}
	}
	if sp.Lifetime <= 0 {
		return fmt.Errorf("lifetime %s: it must be positive (tokens without expiry are not minted)", sp.Lifetime)
	}
	return nil
}

// Mint signs a token for sp, issued at now.
func (s *Signer) Mint(sp Spec, now time.Time) (Token, error) {
	if err := ValidateSpec(sp); err != nil {
		return Token{}, fmt.Errorf("mint IDTOKEN: %w", err)
	}
	r := s.Rand
	if r == nil {
		r = rand.Reader
	}
	var id [16]byte
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return Token{}, fmt.Errorf("mint IDTOKEN: jti: %w", err)
	}
	iat := now.Unix()
	// exp is whole seconds, rounded up: never shorter than asked.
	exp := iat + int64((sp.Lifetime+time.Second-1)/time.Second)
	authz := slices.Clone(sp.Authz)
	for i, a := range authz {
		authz[i] = "condor:/" + a
	}
	c := Claims{Subject: sp.Identity, Issuer: s.issuer, IssuedAt: iat, Expires: exp, ID: hex.EncodeToString(id[:]),
		Scope: strings.Join(authz, " ")}
	raw, err := s.key.sign(c)
	if err != nil {
		return Token{}, err
	}
	return Token{Raw: raw, ID: c.ID, IssuedAt: time.Unix(iat, 0), Expires: time.Unix(exp, 0)}, nil
}

// sign encodes and signs claims.
func (k *Key) sign(c Claims) (string, error) {
	h, err := json.Marshal(header{Alg: "HS256", Kid: k.id})
	if err != nil {
		return "", fmt.Errorf("mint IDTOKEN: %w", err)
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint IDTOKEN: %w", err)
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	return signed + "." + enc.EncodeToString(k.mac(signed)), nil
}

func (k *Key) mac(signed string) []byte {
	m := hmac.New(sha256.New, k.jwtKey)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// Errors Verify returns (wrapped with details).
var (
	ErrMalformed = errors.New("not an IDTOKEN")
	ErrKeyID     = errors.New("signed with another key id")
	ErrSignature = errors.New("bad signature")
	ErrIssuer    = errors.New("issued for another trust domain")
	ErrExpired   = errors.New("expired")
)

// Verify checks a token as a collector holding this key would: its kid,
// its signature, its issuer (if trustDomain is not empty), that it names
// a subject and a jti, and that it has not expired at now. It returns the
// claims. Errors never include the token.
func (k *Key) Verify(raw, trustDomain string, now time.Time) (Claims, error) {
	var c Claims
	if len(raw) > maxToken {
		return c, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(raw), maxToken)
	}
	parts := strings.Split(strings.TrimSpace(raw), ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("%w: %d parts, want 3", ErrMalformed, len(parts))
	}
	enc := base64.RawURLEncoding
	hb, err1 := enc.DecodeString(parts[0])
	pb, err2 := enc.DecodeString(parts[1])
	sig, err3 := enc.DecodeString(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return c, fmt.Errorf("%w: a part is not base64url", ErrMalformed)
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return c, fmt.Errorf("%w: header is not JSON", ErrMalformed)
	}
	if h.Alg != "HS256" {
		return c, fmt.Errorf("%w: alg %.20q, want HS256", ErrMalformed, h.Alg)
	}
	if h.Kid != k.id {
		return c, fmt.Errorf("%w: kid %.40q, this key is %q", ErrKeyID, h.Kid, k.id)
	}
	if !hmac.Equal(sig, k.mac(parts[0]+"."+parts[1])) {
		return c, ErrSignature
	}
	if err := json.Unmarshal(pb, &c); err != nil {
		return c, fmt.Errorf("%w: payload is not JSON", ErrMalformed)
	}
	if c.Subject == "" || c.ID == "" || c.Issuer == "" {
		return c, fmt.Errorf("%w: sub, jti and iss are required", ErrMalformed)
	}
	if trustDomain != "" && c.Issuer != trustDomain {
		return c, fmt.Errorf("%w: %q, want %q", ErrIssuer, c.Issuer, trustDomain)
	}
	if c.Expires != 0 && now.Unix() > c.Expires {
		return c, fmt.Errorf("%w at %s", ErrExpired, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}
