// Package delivery is the one path a message takes from a protocol into
// the store: SMTP (MX and submission), IMAP APPEND, and later the web
// composer and the outbound queue's local deliveries all go through it.
// It works in two phases, as maddy's delivery targets do: the envelope is
// decided first, the message committed last.
//
//	d, err := p.Begin(ctx, Envelope{...})   // how it arrived, from whom
//	err = d.AddRecipient(ctx, "a@b.test")   // or d.AddMailbox for APPEND
//	err = d.Body(ctx, r, maxSize)           // durable on W replicas, summary parsed
//	res, err := d.Commit(ctx)               // checks, then one Raft commit
//	d.Abort()                               // any time before Commit: forget it
//
// What it owns:
//   - Recipient resolution: local domain or relay, accounts, aliases,
//     catch-all, +tags, forwarding, disabled accounts, quota. Each decision
//     follows every rule change acknowledged anywhere before it: a scoped
//     read barrier (addressing) before resolving, and a full read barrier
//     before refusing a mailbox that looks full (usage is outside that
//     scope; mail expunged elsewhere a moment ago may have made room).
//   - Sender ownership for authenticated senders.
//   - The quota check once the size is known, before the body is durable.
//   - The checks stage (Check): run after the body is stored and before
//     the commit; where spam verdicts, filtering rules and the outbound
//     queue's routing plug in.
//   - The commit: one Raft command and one outcome for all recipients;
//     per-recipient failures become one typed error (ErrPartial when some
//     recipients got the message and others did not).
//   - Typed errors (errors.go) that each protocol maps to its own replies
//     in one place.
//
// Invariants: nothing is committed before the body is durable on W
// replicas and every check passed; a recipient that cannot be stored in
// full (unknown, relay, external forwarding, disabled, full) is refused
// when it is added, never accepted and dropped; every store error that is
// not a decision about the message stays temporary (it is passed on
// wrapped, so replication's typed errors still match).
//
// It must never import protocol/* or node, know about a wire format
// (replies, dot-stuffing, literals), keep package-level mutable state, or
// commit a message in more than one Raft command.
package delivery
