// Package sieve_test proves users' Sieve filters end to end through a real
// in-process 3-node cluster (test/cluster), one cluster for every case:
//
//   - scripts uploaded over ManageSieve (STARTTLS, AUTHENTICATE PLAIN)
//     through one node are listed and returned by another (LISTSCRIPTS,
//     GETSCRIPT) and by the admin API of a third;
//   - they filter mail arriving through any node's MX port: fileinto with
//     flags, a missing mailbox (INBOX), discard, redirect out to the
//     harness's sink with and without keep, a redirect to oneself (keep),
//     a run past the redirect limit (implicit keep, nothing sent), each
//     recipient of one transaction by its own script, SETACTIVE "";
//   - vacation replies leave once per sender cluster-wide (also for three
//     messages through three nodes at once), through the outbound queue
//     with MAIL FROM:<> and Auto-Submitted, and are delivered locally to
//     a local sender; never to lists, bulk or automated mail, bounces,
//     system senders, the user or mail that does not name the user;
//   - broken and oversized scripts, and one script too many, are refused
//     with a reason by PUTSCRIPT, CHECKSCRIPT, HAVESPACE and the API.
//
// It owns only tests. It must never reach outside loopback: every remote
// MX is the harness's sink, every lookup goes to the harness's DNS.
package sieve_test
