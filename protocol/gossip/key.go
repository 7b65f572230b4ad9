package gossip

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of a site's pool key: AES-256, as memberlist's
// SecretKey.
const KeySize = 32

// Key files in the agent's state directory.
const (
	// KeyFile holds the pool key.
	KeyFile = "gossip.key"
	// SigningKeyFile holds the seed of the agent's Ed25519 signing key.
	SigningKeyFile = "gossip-sign.key"
)

// SiteKeys are an agent's gossip secrets.
type SiteKeys struct {
	// Pool encrypts and authenticates the pool's traffic; every VM of the
	// site gets it in its user-data.
	Pool []byte
	// Signer signs squid lists and retirement orders; it never leaves the
	// agent. VMs get its public half, AgentKey.
	Signer ed25519.PrivateKey
}

// AgentKey is the public key VMs check squid lists and orders with.
func (k SiteKeys) AgentKey() ed25519.PublicKey {
	return k.Signer.Public().(ed25519.PublicKey)
}

// LoadOrCreateSiteKeys loads the agent's gossip keys from stateDir
// (KeyFile and SigningKeyFile), creating them with mode 0600 on first use.
func LoadOrCreateSiteKeys(stateDir string) (SiteKeys, error) {
	pool, err := LoadOrCreateKey(filepath.Join(stateDir, KeyFile))
	if err != nil {
		return SiteKeys{}, err
	}
	seed, err := LoadOrCreateKey(filepath.Join(stateDir, SigningKeyFile))
	if err != nil {
		return SiteKeys{}, err
	}
	return SiteKeys{Pool: pool, Signer: ed25519.NewKeyFromSeed(seed)}, nil
}

// LoadOrCreateKey reads a KeySize-byte secret (raw) from path, creating a
// random one with mode 0600 if the file does not exist. A key file that
// group or others can read is refused.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("create gossip key %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKey(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("create gossip key %s: %w", path, err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("write gossip key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write gossip key %s: %w", path, err)
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read gossip key: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("gossip key %s has mode %#o: group or others can read it, want 0600", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read gossip key: %w", err)
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("gossip key %s is %d bytes, want %d", path, len(b), KeySize)
	}
	return b, nil
}

// EncodeKey renders a pool key or an agent (public) key for user-data
// (standard base64).
func EncodeKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// ParseKey reads a key rendered by EncodeKey. An agent key converts as
// ed25519.PublicKey(key).
func ParseKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("gossip key is %d bytes, want %d", len(b), KeySize)
	}
	return b, nil
}
