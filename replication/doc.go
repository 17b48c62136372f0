// Package replication is the replicated mail store: the one API the
// protocols (SMTP, IMAP, POP3, admin) use to read and change mail.
//
// Writes go through Raft (package consensus) as commands of the mailbox
// state machine (replication/state); message bodies go to the blob store
// (replication/blob) and to W replicas before the metadata is proposed.
//
// Invariants:
//   - A call that changes state returns nil only after the change is
//     committed on a majority and applied on this node, and (for new
//     bodies) after W durable copies of the body exist.
//   - Any doubt is an error wrapping ErrNoQuorum, never success.
//   - Reads come from the local state, through the read methods (read.go,
//     plain values, never a transaction). Those that open or describe a
//     mailbox (SelectMailbox, MailboxStatus, ListMailboxes, OpenMessages,
//     OpenMailbox) first wait until this node has applied everything
//     committed before the call; the others say in their doc comment why
//     local state is enough. A caller cannot forget the barrier.
//
// Errors are typed (ErrNoQuorum, ErrQuotaExceeded, ErrNoSuchMailbox, …) and
// carry no protocol wording: each protocol maps them to its replies.
// It must never import protocol or node packages.
package replication
