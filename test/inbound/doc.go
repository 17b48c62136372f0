// Package inbound holds the end-to-end tests of the checks on mail from
// other servers (issue 13): real 3-node in-process clusters, messages sent
// through the real SMTP MX port, and the sender's DNS (SPF, DKIM keys,
// DMARC policies, blocklists) published in the harness's loopback DNS.
// DKIM signatures are made by dkimpy (python3-dkim), a signer that shares
// no code with the verifier. The tests assert what a sender sees on the
// wire and what the recipient finds stored, read through another node;
// none asserts timing beyond "not before the greylisting delay".
package inbound
