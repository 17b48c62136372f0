// Package chaos breaks a running three-node cluster on purpose, over and
// over, while mail flows, and counts what the cluster lost.
//
// A Run drives a Target (the docker-compose deployment, or the in-process
// harness of test/cluster) through a schedule of faults: kill -9 of the
// leader or a follower, freezing a node past the election timeout, cutting
// the leader off from the others while clients can still reach it, losing a
// node's disk, and a rolling restart. Meanwhile SMTP senders deliver to
// random nodes and write every answer into a Ledger (Message-ID, body hash,
// and what the server replied), and IMAP workers on random nodes flag, move
// and expunge their own account's messages, tracking the state each
// acknowledged operation promised.
//
// After each fault heals, and at the end, the Checker reads every mailbox on
// every node and holds it against the Ledger.
//
// Invariants the checks enforce (DESIGN.md §1):
//   - every message answered 250 is present exactly once, in the mailbox and
//     with the flags the acknowledged IMAP operations left it in, bit-exact,
//     on every node; an operation whose outcome is unknown (connection lost
//     after the command was sent) may have happened or not, but exactly once;
//   - a message refused with a 4xx is not delivered anyway;
//   - UIDs are never reused within a mailbox, new UIDs only grow, and
//     UIDVALIDITY never changes; every node shows the same UIDs and flags;
//   - a node cut off from the others never acknowledges a write;
//   - every body is back on R nodes once the cluster has healed.
//
// Any violation fails the run: a test built on it never hides a loss. The
// package never changes the system under test; it only talks to it through
// its public ports (SMTP, IMAP, HTTP) and, to count body copies, through the
// authenticated cluster port with the cluster secret.
package chaos
