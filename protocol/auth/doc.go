// Package auth holds what the client protocols (SMTP submission, IMAP,
// POP3) share about logging users in: when a plain-text password may be
// sent at all, and how failed attempts are throttled per client address and
// per account, so that guessing passwords is slow on every protocol alike.
//
// It keeps state per node only (a guesser spreading over nodes gets each
// node's allowance); it must never import node.
package auth
