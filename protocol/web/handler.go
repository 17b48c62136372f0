package web

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Cluster is what the HTTP endpoints need from the node.
type Cluster interface {
	ClusterStatus(ctx context.Context) (ClusterStatus, error)
	// Ready returns nil when the node has a leader and has applied the log
	// up to the leader's commit index (within a small lag).
	Ready(ctx context.Context) error
	// Leave departs the cluster gracefully and then stops the node.
	Leave(ctx context.Context) error
}

// Options configures the handler.
type Options struct {
	Cluster Cluster
	Token   string       // admin bearer token; empty disables /api
	Metrics http.Handler // serves /metrics
	Admin   Admin        // domains, users and aliases; nil leaves those routes out
	Logger  *slog.Logger
	// Extra registers more admin routes (method and path patterns under
	// /api/) that share the token check.
	Extra map[string]http.HandlerFunc
}

// NewHandler returns the node's HTTP handler.
func NewHandler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := o.Cluster.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	api := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, requireToken(o.Token, h))
	}
	api("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st, err := o.Cluster.ClusterStatus(ctx)
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, err)
			return
		}
		WriteJSON(w, http.StatusOK, st)
	})
	api("POST /api/leave", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := o.Cluster.Leave(ctx); err != nil {
			WriteError(w, http.StatusConflict, err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"result": "left the cluster; the node is shutting down"})
	})
	if o.Admin != nil {
		for pattern, h := range adminRoutes(o.Admin) {
			api(pattern, h)
		}
	}
	for pattern, h := range o.Extra {
		api(pattern, h)
	}
	return mux
}

// requireToken lets a request through only with "Authorization: Bearer <token>".
func requireToken(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			WriteError(w, http.StatusForbidden, errors.New("the admin API is disabled on this node (no admin_token set)"))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailcluster"`)
			WriteError(w, http.StatusUnauthorized, errors.New("missing or wrong admin token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// WriteJSON writes v as the JSON response body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes {"error": "..."}.
func WriteError(w http.ResponseWriter, status int, err error) {
	WriteJSON(w, status, map[string]string{"error": err.Error()})
}
