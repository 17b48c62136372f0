// Package auth holds what the client protocols (SMTP, IMAP, POP3) share
// about letting clients in: when a plain-text password may be sent at all,
// how failed logins are throttled per client address and per account (so
// that guessing passwords is slow on every protocol alike), and how many
// connections a server, and one client address, may hold.
//
// It keeps state per node only (a guesser spreading over nodes gets each
// node's allowance); it must never import node.
package auth
