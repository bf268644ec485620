package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func exp(d time.Duration) *jwt.NumericDate { return jwt.NewNumericDate(time.Now().Add(d)) }

func TestHS256(t *testing.T) {
	t.Parallel()
	v, err := NewJWT(JWTConfig{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := sign(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: exp(time.Hour)})
	id, err := v.Authenticate(ctx, good)
	if err != nil || id.User != "alice" || time.Until(id.Expires) < 59*time.Minute {
		t.Fatalf("good token: %+v %v", id, err)
	}
	minted, err := Mint(secret, "bob", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Authenticate(ctx, minted); err != nil || id.User != "bob" {
		t.Fatalf("minted token: %+v %v", id, err)
	}
	bad := map[string]string{
		"expired":        sign(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "a", ExpiresAt: exp(-time.Minute)}),
		"no exp":         sign(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "a"}),
		"no sub":         sign(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{ExpiresAt: exp(time.Hour)}),
		"not yet valid":  sign(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "a", ExpiresAt: exp(time.Hour), NotBefore: exp(time.Minute)}),
		"wrong secret":   sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret!!!"), jwt.RegisteredClaims{Subject: "a", ExpiresAt: exp(time.Hour)}),
		"HS512":          sign(t, jwt.SigningMethodHS512, secret, jwt.RegisteredClaims{Subject: "a", ExpiresAt: exp(time.Hour)}),
		"alg none":       sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.RegisteredClaims{Subject: "a", ExpiresAt: exp(time.Hour)}),
		"garbage":        "not.a.token",
		"empty":          "",
		"tampered claim": tamper(t, good),
	}
	for name, tok := range bad {
		_, err := v.Authenticate(ctx, tok)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
			continue
		}
		if tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: error repeats the token", name)
		}
	}
	if _, err := v.Authenticate(ctx, bad["expired"]); !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token reason: %v", err)
	}
	lax, _ := NewJWT(JWTConfig{Secret: secret, AllowNoExpiry: true})
	if id, err := lax.Authenticate(ctx, bad["no exp"]); err != nil || !id.Expires.IsZero() {
		t.Errorf("AllowNoExpiry: %+v %v", id, err)
	}
}

// tamper rewrites the token's sub claim and keeps its signature.
func tamper(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(p), `"alice"`, `"admin"`, 1)
	if changed == string(p) {
		t.Fatal("nothing to tamper with")
	}
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(changed))
	return strings.Join(parts, ".")
}

func TestIssuerAudienceLeeway(t *testing.T) {
	t.Parallel()
	v, err := NewJWT(JWTConfig{Secret: secret, Issuer: "auth.example", Audience: "herald", Leeway: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok := sign(t, jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "a", Issuer: "auth.example", Audience: jwt.ClaimStrings{"herald"}, ExpiresAt: exp(-30 * time.Second)})
	if _, err := v.Authenticate(ctx, ok); err != nil {
		t.Fatalf("token within leeway: %v", err)
	}
	for _, c := range []jwt.RegisteredClaims{
		{Subject: "a", Issuer: "other", Audience: jwt.ClaimStrings{"herald"}, ExpiresAt: exp(time.Hour)},
		{Subject: "a", Issuer: "auth.example", Audience: jwt.ClaimStrings{"other"}, ExpiresAt: exp(time.Hour)},
	} {
		if _, err := v.Authenticate(ctx, sign(t, jwt.SigningMethodHS256, secret, c)); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("claims %+v accepted: %v", c, err)
		}
	}
}

func pubPEM(t *testing.T, pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestRS256AndES256(t *testing.T) {
	t.Parallel()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		method jwt.SigningMethod
		priv   any
		pub    any
	}{
		{"RS256", jwt.SigningMethodRS256, rk, &rk.PublicKey},
		{"ES256", jwt.SigningMethodES256, ek, &ek.PublicKey},
	} {
		path := filepath.Join(dir, tc.name+".pem")
		os.WriteFile(path, pubPEM(t, tc.pub), 0o600)
		p, err := LoadPublicKey(path)
		if err != nil {
			t.Fatal(err)
		}
		v, err := NewJWT(JWTConfig{PublicKeyPEM: p})
		if err != nil {
			t.Fatal(err)
		}
		tok := sign(t, tc.method, tc.priv, jwt.RegisteredClaims{Subject: "carol", ExpiresAt: exp(time.Hour)})
		if id, err := v.Authenticate(context.Background(), tok); err != nil || id.User != "carol" {
			t.Fatalf("%s: %+v %v", tc.name, id, err)
		}
		// Algorithm confusion: an HS256 token "signed" with the public key.
		confused := sign(t, jwt.SigningMethodHS256, pubPEM(t, tc.pub), jwt.RegisteredClaims{Subject: "mallory", ExpiresAt: exp(time.Hour)})
		if _, err := v.Authenticate(context.Background(), confused); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("%s: HS256 token signed with the public key accepted: %v", tc.name, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]JWTConfig{
		"nothing":      {},
		"both":         {Secret: secret, PublicKeyPEM: []byte("x")},
		"short secret": {Secret: []byte("short")},
		"not pem":      {PublicKeyPEM: []byte("hello")},
	} {
		if _, err := NewJWT(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := NewJWT(JWTConfig{PublicKeyPEM: pubPEM(t, &small.PublicKey)}); err == nil {
		t.Error("1024-bit RSA key accepted")
	}
}

func TestDevSecret(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	s1, created, err := DevSecret(dir, JWTSecretFile)
	if err != nil || !created || len(s1) < 40 {
		t.Fatalf("first: %q %v %v", s1, created, err)
	}
	st, _ := os.Stat(filepath.Join(dir, JWTSecretFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v", st.Mode())
	}
	s2, created, err := DevSecret(dir, JWTSecretFile)
	if err != nil || created || s2 != s1 {
		t.Fatalf("second: %q %v %v", s2, created, err)
	}
	if r, err := ReadDevSecret(dir, JWTSecretFile); err != nil || r != s1 {
		t.Fatalf("read: %q %v", r, err)
	}
	if _, err := ReadDevSecret(dir, APIKeyFile); err == nil {
		t.Fatal("reading a missing secret succeeded")
	}
	k, _, _ := DevSecret(dir, APIKeyFile)
	if k == s1 {
		t.Fatal("api key equals jwt secret")
	}
}
