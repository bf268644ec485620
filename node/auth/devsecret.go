package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Dev-mode secret files in the data directory.
const (
	JWTSecretFile     = "jwt-secret"
	APIKeyFile        = "api-key"
	ClusterSecretFile = "cluster-secret"
)

// DevSecret returns the secret stored in dir/name, creating it with 32
// random bytes (base64url, file mode 0600) if it does not exist; created
// says which. It is for development: production sets secrets explicitly.
func DevSecret(dir, name string) (secret string, created bool, err error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", false, fmt.Errorf("dev secret %s is empty; delete it to regenerate", path)
		}
		return s, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("read dev secret: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("create data dir: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, fmt.Errorf("generate dev secret: %w", err)
	}
	s := base64.RawURLEncoding.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process won the race: use its secret
		return DevSecret(dir, name)
	}
	if err != nil {
		return "", false, fmt.Errorf("create dev secret: %w", err)
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write dev secret: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("write dev secret: %w", err)
	}
	return s, true, nil
}

// ReadDevSecret returns the secret in dir/name without creating it.
func ReadDevSecret(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("read dev secret (start herald once to create it, or pass the secret): %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
