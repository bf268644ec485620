package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/heraldpush/herald/node/auth"
)

// token prints an HS256 token for a user, signed with --jwt-secret or the
// development secret in the data directory.
func token(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("herald token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var user, dataDir, secret, config string
	var ttl time.Duration
	fs.StringVar(&config, "config", "", "read settings from `FILE` (lines of name = value)")
	fs.StringVar(&user, "user", "", "the user `ID` the token stands for (required)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	fs.StringVar(&dataDir, "data-dir", "herald-data", "`directory` holding the development secret that herald serve generated")
	fs.StringVar(&secret, "jwt-secret", "", "HS256 `secret` to sign with (default: the development secret in the data dir)")
	fs.Usage = usage(fs, "Usage: herald token --user ID [--ttl 1h]\n\nPrints a connection token for a user. For development: production tokens come from\nyour own backend, signed with the same secret or key that herald serve verifies.")
	if err := parseFlags(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		fmt.Fprintln(stderr, "herald token:", err)
		return errUsage
	}
	if user == "" {
		fmt.Fprintln(stderr, "herald token: --user is required")
		return errUsage
	}
	if ttl < 0 {
		fmt.Fprintln(stderr, "herald token: --ttl must not be negative")
		return errUsage
	}
	if secret == "" {
		var err error
		if secret, err = auth.ReadDevSecret(dataDir, auth.JWTSecretFile); err != nil {
			return err
		}
	}
	tok, err := auth.Mint([]byte(secret), user, ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
