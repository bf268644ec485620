// Package auth turns connection tokens into user IDs.
//
// [JWT] verifies tokens locally: HS256 with a shared secret, or RS256/ES256
// with a public key (PEM). The user ID is the "sub" claim; "exp" is
// required unless the verifier is configured otherwise, and "nbf", "iss"
// and "aud" are checked when configured. [Mint] makes an HS256 token for
// development ("herald token"). The remote auth service client lives in
// remote.go.
//
// Errors wrap [ErrInvalidToken] when the token is bad (the edge answers
// 401 with the error's text, which never contains the token) and
// [ErrUnavailable] when a remote auth service could not be asked (503).
package auth
