// Package pop3 tests the POP3 server end to end through a real 3-node
// in-process cluster (test/cluster), with its own small client (Client,
// also used by the benchmarks) and, where installed, Python's poplib and
// fetchmail.
//
// It asserts what a POP3 user would notice: the octets RETR sends, stable
// UIDLs on every node and across restarts, deletions only at QUIT and only
// when committed. It never sleeps for a fixed time: it polls with deadlines.
package pop3
