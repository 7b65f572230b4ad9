package idtoken

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

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKnownAnswers: tokens minted by HTCondor's own condor_token_create
// from testdata/signing-key verify under the key this package derives
// from the same file, for the pool key (doubled) and a named key (not),
// and not under the other derivation.
func TestKnownAnswers(t *testing.T) {
	file := readTestdata(t, "signing-key")
	now := time.Unix(1796213200, 0)
	tests := []struct {
		name, token, keyID string
		wantAuthz          []string
		wantExp            bool
	}{
		{"pool key, doubled", "condor_token_create-POOL.jwt", PoolKeyID, []string{"ADVERTISE_STARTD", "ADVERTISE_MASTER"}, true},
		{"named key, used once", "condor_token_create-canopy.jwt", "canopy", []string{"READ"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := strings.TrimSpace(string(readTestdata(t, tc.token)))
			k, err := NewKey(file, tc.keyID)
			if err != nil {
				t.Fatal(err)
			}
			c, err := k.Verify(tok, "kat.example", now)
			if err != nil {
				t.Fatalf("HTCondor's token does not verify under the derived key: %v", err)
			}
			if c.Subject != "canopy-worker@kat.example" || c.Issuer != "kat.example" || len(c.ID) != 32 {
				t.Errorf("claims %+v", c)
			}
			if got := strings.Join(c.Authz(), ","); got != strings.Join(tc.wantAuthz, ",") {
				t.Errorf("authz %s, want %s", got, strings.Join(tc.wantAuthz, ","))
			}
			if (c.Expires != 0) != tc.wantExp {
				t.Errorf("exp %d", c.Expires)
			}
			// The other derivation (doubled for a named key, once for
			// POOL) gives another HMAC key: HTCondor would refuse.
			other := &Key{id: tc.keyID}
			if tc.keyID == PoolKeyID {
				o, _ := NewKey(file, "canopy")
				other.jwtKey = o.jwtKey
			} else {
				o, _ := NewKey(file, PoolKeyID)
				other.jwtKey = o.jwtKey
			}
			if _, err := other.Verify(tok, "", now); !errors.Is(err, ErrSignature) {
				t.Errorf("other derivation: %v, want %v", err, ErrSignature)
			}
		})
	}
}

// TestMintShape: a minted token has HTCondor's header and claims, and
// verifies under its key.
func TestMintShape(t *testing.T) {
	k, err := NewKey(readTestdata(t, "signing-key"), PoolKeyID)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(k, "cm.example.org")
	if err != nil {
		t.Fatal(err)
	}
	s.Rand = bytes.NewReader(bytes.Repeat([]byte{0xab}, 16))
	now := time.Unix(1700000000, 500)
	tok, err := s.Mint(Spec{Identity: "canopy-worker@cm.example.org", Authz: []string{"ADVERTISE_STARTD", "ADVERTISE_MASTER"},
		Lifetime: 90*time.Minute + time.Millisecond}, now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok.Raw, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	h, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if string(h) != `{"alg":"HS256","kid":"POOL"}` {
		t.Errorf("header %s", h)
	}
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"sub": "canopy-worker@cm.example.org", "iss": "cm.example.org", "iat": 1700000000.0,
		"exp": 1700005401.0, "jti": strings.Repeat("ab", 16), "scope": "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER"}
	if len(m) != len(want) {
		t.Errorf("payload %s", p)
	}
	for key, v := range want {
		if m[key] != v {
			t.Errorf("%s = %v, want %v", key, m[key], v)
		}
	}
	if tok.ID != strings.Repeat("ab", 16) || !tok.Expires.Equal(time.Unix(1700005401, 0)) || !tok.IssuedAt.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("token %+v", tok)
	}
	if _, err := k.Verify(tok.Raw, "cm.example.org", now); err != nil {
		t.Errorf("verify: %v", err)
	}
	tok2, _ := s.Mint(Spec{Identity: "a@b", Authz: []string{"READ"}, Lifetime: time.Second}, now)
	if tok2.ID == tok.ID {
		t.Error("two tokens share a jti")
	}
}

func TestVerifyRefusals(t *testing.T) {
	file := readTestdata(t, "signing-key")
	k, _ := NewKey(file, PoolKeyID)
	s, _ := NewSigner(k, "cm.example.org")
	now := time.Unix(1700000000, 0)
	good, err := s.Mint(Spec{Identity: "w@cm.example.org", Authz: []string{"ADVERTISE_STARTD"}, Lifetime: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := append(bytes.Clone(file), 'x')
	otherKey, _ := NewKey(otherFile, PoolKeyID)
	named, _ := NewKey(file, "canopy")
	tests := []struct {
		name  string
		key   *Key
		tok   string
		td    string
		at    time.Time
		want  error
		extra string
	}{
		{"good", k, good.Raw, "cm.example.org", now, nil, ""},
		{"at expiry", k, good.Raw, "", now.Add(time.Hour), nil, ""},
		{"expired", k, good.Raw, "", now.Add(time.Hour + time.Second), ErrExpired, ""},
		{"another key", otherKey, good.Raw, "", now, ErrSignature, ""},
		{"another key id", named, good.Raw, "", now, ErrKeyID, "kid"},
		{"another trust domain", k, good.Raw, "other.org", now, ErrIssuer, "other.org"},
		{"two parts", k, "a.b", "", now, ErrMalformed, "2 parts"},
		{"not base64", k, "a.b.!!", "", now, ErrMalformed, "base64"},
		{"too long", k, strings.Repeat("a", maxToken+1), "", now, ErrMalformed, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.key.Verify(tc.tok, tc.td, tc.at)
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.extra) {
				t.Errorf("error %q does not say %q", err, tc.extra)
			}
			if err != nil && strings.Contains(err.Error(), good.Raw[:20]) {
				t.Errorf("error %q holds the token", err)
			}
		})
	}
}

func TestSpecAndKeyValidation(t *testing.T) {
	k, _ := NewKey([]byte("k"), PoolKeyID)
	s, _ := NewSigner(k, "td")
	specs := []struct {
		name string
		sp   Spec
		want string
	}{
		{"no identity", Spec{Authz: []string{"READ"}, Lifetime: time.Hour}, "identity"},
		{"identity without domain", Spec{Identity: "worker", Authz: []string{"READ"}, Lifetime: time.Hour}, "user@domain"},
		{"no authz", Spec{Identity: "a@b", Lifetime: time.Hour}, "no authorization"},
		{"bad authz", Spec{Identity: "a@b", Authz: []string{"read"}, Lifetime: time.Hour}, "authorization level"},
		{"no lifetime", Spec{Identity: "a@b", Authz: []string{"READ"}}, "lifetime"},
	}
	for _, tc := range specs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Mint(tc.sp, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
	keys := []struct {
		name  string
		file  []byte
		id    string
		want  string
		trust string
	}{
		{"empty file", nil, PoolKeyID, "empty", "td"},
		{"bad key id", []byte("k"), "../POOL", "key id", "td"},
		{"bad trust domain", []byte("k"), PoolKeyID, "trust domain", "a b"},
	}
	for _, tc := range keys {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKey(tc.file, tc.id)
			if err == nil {
				_, err = NewSigner(k, tc.trust)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	file := readTestdata(t, "signing-key")
	tests := []struct {
		name string
		mode os.FileMode
		want string
	}{
		{"owner only", 0o600, ""},
		{"group readable", 0o640, "mode 0640"},
		{"world readable", 0o604, "chmod 600"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, file, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			k, err := LoadKey(path, PoolKeyID)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(k.String(), string(file[:6])) || k.ID() != PoolKeyID {
					t.Errorf("key %v", k)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err %v, want one naming %s and saying %q", err, path, tc.want)
			}
		})
	}
	if _, err := LoadKey(filepath.Join(dir, "missing"), PoolKeyID); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}

// BenchmarkMint is the agent's cost per token (at boot and per renewal).
func BenchmarkMint(b *testing.B) {
	k, _ := NewKey(readTestdata(b, "signing-key"), PoolKeyID)
	s, _ := NewSigner(k, "cm.example.org")
	sp := Spec{Identity: "canopy-worker@cm.example.org", Authz: []string{"ADVERTISE_STARTD", "ADVERTISE_MASTER"}, Lifetime: 24 * time.Hour}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Mint(sp, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is what checking a token's signature costs (what a
// collector does per authentication, less the AKEP2 exchange).
func BenchmarkVerify(b *testing.B) {
	k, _ := NewKey(readTestdata(b, "signing-key"), PoolKeyID)
	s, _ := NewSigner(k, "cm.example.org")
	now := time.Now()
	tok, _ := s.Mint(Spec{Identity: "canopy-worker@cm.example.org", Authz: []string{"ADVERTISE_STARTD"}, Lifetime: time.Hour}, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Verify(tok.Raw, "cm.example.org", now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadKey is the key derivation (HKDF), done once at start.
func BenchmarkNewKey(b *testing.B) {
	file := readTestdata(b, "signing-key")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewKey(file, PoolKeyID); err != nil {
			b.Fatal(err)
		}
	}
}
