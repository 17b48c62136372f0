// Package dnsbl asks DNS blocklists (RFC 5782) whether a client address is
// listed: for 192.0.2.1 and zone z it asks A of 1.2.0.192.z (an IPv6
// address in nibble form, 32 labels), and a listing's TXT for the reason.
//
// Invariants:
//   - Only an A answer in 127.0.0.0/8 lists an address. 127.255.255.0/24
//     is how some lists (Spamhaus) say "query refused" (a public resolver,
//     too many queries, a malformed query): those answers are ignored, as
//     are answers outside 127/8 (a lapsed zone that now answers everything,
//     a resolver that rewrites NXDOMAIN). Neither lists anyone.
//   - A temporary DNS failure is an error only when no zone listed the
//     address: one list's outage does not hide another's listing.
//   - A reason is at most MaxReason bytes of printable ASCII, safe to put
//     in an SMTP reply or a log line.
//
// It must never: import a project package other than dnsclient (for its
// error kinds), keep package-level mutable state, decide what happens to
// the connection, or ask anything but the Resolver it is given.
package dnsbl
