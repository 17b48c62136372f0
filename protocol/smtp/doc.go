// Package smtp is the SMTP front door of a node, built on go-smtp: inbound
// mail for the cluster's domains (MX, no AUTH) and authenticated submission
// (587 with STARTTLS, 465 with implicit TLS), both delivering through the
// replicated store.
//
// Invariants:
//   - A 250 after DATA/BDAT is sent only after replication.Store.Deliver
//     returned nil: the body is durable on W replicas and the metadata
//     committed (DESIGN.md §1). Every internal problem is a 4xx; only the
//     client's own data or a permanent recipient state is refused with 5xx.
//   - Recipients are resolved at RCPT time; a recipient that cannot be
//     stored in full (unknown, relay, external forwarding, disabled, full)
//     is refused there, never accepted and dropped.
//   - Message data is streamed to the store (never held in memory) through
//     bodyReader, which refuses bare LF/CR, NUL bytes, over-long lines and
//     malformed headers before anything is committed. End of DATA is only
//     CRLF.CRLF (go-smtp), so a bare LF never ends a message.
//   - Every limit is in Options; timeouts end in 4xx replies; a slow upload
//     that keeps sending is never cut (see conn).
//
// It must never: acknowledge a message it has not committed, relay for an
// unauthenticated client, accept a password in plain text from a remote
// client, or keep package-level mutable state.
package smtp
