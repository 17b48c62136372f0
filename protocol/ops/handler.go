package ops

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/api"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/managesieve"
)

// Cluster is what the HTTP endpoints need from the node.
type Cluster interface {
	ClusterStatus(ctx context.Context) (api.ClusterStatus, error)
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
	// TokenLimits throttle clients that present wrong admin tokens; zero
	// values take DefaultTokenLimits'.
	TokenLimits auth.LimiterOptions

	// Sieve holds the accounts' Sieve scripts (sieve.go); nil leaves
	// those routes out. SieveCheck compiles a script before it is stored
	// (nil: any UTF-8 text is taken); SieveMaxScriptSize bounds one
	// (default managesieve.DefaultMaxScriptSize). Give both the values
	// the ManageSieve server has, so both refuse the same scripts.
	Sieve              SieveScripts
	SieveCheck         managesieve.Checker
	SieveMaxScriptSize int
}

// DefaultTokenLimits: ten wrong tokens from one address (IPv6: one /64)
// within 15 minutes block it for a minute, doubling up to an hour. While
// blocked, every /api request from it gets 429, a right token included.
func DefaultTokenLimits() auth.LimiterOptions {
	return auth.LimiterOptions{IPFailures: 10, Window: 15 * time.Minute, Block: time.Minute, MaxBlock: time.Hour}
}

// NewHandler returns the node's operations HTTP handler.
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
	g := newGate(o.Token, o.TokenLimits, o.Logger)
	handle := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, g.wrap(h))
	}
	handle("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		st, err := o.Cluster.ClusterStatus(ctx)
		if err != nil {
			WriteError(w, http.StatusServiceUnavailable, err)
			return
		}
		WriteJSON(w, http.StatusOK, st)
	})
	handle("POST /api/leave", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := o.Cluster.Leave(ctx); err != nil {
			WriteError(w, http.StatusConflict, err)
			return
		}
		WriteJSON(w, http.StatusOK, api.Result{Result: "left the cluster; the node is shutting down"})
	})
	if o.Admin != nil {
		for pattern, h := range adminRoutes(o.Admin) {
			handle(pattern, h)
		}
	}
	if o.Sieve != nil {
		for pattern, h := range sieveRoutes(o.Sieve, o.SieveCheck, o.SieveMaxScriptSize) {
			handle(pattern, h)
		}
	}
	for pattern, h := range o.Extra {
		handle(pattern, h)
	}
	return http.MaxBytesHandler(mux, MaxBodyBytes)
}

// gate lets an /api request through only with "Authorization: Bearer
// <token>", and throttles the addresses that present wrong tokens.
type gate struct {
	token []byte
	lim   *auth.Limiter
	log   *slog.Logger
	// mu makes "is this address blocked, is the token right, count the
	// failure" one step, so parallel guesses from one address cannot all
	// pass the check before any of them is counted. (The comparison is
	// cheap; nothing slow runs under it.)
	mu sync.Mutex
}

func newGate(token string, limits auth.LimiterOptions, log *slog.Logger) *gate {
	def := DefaultTokenLimits()
	if limits.IPFailures == 0 {
		limits.IPFailures = def.IPFailures
	}
	if limits.Window == 0 {
		limits.Window = def.Window
	}
	if limits.Block == 0 {
		limits.Block = def.Block
	}
	if limits.MaxBlock == 0 {
		limits.MaxBlock = def.MaxBlock
	}
	return &gate{token: []byte(token), lim: auth.NewLimiter(limits), log: log}
}

func (g *gate) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(g.token) == 0 {
			WriteError(w, http.StatusForbidden, errors.New("the admin API is disabled on this node (no admin_token set)"))
			return
		}
		ip := clientIP(r.RemoteAddr)
		got, presented := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		g.mu.Lock()
		allowed, wait := g.lim.Allow(ip)
		good := allowed && presented && subtle.ConstantTimeCompare([]byte(got), g.token) == 1
		blockedNow := false
		if allowed && presented && !good {
			g.lim.Failed(ip, "")
			ok, _ := g.lim.Allow(ip)
			blockedNow = !ok
		}
		g.mu.Unlock()
		switch {
		case !allowed:
			w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
			WriteError(w, http.StatusTooManyRequests, errors.New("too many wrong admin tokens from this address; try again later"))
		case !good:
			if blockedNow {
				g.log.Warn("admin API: blocking an address after repeated wrong tokens", "client", ip)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailcluster"`)
			WriteError(w, http.StatusUnauthorized, errors.New("missing or wrong admin token"))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// clientIP is the throttling key of a request's peer (IPv6: its /64).
func clientIP(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return remote
	}
	return auth.ClientIP(net.TCPAddrFromAddrPort(ap))
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
	WriteJSON(w, status, api.ErrorBody{Error: err.Error()})
}
