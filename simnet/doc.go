// Package simnet is a small outside world on loopback: a DNS server (DNS)
// and an SMTP server that stands in for every remote mail exchanger (Sink).
// `mailcluster dev` runs both so that mail to outside addresses stays on the
// machine, and tests run them to watch what a node sends out.
//
// Invariants: both listen only on loopback addresses (a non-loopback
// address is refused), answer only from the tables a test or the dev
// cluster gives them, and never send a packet anywhere else: the DNS does
// not recurse or forward, the sink never relays.
//
// It must never import node or protocol packages (it is the far side of
// the network, not part of a node), and it keeps no package-level state:
// a test runs as many as it likes.
package simnet
