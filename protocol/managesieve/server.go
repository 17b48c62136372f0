package managesieve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/listen"
)

// DefaultMaxScriptSize is the largest script accepted unless
// Options.MaxScriptSize says otherwise.
const DefaultMaxScriptSize = 64 << 10

// Defaults of the limits without an exported name.
const (
	defaultMaxLine    = 8 << 10
	defaultMaxDiscard = 1 << 20
	minMaxLine        = 1024
)

// maxNameLength bounds a script name in octets (RFC 5804 §1.6 asks for at
// least 128 characters; this allows that many 4-octet ones).
const maxNameLength = 512

// Options are the limits and settings an administrator can change. The
// zero value gives the defaults written on each field.
type Options struct {
	// IdleTimeout closes a session that sends no complete command for this
	// long (BYE first). It also bounds one write of a reply. Default 10m.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake after STARTTLS. Default 30s.
	HandshakeTimeout time.Duration
	// StoreTimeout bounds one call to the script store; a call that takes
	// longer is answered NO (TRYLATER). Default 30s.
	StoreTimeout time.Duration
	// MaxScriptSize is the largest script, and the largest literal, read
	// into memory; a larger one is answered NO (QUOTA/MAXSIZE).
	// Default DefaultMaxScriptSize (64 KiB).
	MaxScriptSize int
	// MaxDiscard is how many octets of oversized literals one command may
	// send to be read and thrown away; beyond it the session ends with BYE.
	// Default 1 MiB, at least MaxScriptSize.
	MaxDiscard int64
	// MaxLineLength is the longest line of a command, CRLF included; a
	// longer one is answered NO. Default 8 KiB, at least 1 KiB.
	MaxLineLength int
	// MaxConnections is the most ManageSieve connections this node holds at
	// once; more are refused at connect. Default 500.
	MaxConnections int
	// MaxConnectionsPerIP is the most from one client address (IPv6: one
	// /64). Default 20.
	MaxConnectionsPerIP int
	// MaxAuthFailures failed logins end the session. The shared login
	// throttle applies as well. Default 3.
	MaxAuthFailures int
	// MaxBadCommands NO answers to unknown, malformed or misplaced commands
	// end the session. Default 20.
	MaxBadCommands int
	// MaxCommandsBeforeAuth commands without a successful login end the
	// session. Default 30.
	MaxCommandsBeforeAuth int
}

func (o Options) withDefaults() Options {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = 30 * time.Second
	}
	if o.MaxScriptSize <= 0 {
		o.MaxScriptSize = DefaultMaxScriptSize
	}
	if o.MaxDiscard <= 0 {
		o.MaxDiscard = defaultMaxDiscard
	}
	o.MaxDiscard = max(o.MaxDiscard, int64(o.MaxScriptSize))
	if o.MaxLineLength <= 0 {
		o.MaxLineLength = defaultMaxLine
	}
	o.MaxLineLength = max(o.MaxLineLength, minMaxLine)
	if o.MaxConnections <= 0 {
		o.MaxConnections = 500
	}
	if o.MaxConnectionsPerIP <= 0 {
		o.MaxConnectionsPerIP = 20
	}
	if o.MaxAuthFailures <= 0 {
		o.MaxAuthFailures = 3
	}
	if o.MaxBadCommands <= 0 {
		o.MaxBadCommands = 20
	}
	if o.MaxCommandsBeforeAuth <= 0 {
		o.MaxCommandsBeforeAuth = 30
	}
	return o
}

// Config is what the node hands the server.
type Config struct {
	Store Store
	Auth  Authenticator
	// Check compiles a script before PUTSCRIPT stores it and for
	// CHECKSCRIPT; nil accepts any script that is UTF-8.
	Check Checker
	// Extensions lists the Sieve extensions the interpreter supports, for
	// the SIEVE capability ("fileinto", "envelope", …). Called for every
	// capability listing.
	Extensions func() []string
	// MaxRedirects is advertised as MAXREDIRECTS when above 0: how many
	// redirect actions one script may run.
	MaxRedirects int
	Hostname     string
	TLS          *tls.Config // nil: no STARTTLS
	Limiter      *auth.Limiter
	Logger       *slog.Logger
	Metrics      prometheus.Registerer
	Options      Options
}

// Server serves ManageSieve on any number of listeners.
type Server struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	metrics *metrics
	// idle is opts.IdleTimeout; in-package tests shorten it.
	idle time.Duration

	ctx   context.Context // canceled by Close
	group *listen.Group   // the listeners and sessions Close ends
	limit *auth.ConnLimit
}

// NewServer builds the server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Auth == nil {
		return nil, errors.New("managesieve: no store or authenticator")
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("managesieve: metrics: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Limiter == nil {
		cfg.Limiter = auth.NewLimiter(auth.LimiterOptions{})
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.Extensions == nil {
		cfg.Extensions = func() []string { return nil }
	}
	opts := cfg.Options.withDefaults()
	group := listen.NewGroup()
	return &Server{
		cfg: cfg, opts: opts, log: cfg.Logger, metrics: m, idle: opts.IdleTimeout,
		ctx: group.Context(), group: group,
		limit: auth.NewConnLimit(opts.MaxConnections, opts.MaxConnectionsPerIP),
	}, nil
}

// Serve serves plain connections that may upgrade with STARTTLS (port
// 4190). ManageSieve has no implicit-TLS port. It returns net.ErrClosed
// after Close.
func (s *Server) Serve(ln net.Listener) error {
	opts := listen.Options{
		Name: "managesieve", Limit: s.limit, Logger: s.log,
		Wrap: func(c net.Conn, release func()) net.Conn {
			s.metrics.connections.Inc()
			return listen.Releasing(c, release)
		},
		Refuse: func(c net.Conn, why auth.Refusal) {
			s.metrics.connections.Inc()
			s.metrics.rejected.WithLabelValues(string(why)).Inc()
			_, _ = c.Write([]byte("BYE (TRYLATER) \"too many connections; try again later\"\r\n"))
		},
	}
	return s.group.Serve(ln, opts, func(conn net.Conn) {
		s.metrics.active.Inc()
		defer s.metrics.active.Dec()
		newSession(s, conn).run()
	})
}

// sessionsOpen counts the connections being served.
func (s *Server) sessionsOpen() int { return s.group.Open() }

// Close stops every listener and session and waits for the sessions to
// end. A change already sent to the store is not undone.
func (s *Server) Close() error { return s.group.Close() }
