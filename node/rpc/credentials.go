package rpc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The cluster credential: every call carries the metadata
//
//	authorization: Herald <hex HMAC-SHA256(secret, "herald-rpc-v1")>
//
// The key is derived, never the secret itself, so that a leaked RPC
// credential does not give away the secret (other packages derive their
// own keys from it with other labels).
const (
	authHeader    = "authorization"
	authScheme    = "Herald "
	credentialKey = "herald-rpc-v1"
)

// credential returns the metadata value for secret.
func credential(secret []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(credentialKey))
	return authScheme + hex.EncodeToString(mac.Sum(nil))
}

// perRPC attaches the credential to every call of a client connection.
type perRPC struct {
	md      map[string]string
	secured bool
}

func newPerRPC(secret []byte, secured bool) perRPC {
	return perRPC{md: map[string]string{authHeader: credential(secret)}, secured: secured}
}

func (p perRPC) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return p.md, nil
}

// RequireTransportSecurity is false without TLS: the internal network is
// then trusted with the credential (see ServerConfig.TLS).
func (p perRPC) RequireTransportSecurity() bool { return p.secured }

// guard checks the credential of every incoming call.
type guard struct {
	want   []byte
	reject func(ctx context.Context, method string)
}

var errRefused = status.Error(codes.Unauthenticated, "rpc: missing or wrong cluster credential")

func (g *guard) check(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(authHeader)
	if len(got) == 1 && subtle.ConstantTimeCompare([]byte(got[0]), g.want) == 1 {
		return nil
	}
	g.reject(ctx, method)
	return errRefused
}

func (g *guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := g.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (g *guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := g.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
