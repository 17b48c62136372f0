// Package cluster is the in-process multi-node test harness: it starts N
// real nodes (real Raft, real memberlist, real mutual TLS) on loopback ports
// in temporary folders, and lets a test kill, restart, wipe and partition
// them. It waits by polling with deadlines, never by fixed sleeps.
//
// Partitions are cut in each node's own network layer (node.Links), not in
// the kernel, so tests need no privileges.
//
// The outside world is a loopback DNS (DNS()) whose wildcard answers every
// name it has no records for with the sink's address, and an SMTP sink
// (Sink()). Mind the wildcard with DNS blocklists: 1.0.0.127.<zone> gets
// an A record in 127/8, which reads as "listed"; a test that configures
// dnsbl_zones must give that name NXDOMAIN or NODATA itself.
package cluster
