// Package clusternet is the only way nodes talk to each other over TCP.
//
// Every node-to-node connection (Raft, proposal forwarding, blob copies) goes
// through one listening port, is wrapped in mutual TLS whose certificate
// authority is derived from the cluster secret, and then names the channel it
// wants with one byte. A process that does not hold the secret cannot finish
// the handshake, so it can neither join, propose nor read anything.
//
// The gossip layer (memberlist) does not use this package for transport; it
// gets its own encryption key, also derived from the secret, from GossipKey.
//
// Invariants: a connection reaches a channel listener only after both sides
// presented a certificate signed by the cluster CA; the peer's node ID is the
// certificate's common name. This package must never import another project
// package.
package clusternet
