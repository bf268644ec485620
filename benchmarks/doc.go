// Package benchmarks runs herald-bench's scenarios from go test.
//
// TestSmoke runs every scenario once at a small size (about 2,000
// connections, a few seconds each) and fails on a lost delivery or a
// result that is not a complete JSON document; it asserts no speed. The
// Benchmark functions run the same scenarios at full size (15,000
// connections by default) and report their figures with b.ReportMetric:
//
//	go test -run '^$' -bench . -benchtime 1x ./benchmarks/ -conns 15000 -rate 5000
//
// Both build herald (and herald-devmongo, herald-bench and a baseline
// server where needed) from this checkout, as herald-bench does. The
// logic lives in benchmarks/loadgen; results of the command-line tool are
// in benchmarks/RESULTS.md.
package benchmarks
