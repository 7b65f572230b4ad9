// Package vmtoken mints and checks the tokens that prove a worker VM's
// identity to its site agent. A token is scoped to one site, one server
// (by name) and one group, carries an expiry and a use, and is signed with
// HMAC-SHA256 under a key only the agent holds, so a VM cannot forge or
// widen it.
//
// Two uses: an enrollment token (UseEnroll) travels in the VM's user-data,
// lives an hour and is spent once, at boot (the agent records it and
// refuses it a second time); a check-in token (UseCheckin) is what the
// enrollment gives the VM over TLS, and check-ins renew it.
//
// Format: base64url(JSON claims) "." base64url(HMAC-SHA256(key, first part)).
package vmtoken

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// KeySize is the size of a signing key in bytes.
const KeySize = 32

// maxTokenLen bounds what Verify will look at.
const maxTokenLen = 2048

// Claims are what a token asserts.
type Claims struct {
	Site    string    `json:"site"`
	Server  string    `json:"server"`
	Group   string    `json:"group"`
	Expires time.Time `json:"exp"`
	// Nonce makes every minted token distinct. A VM's enrollment and
	// check-in tokens share it: the agent records it on the server it
	// boots (driver.MetaTokenID), binding both to that server.
	Nonce string `json:"nonce"`
	// Use is UseEnroll or UseCheckin; tokens minted before uses existed
	// have none and are check-in tokens.
	Use string `json:"use,omitempty"`
}

// Token uses (Claims.Use).
const (
	UseEnroll  = "enroll"
	UseCheckin = "checkin"
)

// Reason says why a token was refused.
type Reason string

// Refusal reasons.
const (
	ReasonMalformed   Reason = "malformed token"
	ReasonBadSig      Reason = "bad signature"
	ReasonExpired     Reason = "token expired"
	ReasonWrongSite   Reason = "token for another site"
	ReasonWrongServer Reason = "token for another server"
	ReasonUnknownVM   Reason = "server no longer exists"
	ReasonWrongGroup  Reason = "token for another group"
	ReasonReplayed    Reason = "token minted for another server of that name"
	ReasonWrongUse    Reason = "token for another use"
)

// Error is a refused token.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return string(e.Reason)
	}
	return string(e.Reason) + ": " + e.Detail
}

// Signer mints and verifies tokens under one key.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for key, which must be KeySize bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("vm token key is %d bytes, want %d", len(key), KeySize)
	}
	return &Signer{key: append([]byte(nil), key...)}, nil
}

// LoadOrCreateKey reads a signing key from path, creating a random one
// (mode 0600) if the file does not exist.
func LoadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != KeySize {
			return nil, fmt.Errorf("vm token key %s is %d bytes, want %d", path, len(b), KeySize)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read vm token key: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("create vm token key: %w", err)
	}
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("create vm token key: %w", err)
	}
	return key, nil
}

// NewNonce returns a random token id for Claims.Nonce. A site agent
// records it on the server it boots, so that a token is bound to one
// server, not just to a server name.
func NewNonce() (string, error) {
	n := make([]byte, 12)
	if _, err := rand.Read(n); err != nil {
		return "", fmt.Errorf("vm token nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(n), nil
}

// Mint returns a signed token for c, with a fresh nonce unless c has one.
func (s *Signer) Mint(c Claims) (string, error) {
	if c.Nonce == "" {
		n, err := NewNonce()
		if err != nil {
			return "", fmt.Errorf("mint vm token: %w", err)
		}
		c.Nonce = n
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint vm token: %w", err)
	}
	p := base64.RawURLEncoding.EncodeToString(body)
	return p + "." + base64.RawURLEncoding.EncodeToString(s.mac(p)), nil
}

func (s *Signer) mac(p string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(p))
	return m.Sum(nil)
}

// Verify checks tok's signature and expiry and that it was minted for site,
// server and use, and returns its claims.
func (s *Signer) Verify(tok, site, server, use string, now time.Time) (Claims, error) {
	var c Claims
	if len(tok) > maxTokenLen {
		return c, &Error{Reason: ReasonMalformed, Detail: fmt.Sprintf("%d bytes, limit %d", len(tok), maxTokenLen)}
	}
	p, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return c, &Error{Reason: ReasonMalformed, Detail: "no signature part"}
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return c, &Error{Reason: ReasonMalformed, Detail: "signature is not base64url"}
	}
	if !hmac.Equal(got, s.mac(p)) {
		return c, &Error{Reason: ReasonBadSig}
	}
	body, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return c, &Error{Reason: ReasonMalformed, Detail: "claims are not base64url"}
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, &Error{Reason: ReasonMalformed, Detail: "claims are not JSON"}
	}
	if c.Site != site {
		return c, &Error{Reason: ReasonWrongSite, Detail: fmt.Sprintf("minted for %q, this is %q", c.Site, site)}
	}
	if c.Server != server {
		return c, &Error{Reason: ReasonWrongServer, Detail: fmt.Sprintf("minted for %q, presented by %q", c.Server, server)}
	}
	if got := c.Use; got != use && (got != "" || use != UseCheckin) {
		if got == "" {
			got = UseCheckin
		}
		return c, &Error{Reason: ReasonWrongUse, Detail: fmt.Sprintf("an %s token, presented for %s", got, use)}
	}
	if !now.Before(c.Expires) {
		return c, &Error{Reason: ReasonExpired, Detail: "expired at " + c.Expires.UTC().Format(time.RFC3339)}
	}
	return c, nil
}
