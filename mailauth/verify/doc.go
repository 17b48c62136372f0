// Package verify checks who sent an arriving message before it is stored:
// SPF (RFC 7208) for the envelope sender, DKIM (RFC 6376) for the
// signatures in the message, DMARC (RFC 7489) for the From domain, and
// iprev (RFC 8601 §3) for the client address. It writes the outcome as
// one Authentication-Results header field (RFC 8601) to prepend, and tells
// which arriving Authentication-Results fields claim to be ours (Forged),
// so the caller can drop them before storing.
//
// Invariants:
//   - Every DNS question goes through the Resolver in Config (the node's
//     dnsclient.Resolver). The SPF, DKIM and DMARC libraries are handed
//     adapters over it; none of them may fall back to the system resolver.
//   - DNS trouble is a result (temperror), never an error: Check fails only
//     when the message itself cannot be read.
//   - Everything read from outside is bounded: the header block
//     (MaxHeaderBytes), the message (Config.MaxMessageBytes), the number of
//     signatures verified (Config.MaxSignatures), the PTR names tried, the
//     SPF lookups (the library's RFC limits) and the time of the whole check
//     (Config.Timeout).
//   - The header field it writes carries only values it has checked to be
//     plain tokens (domain names, simple addresses), so a hostile signature
//     or envelope cannot inject text into it.
//
// It must never: import a project package other than dnsclient (for its MX
// type and error kinds), keep package-level mutable state, decide what
// happens to the message (the caller reads Result.Policy and the results),
// or look anything up through net.DefaultResolver.
package verify
