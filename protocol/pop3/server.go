package pop3

import (
	"cmp"
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
	"github.com/mailcluster/mailcluster/replication"
)

// Options are the limits and settings an administrator can change. The
// zero value gives the defaults written on each field.
type Options struct {
	// IdleTimeout closes a connection that sends no command for this long,
	// without deleting anything and without a reply (RFC 1939 §3). It also
	// bounds how long one write of a reply may block. RFC 1939 requires at
	// least 10 minutes; shorter values are raised to that. Default 10m.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake after STLS. Default 30s.
	HandshakeTimeout time.Duration
	// LeaveUnseen keeps RETR from marking messages \Seen. By default every
	// message RETR sent in full (and QUIT did not delete) is marked \Seen
	// for IMAP when the session ends, by QUIT or by disconnection. TOP never
	// marks anything.
	LeaveUnseen bool
	// MaxLineLength is the longest command line accepted, CRLF included;
	// a longer one is answered "-ERR line too long". At least 255 (RFC 2449
	// allows commands that long). Default 1024.
	MaxLineLength int
	// MaxConnections is the most POP3 connections this node holds at once
	// (both ports together); more are refused at connect. Default 1000.
	MaxConnections int
	// MaxConnectionsPerIP is the most connections from one client address
	// (IPv6: one /64). Default 50.
	MaxConnectionsPerIP int
	// MaxAuthFailures failed logins close the connection. The shared login
	// throttle (auth limits) applies as well. Default 3.
	MaxAuthFailures int
	// MaxBadCommands -ERR answers to unknown, malformed or misplaced
	// commands close the connection. Default 20.
	MaxBadCommands int
}

// minIdleTimeout is RFC 1939's floor for the inactivity timer.
const minIdleTimeout = 10 * time.Minute

func (o Options) withDefaults() Options {
	if o.IdleTimeout < minIdleTimeout {
		o.IdleTimeout = minIdleTimeout
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.MaxLineLength == 0 {
		o.MaxLineLength = 1024
	}
	o.MaxLineLength = max(o.MaxLineLength, 255)
	if o.MaxConnections <= 0 {
		o.MaxConnections = 1000
	}
	if o.MaxConnectionsPerIP <= 0 {
		o.MaxConnectionsPerIP = 50
	}
	if o.MaxAuthFailures <= 0 {
		o.MaxAuthFailures = 3
	}
	if o.MaxBadCommands <= 0 {
		o.MaxBadCommands = 20
	}
	return o
}

// Config is what the node hands the server.
type Config struct {
	Store    *replication.Store
	Hostname string
	TLS      *tls.Config // nil: no STLS/STARTTLS, no implicit-TLS port
	Limiter  *auth.Limiter
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	Options  Options
	// HandshakeTimeout bounds the TLS handshake on the implicit-TLS port
	// (995). Default: Options.HandshakeTimeout.
	HandshakeTimeout time.Duration
}

// Server serves POP3 on any number of listeners.
type Server struct {
	hostname string
	tls      *tls.Config
	store    mailStore
	limiter  *auth.Limiter
	log      *slog.Logger
	metrics  *metrics
	opts     Options
	sizes    *sizeCache
	// idle is opts.IdleTimeout; in-package tests shorten it.
	idle time.Duration
	// implicitHandshake bounds the handshake on port 995.
	implicitHandshake time.Duration

	ctx   context.Context // canceled by Close
	group *listen.Group   // the listeners and sessions Close ends
	limit *auth.ConnLimit // open connections, in total and per client
}

// sizeCacheEntries bounds the wire-size cache (about 100 bytes an entry).
const sizeCacheEntries = 200_000

// NewServer builds the server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("pop3: no store")
	}
	return newServer(cfg, storeAdapter{cfg.Store})
}

func newServer(cfg Config, st mailStore) (*Server, error) {
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("pop3: metrics: %w", err)
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
	opts := cfg.Options.withDefaults()
	group := listen.NewGroup()
	s := &Server{
		hostname: cfg.Hostname,
		tls:      cfg.TLS,
		store:    st,
		limiter:  cfg.Limiter,
		log:      cfg.Logger,
		metrics:  m,
		opts:     opts,
		sizes:    newSizeCache(sizeCacheEntries),
		idle:     opts.IdleTimeout,
		ctx:      group.Context(),
		group:    group,
		limit:    auth.NewConnLimit(opts.MaxConnections, opts.MaxConnectionsPerIP),
	}
	s.implicitHandshake = cmp.Or(cfg.HandshakeTimeout, opts.HandshakeTimeout)
	return s, nil
}

// Serve serves plain connections that may upgrade with STLS (port 110).
// It returns net.ErrClosed after Close.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, "pop3", false) }

// ServeTLS serves implicit-TLS connections (port 995) on a plain TCP
// listener: it does the TLS itself.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.tls == nil {
		_ = ln.Close()
		return errors.New("pop3: implicit TLS needs a certificate")
	}
	return s.serve(ln, "pop3s", true)
}

func (s *Server) serve(ln net.Listener, endpoint string, implicitTLS bool) error {
	// The shared accept loop: temporary errors (EMFILE too) retried, the
	// connection limits, and on port 995 the TLS handshake within its
	// deadline.
	opts := listen.Options{
		Name: endpoint, Limit: s.limit, HandshakeTimeout: s.implicitHandshake, Logger: s.log,
		Wrap: func(c net.Conn, release func()) net.Conn {
			s.metrics.connections.WithLabelValues(endpoint).Inc()
			return listen.Releasing(c, release)
		},
		Refuse: func(c net.Conn, why auth.Refusal) {
			s.metrics.connections.WithLabelValues(endpoint).Inc()
			s.metrics.rejected.WithLabelValues(string(why)).Inc()
			// The TLS handshake is not worth doing for it: on the
			// implicit-TLS port the connection is just closed.
			if !implicitTLS {
				_, _ = c.Write([]byte("-ERR [SYS/TEMP] too many connections; try again later\r\n"))
			}
		},
	}
	if implicitTLS {
		opts.TLS = s.tls
	}
	return s.group.Serve(ln, opts, func(conn net.Conn) {
		s.metrics.active.Inc()
		defer s.metrics.active.Dec()
		sess := newSession(s, conn, false)
		if tc, ok := conn.(*tls.Conn); ok { // port 995: the handshake is done
			sess.raw, sess.tls = tc.NetConn(), true
		}
		sess.run()
	})
}

// sessionsOpen counts the connections being served.
func (s *Server) sessionsOpen() int { return s.group.Open() }

// Close stops every listener and session and waits for the sessions to
// end. A session cut off this way deletes nothing.
func (s *Server) Close() error { return s.group.Close() }
