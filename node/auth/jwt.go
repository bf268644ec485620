package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Sentinel errors.
var (
	// ErrInvalidToken: the token is malformed, badly signed, expired, or
	// names no user.
	ErrInvalidToken = errors.New("invalid token")
	// ErrUnavailable: a remote auth service could not be reached.
	ErrUnavailable = errors.New("auth service unavailable")
)

// Identity is what a valid token says.
type Identity struct {
	User    string
	Expires time.Time // zero when the token does not expire
}

// JWTConfig configures a JWT verifier. Exactly one of Secret and
// PublicKeyPEM must be set.
type JWTConfig struct {
	// Secret verifies HS256 tokens.
	Secret []byte
	// PublicKeyPEM verifies RS256 (RSA key) or ES256 (P-256 key) tokens.
	PublicKeyPEM []byte
	// Issuer and Audience, when set, must match the iss and aud claims.
	Issuer, Audience string
	// Leeway tolerates clock skew on exp and nbf.
	Leeway time.Duration
	// AllowNoExpiry accepts tokens without exp. Off by default: a token
	// without expiry is a password that can never be revoked.
	AllowNoExpiry bool
}

// JWT verifies JSON Web Tokens. It is safe for concurrent use.
type JWT struct {
	key     any
	methods []string
	parser  *jwt.Parser
}

// NewJWT builds a verifier.
func NewJWT(cfg JWTConfig) (*JWT, error) {
	var j JWT
	switch {
	case len(cfg.Secret) > 0 && len(cfg.PublicKeyPEM) > 0:
		return nil, errors.New("jwt: set a secret or a public key, not both")
	case len(cfg.Secret) > 0:
		if len(cfg.Secret) < 16 {
			return nil, fmt.Errorf("jwt: secret of %d bytes is too short; use at least 32 random bytes", len(cfg.Secret))
		}
		j.key, j.methods = cfg.Secret, []string{"HS256"}
	case len(cfg.PublicKeyPEM) > 0:
		key, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		j.key = key
		switch key.(type) {
		case *rsa.PublicKey:
			j.methods = []string{"RS256"}
		case *ecdsa.PublicKey:
			j.methods = []string{"ES256"}
		}
	default:
		return nil, errors.New("jwt: a secret or a public key is required")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(j.methods), jwt.WithLeeway(cfg.Leeway)}
	if !cfg.AllowNoExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	j.parser = jwt.NewParser(opts...)
	return &j, nil
}

// LoadPublicKey reads a PEM public key file for JWTConfig.PublicKeyPEM.
func LoadPublicKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt public key: %w", err)
	}
	if _, err := parsePublicKey(b); err != nil {
		return nil, fmt.Errorf("jwt public key %s: %w", path, err)
	}
	return b, nil
}

func parsePublicKey(p []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(p)
	if block == nil {
		return nil, errors.New("jwt: public key is not PEM")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		if rk, rerr := x509.ParsePKCS1PublicKey(block.Bytes); rerr == nil {
			return rk, nil
		}
		return nil, fmt.Errorf("jwt: parse public key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("jwt: RSA key of %d bits is too small", k.N.BitLen())
		}
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name != "P-256" {
			return nil, fmt.Errorf("jwt: ES256 needs a P-256 key, not %s", k.Curve.Params().Name)
		}
		return k, nil
	}
	return nil, fmt.Errorf("jwt: unsupported public key type %T", key)
}

// Authenticate verifies token and returns its identity. Errors wrap
// ErrInvalidToken and say why without repeating the token.
func (j *JWT) Authenticate(_ context.Context, token string) (Identity, error) {
	var claims jwt.RegisteredClaims
	_, err := j.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return j.key, nil })
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %s", ErrInvalidToken, reason(err))
	}
	if claims.Subject == "" {
		return Identity{}, fmt.Errorf("%w: no sub claim", ErrInvalidToken)
	}
	id := Identity{User: claims.Subject}
	if claims.ExpiresAt != nil {
		id.Expires = claims.ExpiresAt.Time
	}
	return id, nil
}

// reason turns a jwt error into a short, client-safe reason.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token is not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token has no exp claim"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature is invalid"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "token uses an unexpected signing method"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	}
	return "token is not valid"
}

// Mint returns an HS256 token for user that expires after ttl: never if ttl
// is zero, already if it is negative. It is meant for development and
// tests.
func Mint(secret []byte, user string, ttl time.Duration) (string, error) {
	if user == "" {
		return "", errors.New("mint: empty user")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{Subject: user, IssuedAt: jwt.NewNumericDate(now)}
	if ttl != 0 {
		claims.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token for %s: %w", user, err)
	}
	return s, nil
}
