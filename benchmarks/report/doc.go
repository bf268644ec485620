// Package report turns herald-bench's JSON results into SVG plots: server
// memory per connection and broadcast time against the connection count
// (Herald and the baselines side by side), and unicast latency
// percentiles against the message rate. Each point is the median over the
// results in the directory for it (herald-bench compare runs several
// rounds), so keep one directory per campaign.
package report
