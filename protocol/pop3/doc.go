// Package pop3 serves POP3 (RFC 1939) with CAPA and response codes
// (RFC 2449, 3206), STLS and implicit TLS (RFC 2595) and AUTH PLAIN
// (RFC 5034) over the replicated store. The maildrop is the INBOX.
//
// Invariants:
//   - A session's message numbers, sizes and UIDLs come from one consistent
//     view of the INBOX taken at login after a read barrier, and never
//     change during the session (view semantics: there is no maildrop lock;
//     see DESIGN below).
//   - A UIDL is derived from the INBOX's UIDVALIDITY and the message's UID
//     only, so it is the same on every node and forever.
//   - The size LIST and STAT report is exactly the number of octets RETR
//     sends for the message, before dot-stuffing: the stored octets with
//     every bare LF sent as CRLF and the last line terminated.
//   - DELE only marks. Only QUIT in the TRANSACTION state deletes, in one
//     committed store operation, and answers +OK only after the commit. A
//     dropped or timed-out connection deletes nothing.
//
// Design (lock or view). Two sessions on one maildrop may run at once, on
// any nodes. Each works on its login view; deleting a message another
// session already deleted is harmless (the store skips UIDs that are gone),
// and a message deleted elsewhere answers -ERR to RETR/TOP. A cluster-wide
// lock would need a replicated lease and would lock users out after a node
// dies; the view needs nothing new from the store.
//
// It must never import node, never write the store except through Expunge
// (QUIT) and SetFlags (\Seen), and never send a password-bearing command's
// text to the log.
package pop3
