// Package imap serves IMAP4rev1 and IMAP4rev2 (go-imap/v2's imapserver)
// over the replicated mail store, on every node of the cluster.
//
// Its one job: turn IMAP commands into replication.Store calls and the
// store's change feed into the untagged responses each client must see.
//
// Invariants:
//   - A session's sequence numbers are its own: every session keeps the list
//     of UIDs its client knows (mailboxView) and changes it only while it
//     writes the matching EXISTS or EXPUNGE. Expunges by others are held back
//     while a FETCH, STORE or SEARCH runs (RFC 3501 7.4.1) and the messages
//     they removed answer as gone, never with another message's data.
//   - Nothing is acknowledged before it is committed: OK after APPEND, STORE,
//     COPY, MOVE, EXPUNGE, CREATE, DELETE, RENAME, SUBSCRIBE comes only after
//     the store returned (body on W replicas, Raft entry committed and
//     applied here). A cluster without quorum gets NO [UNAVAILABLE] and the
//     connection stays up.
//   - SELECT, EXAMINE and STATUS pass a read barrier first, so they show
//     everything acknowledged anywhere before the command started (DESIGN.md
//     §1.4); without a quorum they answer NO [UNAVAILABLE]. LIST tries the
//     barrier too but falls back to this node's state. A session sees its
//     own writes at once because the store applies them on this node before
//     returning.
//   - EXAMINE is read-only: the session refuses STORE, EXPUNGE and MOVE and
//     never sets \Seen; CLOSE expunges nothing.
//   - ENVELOPE, BODYSTRUCTURE, RFC822.SIZE and top-level header fetches come
//     from the stored summary; bodies are opened only for sections that need
//     their bytes and for SEARCH BODY/TEXT once the cheap keys still match.
//   - A panic in one session is recovered, logged and ends that connection
//     only; the change feed never runs session code.
//   - imapserver reads every connection through a guardConn (guard.go): it
//     gets one line, or accepted literal data, at a time, so client data
//     is never run as a command (an over-long line ends in BAD and the
//     connection closing; a literal it would refuse silently is answered at
//     once). The library never sees a *tls.Conn: TLS we terminate is
//     served by the "tls" imapserver instance, and the guard answers
//     STARTTLS itself.
//   - A client never sees a keyword in FETCH before a FLAGS response that
//     lists it. NO [SERVERBUG] means a bug of ours, never a client's
//     mistake.
//
// It must never import node, keep package-level mutable state, or let a
// client's input size decide how much memory a command takes beyond the
// message-size limit.
package imap
