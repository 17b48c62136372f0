package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
)

// Config is what the node hands the SMTP server.
type Config struct {
	Store *replication.Store
	// Pipeline delivers the messages; nil: one over Store, without checks.
	Pipeline *delivery.Pipeline
	Hostname string      // name in the banner and Received headers
	TLS      *tls.Config // nil: no STARTTLS, no implicit-TLS port
	Limiter  *auth.Limiter
	Logger   *slog.Logger
	Metrics  prometheus.Registerer
	Options  Options
	// HandshakeTimeout bounds the TLS handshake on the implicit-TLS port
	// (465). Default 30s.
	HandshakeTimeout time.Duration
}

// mode is what a listener serves.
type mode int

const (
	modeMX          mode = iota // inbound mail for local domains, no AUTH
	modeSubmission              // STARTTLS, AUTH before MAIL
	modeSubmissions             // implicit TLS, AUTH before MAIL
)

func (m mode) String() string {
	switch m {
	case modeSubmission:
		return "submission"
	case modeSubmissions:
		return "submissions"
	}
	return "mx"
}

// Server serves inbound MX and submission on one node. Safe for concurrent
// use; Close stops everything.
type Server struct {
	cfg     Config
	opts    Options
	store   backend
	deliver *delivery.Pipeline
	limiter *auth.Limiter
	log     *slog.Logger
	metrics *metrics
	conns   *auth.ConnLimit // open connections, in total and per client
	msgRate *auth.Rate      // messages per client per minute on the MX port

	ctx    context.Context // canceled by Close: aborts lookups and deliveries
	cancel context.CancelFunc

	servers [3]*gosmtp.Server // by mode

	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	inflight  sync.WaitGroup // deliveries and refusal writers; Add only under mu while !closed
}

// NewServer builds the server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("smtp: no store")
	}
	return newServer(cfg, storeBackend{cfg.Store})
}

func newServer(cfg Config, store backend) (*Server, error) {
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Limiter == nil {
		cfg.Limiter = auth.NewLimiter(auth.LimiterOptions{})
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("smtp: metrics: %w", err)
	}
	opts := cfg.Options.withDefaults(store.maxMessageSize())
	if cfg.Options.MaxMessageSize > opts.MaxMessageSize {
		cfg.Logger.Warn("smtp max message size lowered to fit the store's limit", "asked", cfg.Options.MaxMessageSize, "used", opts.MaxMessageSize)
	}
	if cfg.Pipeline == nil {
		cfg.Pipeline = delivery.New(delivery.Config{Store: store, Logger: cfg.Logger})
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, opts: opts, store: store, deliver: cfg.Pipeline, limiter: cfg.Limiter, log: cfg.Logger, metrics: m,
		conns:   auth.NewConnLimit(opts.MaxConnections, opts.MaxConnectionsPerIP).WithRate(opts.ConnectionRatePerIP),
		msgRate: auth.NewRate(opts.MessageRatePerIP, time.Minute, nil),
		ctx:     ctx, cancel: cancel,
	}
	for _, md := range []mode{modeMX, modeSubmission, modeSubmissions} {
		s.servers[md] = s.newGoSMTP(md)
	}
	return s, nil
}

func (s *Server) newGoSMTP(md mode) *gosmtp.Server {
	gs := gosmtp.NewServer(gosmtp.BackendFunc(func(c *gosmtp.Conn) (gosmtp.Session, error) {
		return s.newSession(c, md)
	}))
	gs.Domain = s.cfg.Hostname
	gs.TLSConfig = s.cfg.TLS
	gs.MaxRecipients = s.opts.MaxRecipients
	gs.MaxMessageBytes = s.opts.MaxMessageSize
	// go-smtp counts a line's bytes plus one; our own check (bodyReader)
	// gives the clearer reply for message data, this one guards commands.
	gs.MaxLineLength = s.opts.MaxLineLength + 2
	// Whether AUTH may go in plain text is decided per connection
	// (session.AuthMechanisms): loopback or TLS only.
	gs.AllowInsecureAuth = true
	// Only a signal to conn (a command line is being read); conn sets the
	// real deadlines, see conn.Read.
	gs.ReadTimeout = s.opts.CommandTimeout
	gs.WriteTimeout = s.opts.WriteTimeout
	gs.EnableSMTPUTF8 = true
	gs.EnableDSN = true // parameters accepted; this server is the final hop
	gs.ErrorLog = errorLog{s.log.With("listener", md.String())}
	return gs
}

// ServeMX serves inbound mail (port 25) on ln.
func (s *Server) ServeMX(ln net.Listener) error { return s.serve(ln, modeMX) }

// ServeSubmission serves submission with STARTTLS (port 587) on ln.
func (s *Server) ServeSubmission(ln net.Listener) error { return s.serve(ln, modeSubmission) }

// ServeSubmissions serves submission over implicit TLS (port 465) on ln.
func (s *Server) ServeSubmissions(ln net.Listener) error {
	if s.cfg.TLS == nil {
		_ = ln.Close()
		return errors.New("smtp: implicit-TLS submission needs a TLS certificate")
	}
	return s.serve(ln, modeSubmissions)
}

func (s *Server) serve(ln net.Listener, md mode) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return net.ErrClosed
	}
	l := s.newListener(ln, md)
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	s.log.Info("smtp listening", "listener", md.String(), "addr", ln.Addr().String())
	return s.servers[md].Serve(l)
}

// Close stops every listener and session. Deliveries under way get
// ShutdownGrace to finish first, so one whose commit is in flight answers
// with its real outcome: a 250 for a stored message, never a refusal its
// sender would retry (a duplicate). Only then are their contexts canceled
// (a commit cut short answers "it may have been stored") and, once they
// have answered, the connections closed.
func (s *Server) Close() error { return s.close(s.opts.ShutdownGrace) }

// Abort stops like a crash: deliveries under way are canceled at once.
func (s *Server) Abort() error { return s.close(0) }

func (s *Server) close(grace time.Duration) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	if grace > 0 && !s.waitDeliveries(grace) {
		s.log.Warn("smtp: deliveries still running after the shutdown grace period; canceling them")
	}
	s.cancel()
	if grace > 0 {
		s.waitDeliveries(5 * time.Second) // their replies, before the connections close
	}
	for _, gs := range s.servers {
		_ = gs.Close()
	}
	if !s.waitDeliveries(30 * time.Second) {
		s.log.Warn("smtp: deliveries still running after close")
	}
	return nil
}

// waitDeliveries waits up to d for the deliveries under way to return.
func (s *Server) waitDeliveries(d time.Duration) bool {
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// begin registers work that Close must wait for; false once closing.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inflight.Add(1)
	return true
}

// refuseConn answers a connection over a limit with 421 (inside TLS on
// the implicit-TLS port). The caller closes it.
func (s *Server) refuseConn(raw net.Conn, reply string, implicitTLS bool) {
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	var w net.Conn = raw
	if implicitTLS {
		tc := tls.Server(raw, s.cfg.TLS)
		if err := tc.HandshakeContext(s.ctx); err != nil {
			return
		}
		w = tc
	}
	_, _ = w.Write([]byte(reply))
}

// errorLog sends go-smtp's own log lines to slog: connection errors at
// debug level (clients vanish all the time), panics at error level.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Printf(format string, v ...any) { l.print(fmt.Sprintf(format, v...)) }
func (l errorLog) Println(v ...any)               { l.print(fmt.Sprint(v...)) }

func (l errorLog) print(msg string) {
	if strings.Contains(msg, "panic") {
		l.log.Error("smtp: " + msg)
		return
	}
	l.log.Debug("smtp: " + msg)
}
