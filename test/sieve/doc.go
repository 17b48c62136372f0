// Package sieve_test proves users' Sieve filters end to end through a real
// in-process 3-node cluster (test/cluster): scripts uploaded over
// ManageSieve (STARTTLS, AUTHENTICATE PLAIN) through one node are listed
// by the others and filter mail that arrives through any node's MX port
// (fileinto with flags, discard, redirect with and without keep);
// vacation replies leave once per sender through the outbound queue to
// the harness's loopback sink with the null envelope sender, never to
// lists, bulk mail or bounces; broken scripts are refused with a reason;
// the admin API lists scripts from every node.
//
// It owns only tests. It must never reach outside loopback: every remote
// MX is the harness's sink, every lookup goes to the harness's DNS.
package sieve_test
