// Package outbound is the SMTP client of the outbound queue: it hands one
// message, with one or more recipients at one domain, to that domain's mail
// exchanger (or to a configured relay host) and says, per recipient, what
// happened.
//
//	c, _ := outbound.New(outbound.Config{Hostname: "mx.example.org", Resolver: r})
//	results := c.Send(ctx, "example.com", msg, fencingCheck)
//
// What it owns:
//   - Routing (RFC 5321 §5): MX records in preference order, randomised among
//     equal preferences; the domain's own A/AAAA records when it has no MX;
//     a null MX (RFC 7505) fails every recipient permanently (5.1.10); every
//     address of a host is tried in turn, IPv4 and IPv6 alternating.
//   - Transport security per destination: MTA-STS (RFC 8461, policy fetched
//     over HTTPS through the Resolver and cached per Client by max_age),
//     DANE (RFC 7672) where the Resolver says the TLSA answer is
//     DNSSEC-authentic, else opportunistic STARTTLS without certificate
//     checks. A policy that cannot be met is a temporary failure that says so.
//   - Extension negotiation: SIZE, 8BITMIME, SMTPUTF8 and DSN. A message the
//     remote cannot take as it is fails permanently with a clear reason; it is
//     never changed to fit.
//   - One transaction for all the recipients of one Send, per-recipient
//     results from RCPT and from DATA, and the fencing hook: beforeCommit runs
//     just before the final dot, and an error from it abandons the
//     transaction (the connection is dropped without the dot).
//   - A small pool of idle connections per destination (reused with RSET) and
//     a per-destination concurrency limit.
//   - The classification of every outcome (Result): delivered, temporary or
//     permanent, with the reply code, enhanced code, text and remote host.
//
// It must never import node, protocol/*, replication or dnsclient (it
// declares the Resolver it needs), never use the system resolver (every name
// is resolved through Config.Resolver), never retry on its own beyond the
// hosts of one Send (the queue owns the schedule), never alter a message
// (downgrade, conversion, truncation) and never keep package-level mutable
// state.
package outbound
