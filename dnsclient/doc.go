// Package dnsclient is the one DNS resolver a node uses: a stub resolver
// that asks the servers named in the node's dns_servers setting, and
// nothing else. It answers the lookups mail delivery needs (MX, A/AAAA,
// TXT, TLSA with the resolver's DNSSEC verdict, PTR, SRV) and sorts their
// failures into "no such record" (ErrNotFound) and "try again later"
// (ErrTemporary). WithCache adds a bounded cache of answers (each for its
// TTL, at most an hour; "not found" a minute; temporary failures never).
//
// Invariants: a Resolver always has at least one server, and queries go
// only to those servers, in order. It never falls back to the system
// resolver (net.DefaultResolver, /etc/resolv.conf): only SystemServers
// reads that file, for cmd/mailcluster to fill in the default setting.
//
// It must never import a project package, keep package-level mutable
// state, or validate DNSSEC itself: "authentic" is the AD bit of a
// resolver the operator trusts (run it on the host or over a secure path).
package dnsclient
