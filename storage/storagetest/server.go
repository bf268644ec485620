package storagetest

// Server controls a backend server started for one test.
type Server struct {
	// Stop makes the server unreachable (kills the process or closes the
	// listener). Idempotent.
	Stop func()
	// Start brings a server back on the same address. Whether it keeps the
	// data of the stopped one depends on the backend (Redis restarts empty).
	Start func()
}
