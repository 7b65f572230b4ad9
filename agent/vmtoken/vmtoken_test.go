package vmtoken

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	testKey  = bytes.Repeat([]byte{7}, KeySize)
	otherKey = bytes.Repeat([]byte{8}, KeySize)
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func signer(t testing.TB, key []byte) *Signer {
	t.Helper()
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mint(t testing.TB, s *Signer, c Claims) string {
	t.Helper()
	tok, err := s.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// resign replaces the claims of tok, keeping its signature.
func resign(t *testing.T, tok string, edit func(*Claims)) string {
	t.Helper()
	p, sig, _ := strings.Cut(tok, ".")
	body, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		t.Fatal(err)
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	edit(&c)
	body, _ = json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(body) + "." + sig
}

func TestVerify(t *testing.T) {
	s := signer(t, testKey)
	good := Claims{Site: "east", Server: "vm-1", Group: "atlas", Expires: t0.Add(time.Hour), Use: UseCheckin}
	tok := mint(t, s, good)
	legacy := good
	legacy.Use = ""
	enroll := good
	enroll.Use = UseEnroll
	enrollTok := mint(t, s, enroll)
	signedGarbage := "bm90LWpzb24" + "." + base64.RawURLEncoding.EncodeToString(s.mac("bm90LWpzb24"))
	notB64 := "%%%"
	signedNotB64 := notB64 + "." + base64.RawURLEncoding.EncodeToString(s.mac(notB64))
	tests := []struct {
		name         string
		tok          string
		site, server string
		now          time.Time
		want         Reason // "" for accepted
		use          string // "": UseCheckin
	}{
		{"valid", tok, "east", "vm-1", t0, "", ""},
		{"check-in token minted before uses", mint(t, s, legacy), "east", "vm-1", t0, "", ""},
		{"enrollment token for enrollment", enrollTok, "east", "vm-1", t0, "", UseEnroll},
		{"enrollment token for a check-in", enrollTok, "east", "vm-1", t0, ReasonWrongUse, ""},
		{"check-in token for enrollment", tok, "east", "vm-1", t0, ReasonWrongUse, UseEnroll},
		{"use-less token for enrollment", mint(t, s, legacy), "east", "vm-1", t0, ReasonWrongUse, UseEnroll},
		{"use altered", resign(t, enrollTok, func(c *Claims) { c.Use = UseCheckin }), "east", "vm-1", t0, ReasonBadSig, ""},
		{"another site", tok, "west", "vm-1", t0, ReasonWrongSite, ""},
		{"another server", tok, "east", "vm-2", t0, ReasonWrongServer, ""},
		{"expired", tok, "east", "vm-1", t0.Add(time.Hour), ReasonExpired, ""},
		{"long expired", tok, "east", "vm-1", t0.Add(48 * time.Hour), ReasonExpired, ""},
		{"claims altered: group", resign(t, tok, func(c *Claims) { c.Group = "cms" }), "east", "vm-1", t0, ReasonBadSig, ""},
		{"claims altered: expiry", resign(t, tok, func(c *Claims) { c.Expires = c.Expires.Add(time.Hour) }), "east", "vm-1", t0, ReasonBadSig, ""},
		{"signature altered", tok[:len(tok)-2] + "AA", "east", "vm-1", t0, ReasonBadSig, ""},
		{"another key", mint(t, signer(t, otherKey), good), "east", "vm-1", t0, ReasonBadSig, ""},
		{"no signature", strings.Split(tok, ".")[0], "east", "vm-1", t0, ReasonMalformed, ""},
		{"signature not base64", strings.Split(tok, ".")[0] + ".!!", "east", "vm-1", t0, ReasonMalformed, ""},
		{"claims not JSON", signedGarbage, "east", "vm-1", t0, ReasonMalformed, ""},
		{"claims not base64", signedNotB64, "east", "vm-1", t0, ReasonMalformed, ""},
		{"too long", strings.Repeat("a", maxTokenLen+1), "east", "vm-1", t0, ReasonMalformed, ""},
		{"empty", "", "east", "vm-1", t0, ReasonMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			use := tt.use
			if use == "" {
				use = UseCheckin
			}
			c, err := s.Verify(tt.tok, tt.site, tt.server, use, tt.now)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Group != "atlas" || c.Nonce == "" {
					t.Errorf("claims %+v", c)
				}
				return
			}
			var te *Error
			if !errors.As(err, &te) || te.Reason != tt.want {
				t.Fatalf("err %v, want reason %q", err, tt.want)
			}
		})
	}
}

func TestMintNonce(t *testing.T) {
	s := signer(t, testKey)
	c := Claims{Site: "east", Server: "vm-1", Group: "atlas", Expires: t0.Add(time.Hour)}
	a, b := mint(t, s, c), mint(t, s, c)
	if a == b {
		t.Fatal("two tokens for the same claims are equal")
	}
	c.Nonce = "fixed-id"
	got, err := s.Verify(mint(t, s, c), "east", "vm-1", UseCheckin, t0)
	if err != nil || got.Nonce != "fixed-id" {
		t.Fatalf("Verify = %+v, %v", got, err)
	}
	n1, err1 := NewNonce()
	n2, err2 := NewNonce()
	if err1 != nil || err2 != nil || n1 == n2 || len(n1) != 16 {
		t.Fatalf("NewNonce: %q %q %v %v", n1, n2, err1, err2)
	}
}

func TestKeys(t *testing.T) {
	if _, err := NewSigner([]byte("short")); err == nil {
		t.Error("NewSigner accepted a short key")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "vmtoken.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reloaded key differs (%v)", err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "want 32") {
		t.Fatalf("err %v", err)
	}
}

// FuzzVerify: any string is refused with a reason or accepted only for the
// site and server asked about; never a panic.
func FuzzVerify(f *testing.F) {
	s := signer(f, testKey)
	f.Add(mint(f, s, Claims{Site: "east", Server: "vm-1", Group: "atlas", Expires: t0.Add(time.Hour)}))
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.Verify(tok, "east", "vm-1", UseCheckin, t0)
		if err != nil {
			var te *Error
			if !errors.As(err, &te) || te.Reason == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if c.Site != "east" || c.Server != "vm-1" || !t0.Before(c.Expires) {
			t.Fatalf("accepted %+v", c)
		}
	})
}
