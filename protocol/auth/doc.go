// Package auth holds what the client protocols (SMTP, IMAP, POP3, and
// later the web) share about letting clients in: when a plain-text
// password may be sent at all; the one login path (Limiter.Login: size
// limits, the throttle per client address and per account, each attempt
// counted before its password is hashed, a cap on password checks running
// at once, the fail delay); the SASL PLAIN and LOGIN servers; and how many
// connections a server, and one client address, may hold.
//
// Its state is per node, but failures can be shared: Share hands each
// failed login to the node, which gossips it, and Observe counts the
// failures other nodes report, so the block holds on every node at the
// same total. It must never import node, nor hash a password outside
// Login's slots.
package auth
