// Package reputation judges a client of the MX by its address and
// history, before its message is read: greylisting (with its state in the
// replicated store, so every MX node knows a triplet another node has
// seen) and DNS blocklists. Each is a delivery.EnvelopeCheck. (Connection
// and message rates per client are the protocols' own: protocol/auth.)
//
// Refusals are *delivery.RejectedError with the reply a sender sees:
// greylisting is temporary (451 4.7.1), a blocklist listing is
// permanent (550 5.7.1). A lookup or store failure never refuses mail for
// good: greylisting answers "try again later", a blocklist that does not
// answer counts as not listing.
//
// It must never import protocol/* or node, or keep package-level mutable
// state.
package reputation
