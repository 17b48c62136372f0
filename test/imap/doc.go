// Package imap holds the end-to-end IMAP tests: real 3-node clusters
// (test/cluster) driven through go-imap v2's client, Python's imaplib and
// mbsync, covering every command on the wire, cross-node IDLE, concurrent
// sessions, node loss, lost quorum and hostile input. It has no non-test
// code besides this file.
package imap
