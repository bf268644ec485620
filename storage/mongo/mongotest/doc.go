// Package mongotest runs an embedded FerretDB, in process, as the MongoDB
// wire-protocol server for tests.
//
// FerretDB (github.com/FerretDB/FerretDB/ferretdb) runs with its SQLite
// handler in a temporary directory. Nothing is installed or spawned, so the
// tests of storage/mongo and of packages that compose it run anywhere `go
// test` runs.
//
// Two ways to get a server:
//
//   - [Start] gives a test a server of its own that it may [Server.Stop] and
//     [Server.Start] again, to see what its code does while MongoDB is down
//     and after it comes back. It is stopped in t.Cleanup.
//   - [Shared] gives every test of the binary one server, started on first
//     use. Tests isolate themselves by database: [Server.Database] returns a
//     fresh database name.
//
// A package that uses [Shared] runs its tests through [RunMain], which stops
// the shared server after the tests and checks for leaked goroutines:
//
//	func TestMain(m *testing.M) { os.Exit(mongotest.RunMain(m)) }
//
// When HERALD_TEST_MONGO_URI is set (for example
// mongodb://127.0.0.1:27017/?replicaSet=rs0), [Shared] returns that server
// instead, so the same tests run against a real MongoDB, and [Start] skips
// the test: a test must never stop a server it did not start.
//
// # How Stop works
//
// Clients reach FerretDB through a small TCP relay that owns the advertised
// port. [Server.Stop] closes the relay's listener and cuts every open
// connection at once, then shuts FerretDB down: to a client this is exactly
// a killed mongod (connections reset, the port refuses new ones).
// FerretDB's own shutdown would instead keep open connections serving for up
// to three seconds. [Server.Start] starts FerretDB again on the same data
// directory and the relay on the same port, and returns once a ping through
// the port succeeds.
//
// # Logs
//
// FerretDB logs every connection. Its log is kept in memory and written to
// the test log only if the test fails. Set HERALD_TEST_FERRETDB_LOG to a
// level (debug, info, warn, error) to stream it to stderr instead.
//
// # Goroutines
//
// A stopped server leaves no goroutine behind, and neither does a
// disconnected mongo client; [RunMain] verifies it with goleak after the
// shared server stops. [IgnoreGoroutines] is the (currently empty) list of
// exceptions for the goleak checks of other packages.
package mongotest
