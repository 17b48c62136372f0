// Package cluster is the in-process multi-node test harness: it starts N
// real nodes (real Raft, real memberlist, real mutual TLS) on loopback ports
// in temporary folders, and lets a test kill, restart, wipe and partition
// them. It waits by polling with deadlines, never by fixed sleeps.
//
// Partitions are cut in each node's own network layer (node.Links), not in
// the kernel, so tests need no privileges.
package cluster
