// Package login tests, over real connections to real in-process nodes,
// what every client protocol shares about letting clients in: the one
// login path (attempts counted before the password is hashed, the block
// held on every node of the cluster) and the one accept loop (the TLS
// handshake deadline on the implicit-TLS ports).
package login
