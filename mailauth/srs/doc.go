// Package srs rewrites envelope senders for forwarded mail with the Sender
// Rewriting Scheme (Shevek's SRS, as libsrs2 and Postfix's postsrsd do), so
// a forward passes the destination's SPF check and a bounce of it comes
// back to us, then goes to the original sender.
//
//	SRS0=HHHHHH=TT=orig.example=alice@fwd.example       first forward
//	SRS1=HHHHHH=fwd.example==HHHHHH=TT=orig.example=alice@fwd2.example
//	                                                    re-forward of an SRS0
//
// HHHHHH is an HMAC (SHA-256, base64, 6 characters) over the rest, keyed by
// a key derived from the cluster secret, so every node makes and checks
// the same addresses and nobody outside can make one. TT is the day
// (days since 1970 modulo 1024, two base32 characters); an address older
// than MaxAge (21 days) is refused. The hash is compared without regard to
// case, and computed over lowercased data, because some relays lowercase
// addresses.
//
// It must never: import a project package, read a clock other than the
// one the Rewriter was given, or accept an address whose hash or age does
// not check out.
package srs
