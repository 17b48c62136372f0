// Package managesieve serves ManageSieve (RFC 5804): the protocol mail
// programs use to list, upload, check, activate, rename and delete a
// user's Sieve filter scripts. It speaks the protocol only: the scripts
// live behind the Store interface the node fills (the replicated store),
// a script is compiled by the Checker the node passes (the Sieve
// package's compile step), and a password is checked by the Authenticator
// (the replicated store) under the node's shared login throttle.
//
// Invariants:
//   - A password travels only inside TLS or from loopback
//     (auth.PlaintextAllowed); otherwise SASL is advertised empty and
//     AUTHENTICATE answers NO (ENCRYPT-NEEDED).
//   - Every login goes through auth.Limiter.Login; every port through
//     protocol/listen.
//   - Everything read from the client is bounded: a line, a literal (the
//     script size limit), the octets of an oversized literal read and
//     thrown away before the connection is closed, the commands before a
//     login, failed logins and bad commands, and the time to send one
//     command. A bad command is answered NO and the session goes on in
//     step with the client (a literal announced on a bad line is still
//     read to its end); when that cannot be done, BYE and close.
//   - A script is stored only after it passed the Checker; a reply to a
//     change is OK only after the Store said so.
//
// It must never import node, never write the store except through the
// Store interface, and never log a credential or a script's content.
package managesieve
