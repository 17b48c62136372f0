// Package web serves each node's HTTP endpoints: /healthz (the process is
// up), /readyz (it has a leader and is caught up), /metrics (Prometheus) and
// the admin API under /api/, which requires the admin bearer token.
//
// It declares the small interfaces it needs from the node and the store and
// must never import the node package. Admin responses are JSON; errors are
// {"error": "..."} with a status code that says whose fault it was.
package web
