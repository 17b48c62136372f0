// Package state is the mailbox state machine: the data every node holds in
// its local bbolt file and changes only by applying committed Raft entries.
//
// Its one job is to turn an ordered log of commands (Deliver, Append, Copy,
// SetFlags, Expunge, CreateMailbox, AddAccount, QueueClaim, TrainSpam, …)
// into accounts, mailboxes, message records, flag indexes, the outbound
// queue, blob reference counts, the spam classifier's token counts, users'
// Sieve scripts and vacation records, and greylisting triplets,
// identically on every node, and to serve consistent reads of that data.
//
// Invariants it keeps:
//   - Apply is deterministic: the proposer's time travels in every command;
//     Apply reads no clock, draws no randomness, reads no local settings, and
//     never lets map iteration order reach a result or a stored byte.
//   - The last applied index and term are stored in the same bbolt
//     transaction as the data; entries at or below it are skipped, so a log
//     replay after a restart has no effect.
//   - A proposal ID applies once: a retry returns the first result.
//   - In a mailbox, UIDs strictly increase and are never reused, UIDNEXT is
//     above every UID, MODSEQ (the Raft index of the change) only grows, and
//     UIDVALIDITY never changes while the mailbox lives; every UIDVALIDITY
//     ever issued is unique, so a recreated name always gets a new one.
//   - A blob's reference count equals the number of message records and
//     outbound queue entries naming it; an account's usage equals the sum of its messages' sizes; a
//     mailbox's counters and flag indexes match its message records.
//   - The outbound queue's times are judged by the queue clock, which only
//     QueueTick (proposed by the leader) moves, and only forward. A queue
//     entry is leased to one claim at a time; the claim's log index is its
//     fencing token, and a renewal or report under any other token changes
//     nothing.
//   - A failing command (mailbox exists, quota exceeded, too many
//     mailboxes, …) writes nothing and is a normal result; Apply fails only
//     for an unknown command type, a malformed payload or a storage error,
//     and then the node must stop. The one exception: an unknown type whose
//     byte carries the ignore-if-unknown flag (0x80, an advisory command of
//     a newer version) is skipped, logged once per type.
//
// Every command kind is one entry in commandKinds (kinds.go): its type
// byte, payload type, handler, result kind and whether it changes
// addressing. Adding a command is a payload type (commands.go), a handler
// and that entry; nothing else switches on the kind.
//
// What it must never do: write outside Apply and Restore, hash passwords,
// touch blob bytes, or import anything from the project but consensus.
package state
