// Package inbound turns the verdicts on an arriving message into what the
// delivery pipeline does with it: the sender-authentication results
// (mailauth/verify) into one Authentication-Results field and a DMARC
// decision, the spam score (spam) into X-Spam fields and Junk, and each
// recipient's Sieve script (sieve) into where their copy goes, redirects
// and vacation replies. Each is a delivery.Inspector; every verdict is
// counted in metrics and logged with its reasons.
//
// Mail from other servers (delivery.SourceMX) gets every check;
// authenticated submissions skip sender authentication and the spam
// filter, but their local recipients' Sieve scripts still run.
//
// A failure of our own (a DNS timeout, a state read) never refuses a
// message for good: it is either a temporary refusal or no verdict.
//
// It must never import protocol/* or node, read the network except
// through the resolver it is given, or keep package-level mutable state.
package inbound
