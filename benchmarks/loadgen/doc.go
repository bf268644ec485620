// Package loadgen is the engine of herald-bench: it starts the servers a
// scenario measures (Herald nodes, baseline servers, Redis and a
// MongoDB-wire server for the cluster) as separate processes, connects
// clients through workers (in this process, or one process per 18,000
// connections, each with its own loopback source address), drives the
// scenario, and checks every delivery while it measures: a run reports
// lost and duplicated deliveries, and a run that lost one fails.
package loadgen
