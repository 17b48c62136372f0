// Package smtp is the SMTP front door of a node, built on go-smtp: inbound
// mail for the cluster's domains (MX, no AUTH) and authenticated submission
// (587 with STARTTLS, 465 with implicit TLS), both delivering through the
// replicated store.
//
// Every message goes through the delivery pipeline (package delivery):
// MAIL begins a delivery, RCPT adds a recipient (resolved there), DATA or
// BDAT streams the body into it and commits. This package keeps what is
// SMTP's own: the wire (replies, DATA's dot-stuffing and its end, BDAT),
// the message data rules, trace headers and the session limits; the
// pipeline's typed errors become replies in one place (replies.go).
//
// Invariants:
//   - A 250 after DATA/BDAT is sent only after the delivery's Commit
//     returned nil: the body is durable on W replicas and the metadata
//     committed (DESIGN.md §1). Every internal problem is a 4xx; only the
//     client's own data, a check's permanent verdict or a permanent
//     recipient state is refused with 5xx.
//   - Recipients are resolved at RCPT time; a recipient that cannot be
//     stored in full (unknown, relay, external forwarding, disabled, full)
//     is refused there, never accepted and dropped.
//   - Message data is streamed to the store (never held in memory) through
//     bodyReader, which refuses bare LF/CR, NUL bytes, over-long lines and
//     malformed headers before anything is committed. DATA ends at the
//     first CRLF.CRLF and nowhere else (data.go reads it, not go-smtp), so
//     neither a bare LF nor a bare CR next to a line end ends or hides the
//     end of a message; the size limit is the advertised SIZE, exactly.
//   - Every limit is in Options; timeouts end in 4xx replies; a slow upload
//     that keeps sending is never cut (see conn). The command and error
//     limits count each command, pipelined ones included.
//
// It must never: acknowledge a message it has not committed, relay for an
// unauthenticated client, accept a password in plain text from a remote
// client, or keep package-level mutable state.
package smtp
