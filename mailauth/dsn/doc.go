// Package dsn composes and parses delivery status notifications: RFC 3464
// message/delivery-status reports inside an RFC 6522 (formerly 3462)
// multipart/report, the bounce a sender gets when mail for a recipient
// failed for good, is delayed, or (NOTIFY=SUCCESS) was delivered.
//
// Compose makes the whole message: a human-readable text/plain part, the
// machine-readable message/delivery-status part (Reporting-MTA,
// Original-Envelope-Id, Arrival-Date; per recipient Original-Recipient,
// Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code,
// Last-Attempt-Date, Will-Retry-Until), then the original message
// (message/rfc822, RET=FULL) or its header (text/rfc822-headers). It comes
// from MAILER-DAEMON@<reporting host>, carries Auto-Submitted: auto-replied
// (RFC 3834), and is meant to be sent with a null envelope sender. Parse
// reads such a message back (tests, and later, bounces that arrive).
//
// Invariants: text from outside (a remote server's reply, a host name, an
// envelope ID) never breaks the report's structure: control characters
// become spaces and over-long values are cut. Compose is deterministic for
// a given Report (the boundary and Message-ID derive from its content when
// not given).
//
// It must never: import a project package, send anything, or decide
// whether a DSN is due (NOTIFY, null senders, loops: the queue decides).
package dsn
