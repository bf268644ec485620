package storage

import "errors"

// Sentinel errors returned (wrapped) by every backend. Test with errors.Is.
var (
	// ErrNotFound: the requested message does not exist or has expired.
	ErrNotFound = errors.New("storage: not found")
	// ErrDuplicate: a live message with the same idempotency key exists.
	// Append returns it together with the existing message.
	ErrDuplicate = errors.New("storage: duplicate idempotency key")
	// ErrUnavailable: the backend could not be reached or did not answer in
	// time. Callers may retry or fall back (dispatch routes by ring; collect
	// answers 503). Nothing was written, or the write's outcome is unknown
	// and an idempotent retry is safe.
	ErrUnavailable = errors.New("storage: backend unavailable")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("storage: closed")
	// ErrFenced: Append of an ID that [Messages.Resolve] declared never
	// stored. Nothing was written.
	ErrFenced = errors.New("storage: message id fenced")
	// ErrInvalid: the argument breaks the contract (empty user, bad ID ...).
	ErrInvalid = errors.New("storage: invalid argument")
)
