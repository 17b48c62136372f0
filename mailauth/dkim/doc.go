// Package dkim signs outgoing mail with DKIM (RFC 6376) and makes the keys
// and DNS records for it.
//
// Its one job: given a message and a domain's active keys, produce the
// DKIM-Signature header fields to prepend — one per key, normally an
// Ed25519 signature (RFC 8463) and an RSA-2048 one, so receivers that do
// not know Ed25519 still find a signature they can check. It also generates
// key pairs (NewPair, with selector names unique per domain) and formats a
// key's public half as the TXT record to publish (Key.Record).
//
// Invariants:
//   - Every signature uses relaxed/relaxed canonicalization and SHA-256, and
//     signs the recommended header set (RFC 6376 §5.4.1) where present, with
//     From oversigned: nobody can add a second From without breaking it.
//   - Sign reads the message once, whatever the number of keys.
//   - Private key bytes never reach a log, an error or a printed value:
//     PrivateKey formats as "[redacted]" with every fmt verb and in slog.
//
// It must never: import a project package (it sits below replication and
// node), look anything up in DNS, or read a clock other than the one the
// signing library stamps t= with.
package dkim
