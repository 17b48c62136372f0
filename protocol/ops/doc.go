// Package ops serves a node's operations endpoints on its operations
// listener (http_addr, on loopback unless the operator says otherwise):
// /healthz (the process is up), /readyz (it has a leader and is caught up),
// /metrics (Prometheus) and the admin API under /api/, which requires the
// admin bearer token and throttles clients that present a wrong one.
//
// It is for operators and their tools only, and must never face users: it
// never serves webmail, user logins or anything a mail user's browser
// loads. The web interface for users is a separate listener with its own
// package, limits and authentication; nothing here is shared with it by
// accident (no handler is mounted on both).
//
// Wire types are in package api, which clients share. This package
// declares the small interfaces it needs from the node and the store and
// must never import the node package. Errors are {"error": "..."} with a
// status code that says whose fault it was; request bodies are small JSON
// documents, refused whole (400) if anything follows the document.
package ops
