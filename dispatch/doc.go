// Package dispatch sends the outbound queue: it claims due entries, hands
// them to the SMTP client, renews leases, and reports outcomes with their
// DSNs.
//
// One Worker runs on every node. It wakes on the queue's change feed and a
// short ticker, reads the entries due by the queue clock, and claims its
// share of them (rendezvous hashing of the entry ID over the live members;
// an entry that stays due and unclaimed for longer than Config.Steal is
// claimed by whichever node sees it). Entries of one message, sender and
// recipient domain go in one Send. While a Send runs the worker renews the
// lease every Lease/3; the fencing check before the final dot refuses to
// commit once the lease may have run out by this node's own monotonic
// clock (last successful renewal + Lease − a margin), so a node that cannot
// renew never completes a transaction another node may have started.
// Outcomes are reported under the claim's token: delivered; deferred by the
// retry schedule; failed (permanent, past Expires, or an operator's bounce)
// with a failure DSN (RFC 3464, From MAILER-DAEMON@hostname, null envelope
// sender) committed in the same report. A delayed DSN goes once, when an
// attempt fails after DelayDSNAt. No DSN ever goes to the null sender, and
// NOTIFY=NEVER is honoured.
//
// Every message for the outside is DKIM-signed with the active keys of the
// envelope sender's domain when it is local (a forward's SRS address is in
// the forwarding domain, so it is signed with that domain's keys).
//
// It imports replication, replication/state, outbound and mailauth/*; it
// must never import node or protocol/*, never send the final dot without
// the fencing check, never decide by its own clock whether an entry is due
// (the queue clock does), and never keep package-level mutable state.
package dispatch
