package mongo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	mongodriver "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/auth"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/topology"

	"github.com/heraldpush/herald/storage"
)

func TestWrapClassifies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want error // sentinel the wrapped error must match, nil for none
	}{
		{"deadline", context.DeadlineExceeded, storage.ErrUnavailable},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), storage.ErrUnavailable},
		{"server selection", topology.ServerSelectionError{Wrapped: errors.New("no primary")}, storage.ErrUnavailable},
		{"not primary", mongodriver.CommandError{Code: 10107, Message: "not primary"}, storage.ErrUnavailable},
		{"network label", mongodriver.CommandError{Labels: []string{"NetworkError"}}, storage.ErrUnavailable},
		{"write concern", mongodriver.WriteException{WriteConcernError: &mongodriver.WriteConcernError{Code: 64}}, storage.ErrUnavailable},
		{"disconnected", mongodriver.ErrClientDisconnected, storage.ErrClosed},
		{"refused", topology.ConnectionError{Wrapped: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, storage.ErrUnavailable},
		{"pool cleared", poolCleared{}, storage.ErrUnavailable},
		{"bad credentials", topology.ConnectionError{Wrapped: &auth.Error{}}, nil},
		{"duplicate", mongodriver.WriteException{WriteErrors: []mongodriver.WriteError{{Code: 11000}}}, nil},
		{"bad query", mongodriver.CommandError{Code: 2, Message: "bad value"}, nil},
		{"ferretdb maxTimeMS", mongodriver.CommandError{Code: 1, Message: "[msg_find.go:344 handler.handleMaxTimeMSError] [collection.go:94 sqlite.(*collection).Query] interrupted (9)"}, storage.ErrUnavailable},
		{"internal error", mongodriver.CommandError{Code: 1, Message: "something broke"}, nil},
	} {
		got := wrap("op", tc.err)
		if !strings.Contains(got.Error(), tc.err.Error()) && tc.want != storage.ErrClosed {
			t.Errorf("%s: %v does not wrap the driver's error", tc.name, got)
		}
		for _, sentinel := range []error{storage.ErrUnavailable, storage.ErrClosed} {
			if is := errors.Is(got, sentinel); is != (sentinel == tc.want) {
				t.Errorf("%s: errors.Is(%v, %v) = %v", tc.name, got, sentinel, is)
			}
		}
	}
}

// poolCleared stands for the driver's unexported poolClearedError.
type poolCleared struct{}

func (poolCleared) Error() string   { return "connection pool was cleared" }
func (poolCleared) Retryable() bool { return true }
