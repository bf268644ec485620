package rpc

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/heraldpush/herald/node/auth"
	"github.com/heraldpush/herald/storage"
)

// Sentinel errors. Test for them with errors.Is.
var (
	// ErrInvalidConfig is wrapped by every error of the configs' Validate.
	ErrInvalidConfig = errors.New("rpc: invalid config")
	// ErrBusy: a peer's queue stayed full until the context ended.
	ErrBusy = errors.New("rpc: peer queue full")
	// ErrUnavailable: the peer could not be reached, or its stream broke.
	ErrUnavailable = errors.New("rpc: peer unavailable")
	// ErrAckTimeout: a batch was not acked within AckTimeout.
	ErrAckTimeout = errors.New("rpc: ack timeout")
	// ErrRejected: the peer's handler returned an error. The error's text
	// is the peer's.
	ErrRejected = errors.New("rpc: rejected by peer")
	// ErrUnauthenticated: the peer refused this node's cluster credential
	// (the secrets differ).
	ErrUnauthenticated = errors.New("rpc: cluster credential refused")
	// ErrClosed: the peer was removed, or the client or server closed.
	ErrClosed = errors.New("rpc: closed")
)

// Wire markers of an invalid token, in a google.rpc.ErrorInfo detail.
const (
	errorDomain        = "herald.rpc.v1"
	reasonInvalidToken = "INVALID_TOKEN"
)

// remoteError is an error that came over the wire: its text is the peer's,
// and it wraps the sentinel the peer's error wrapped.
type remoteError struct {
	msg  string
	kind error
	st   error // the gRPC status error, so status.Code still works
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return []error{e.kind, e.st} }

// toStatus turns a handler error into the gRPC status the caller sees; see
// [Handler] for the mapping.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, auth.ErrInvalidToken):
		s := status.New(codes.Unauthenticated, err.Error())
		if d, derr := s.WithDetails(&errdetails.ErrorInfo{Reason: reasonInvalidToken, Domain: errorDomain}); derr == nil {
			s = d
		}
		return s.Err()
	case errors.Is(err, auth.ErrUnavailable), errors.Is(err, storage.ErrUnavailable), errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// fromStatus turns the error of a unary call to addr into this package's
// errors: codes.Unavailable and DeadlineExceeded wrap ErrUnavailable (and
// unavail, if set), an invalid token wraps auth.ErrInvalidToken with the
// peer's text, a refused credential ErrUnauthenticated, the caller's own
// cancellation context.Canceled, anything else ErrRejected.
func fromStatus(ctx context.Context, op, addr string, err error, unavail error) error {
	s, _ := status.FromError(err)
	switch s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		if unavail != nil {
			return fmt.Errorf("rpc: %s on %s: %w: %w: %w", op, addr, unavail, ErrUnavailable, err)
		}
		return fmt.Errorf("rpc: %s on %s: %w: %w", op, addr, ErrUnavailable, err)
	case codes.Unauthenticated:
		if isInvalidToken(s) {
			return &remoteError{msg: s.Message(), kind: auth.ErrInvalidToken, st: err}
		}
		return fmt.Errorf("rpc: %s on %s: %w: %w", op, addr, ErrUnauthenticated, err)
	case codes.Canceled:
		if ctx.Err() != nil {
			return fmt.Errorf("rpc: %s on %s: %w", op, addr, context.Cause(ctx))
		}
		// The connection is closing: the peer was removed.
		return fmt.Errorf("rpc: %s on %s: %w: %w", op, addr, ErrClosed, err)
	}
	return &remoteError{msg: s.Message(), kind: ErrRejected, st: err}
}

func isInvalidToken(s *status.Status) bool {
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain && info.GetReason() == reasonInvalidToken {
			return true
		}
	}
	return false
}
