package mongo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	mongodriver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/auth"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/heraldpush/herald/storage"
)

// Server error codes that mean "not now": the server is unreachable,
// shutting down, not (or no longer) primary, overloaded or too slow. The
// operation did not happen, or its outcome is unknown; an idempotent retry
// is safe. From MongoDB's src/mongo/base/error_codes.yml.
var transientCodes = map[int32]bool{
	6:     true, // HostUnreachable
	7:     true, // HostNotFound
	50:    true, // MaxTimeMSExpired
	64:    true, // WriteConcernFailed (wtimeout: written, not yet durable)
	89:    true, // NetworkTimeout
	91:    true, // ShutdownInProgress
	189:   true, // PrimarySteppedDown
	262:   true, // ExceededTimeLimit
	9001:  true, // SocketException
	10107: true, // NotWritablePrimary
	11600: true, // InterruptedAtShutdown
	11602: true, // InterruptedDueToReplStateChange
	13435: true, // NotPrimaryNoSecondaryOk
	13436: true, // NotPrimaryOrSecondary
}

// unavailable reports whether err means MongoDB could not be reached or did
// not answer in time, as opposed to refusing the request.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		mongodriver.IsTimeout(err) || mongodriver.IsNetworkError(err) {
		return true
	}
	var sse topology.ServerSelectionError
	if errors.As(err, &sse) {
		return true
	}
	// The pool was cleared by another call's network error (the driver
	// retries these only where retryable writes are supported).
	var rpe driver.RetryablePoolError
	if errors.As(err, &rpe) && rpe.Retryable() {
		return true
	}
	// Opening a connection failed: unreachable, unless the server refused
	// the credentials, which retrying will not fix.
	var ce topology.ConnectionError
	if errors.As(err, &ce) {
		var ae *auth.Error
		var ne net.Error
		return !errors.As(err, &ae) || errors.As(err, &ne)
	}
	var we mongodriver.WriteException
	if errors.As(err, &we) && we.WriteConcernError != nil {
		return true // the write may be applied but is not acknowledged as asked
	}
	var le mongodriver.LabeledError
	if errors.As(err, &le) && (le.HasErrorLabel("RetryableWriteError") || le.HasErrorLabel("SystemOverloadedError")) {
		return true
	}
	var se mongodriver.ServerError
	if errors.As(err, &se) {
		for code := range transientCodes {
			if se.HasErrorCode(int(code)) {
				return true
			}
		}
		// FerretDB 1.x reports maxTimeMS expiring as an InternalError
		// (code 1) naming its handler, not as MaxTimeMSExpired.
		var ce mongodriver.CommandError
		if errors.As(err, &ce) && ce.Code == 1 && strings.Contains(ce.Message, "MaxTimeMS") {
			return true
		}
	}
	return false
}

// wrap adds op to err and classifies it: errors wrapping
// storage.ErrUnavailable for outages and timeouts, storage.ErrClosed for a
// client closed under a running call, and the driver's error otherwise.
func wrap(op string, err error) error {
	switch {
	case errors.Is(err, mongodriver.ErrClientDisconnected):
		return fmt.Errorf("mongo: %s: %w", op, storage.ErrClosed)
	case unavailable(err):
		return fmt.Errorf("mongo: %s: %w: %w", op, storage.ErrUnavailable, err)
	default:
		return fmt.Errorf("mongo: %s: %w", op, err)
	}
}
