// Package bench holds the benchmarks behind `make bench`. Each reports its
// figures with b.ReportMetric so `go test -bench` prints them; none of them
// asserts a timing.
package bench
