package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/listen"
	"github.com/mailcluster/mailcluster/replication"
)

// Options are the limits and settings an administrator can change. The
// zero value gives the defaults.
type Options struct {
	// MaxConnections caps the open IMAP connections of this node (both
	// ports). Further clients get "* BYE" at once. Default 10000.
	MaxConnections int
	// MaxConnectionsPerIP caps the open connections from one client address
	// (IPv6: one /64). Default 100.
	MaxConnectionsPerIP int
	// MaxMessageSize is the largest APPEND accepted, in bytes, advertised as
	// APPENDLIMIT. Default: the store's limit (max_message_size, 50 MiB).
	// At most 4 GiB - 1.
	MaxMessageSize int64
	// ShutdownGrace is how long Close waits for sessions to end after
	// their connections were closed. Default 10s.
	ShutdownGrace time.Duration
	// LoginIdleTimeout closes a connection that has not logged in and sent
	// nothing for this long ("* BYE Autologout"; the guard enforces it).
	// Default 30s.
	LoginIdleTimeout time.Duration
	// BodyCacheBytes is the memory for recently fetched message bodies
	// (bodies up to 1/16 of it, at most 4 MiB, are kept). Default 64 MiB;
	// negative turns the cache off.
	BodyCacheBytes int64
}

func (o Options) withDefaults(store *replication.Store) Options {
	if o.MaxConnections <= 0 {
		o.MaxConnections = 10000
	}
	if o.MaxConnectionsPerIP <= 0 {
		o.MaxConnectionsPerIP = 100
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = replication.DefaultMaxMessageSize
		if store != nil {
			o.MaxMessageSize = store.MaxMessageSize()
		}
	}
	o.MaxMessageSize = min(o.MaxMessageSize, 1<<32-1)
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	if o.LoginIdleTimeout <= 0 {
		o.LoginIdleTimeout = 30 * time.Second
	}
	switch {
	case o.BodyCacheBytes == 0:
		o.BodyCacheBytes = 64 << 20
	case o.BodyCacheBytes < 0:
		o.BodyCacheBytes = 0
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
	// Pipeline stores APPENDed messages, as every other way in does; nil:
	// one over Store, without checks.
	Pipeline *delivery.Pipeline
	// Trainer learns spam from messages moved into and out of Junk (see
	// junk.go); nil: no training.
	Trainer Trainer
	// HandshakeTimeout bounds the TLS handshake on the implicit-TLS port.
	// Default 30s.
	HandshakeTimeout time.Duration
}

// capabilities is everything advertised beyond what imapserver adds on its
// own (IDLE, UNSELECT, ENABLE, UTF8=ACCEPT, SASL-IR, LITERAL-, STARTTLS,
// AUTH=PLAIN, LOGINDISABLED, APPENDLIMIT=n). Each one's interface is
// implemented by *session; imapserver drops the connection otherwise.
func capabilities() imap.CapSet {
	return imap.CapSet{
		imap.CapIMAP4rev1:        {},
		imap.CapIMAP4rev2:        {},
		imap.CapNamespace:        {},
		imap.CapUIDPlus:          {},
		imap.CapESearch:          {},
		imap.CapSearchRes:        {},
		imap.CapListExtended:     {},
		imap.CapListStatus:       {},
		imap.CapMove:             {},
		imap.CapStatusSize:       {},
		imap.CapBinary:           {},
		imap.CapChildren:         {},
		imap.CapSpecialUse:       {},
		imap.CapCreateSpecialUse: {},
		imap.CapLiteralPlus:      {},
		imap.CapUnauthenticate:   {},
	}
}

// Server serves IMAP on the node's IMAP ports.
//
// Three imapserver instances share the work, because the library decides per
// server (not per connection) whether a password may travel in plain text
// and whether STARTTLS is offered: "loopback" allows plain-text passwords,
// for clients on this machine; "strict" advertises LOGINDISABLED; both
// offer STARTTLS. "tls" serves connections whose TLS this server
// terminates (the implicit-TLS port, and plain ones after STARTTLS): the
// library never sees a *tls.Conn, because every connection reaches it
// through a guardConn (see guard.go), which also answers STARTTLS.
type Server struct {
	cfg    Config
	opts   Options
	log    *slog.Logger
	m      *metrics
	bodies *bodyCache

	strict, loopback, tlsSrv    *imapserver.Server
	strictLn, loopbackLn, tlsLn *chanListener
	served                      sync.WaitGroup // the imapserver Serve loops

	ctx    context.Context // canceled by Close: ends every session's work
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	started   bool
	listeners map[net.Listener]struct{}
	conns     map[*trackedConn]struct{}
	limit     *auth.ConnLimit // open connections, in total and per client

	sessions sync.WaitGroup
	nextID   atomic.Uint64
}

// NewServer builds the server; nothing listens until Serve or ServeTLS.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("imap: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Limiter == nil {
		cfg.Limiter = auth.NewLimiter(auth.LimiterOptions{})
	}
	if cfg.Pipeline == nil {
		cfg.Pipeline = delivery.New(delivery.Config{Store: cfg.Store, Logger: cfg.Logger})
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		opts:      cfg.Options.withDefaults(cfg.Store),
		log:       cfg.Logger,
		m:         m,
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*trackedConn]struct{}),
	}
	s.limit = auth.NewConnLimit(s.opts.MaxConnections, s.opts.MaxConnectionsPerIP)
	s.bodies = newBodyCache(s.opts.BodyCacheBytes)
	s.strictLn = newChanListener()
	s.loopbackLn = newChanListener()
	s.tlsLn = newChanListener()
	s.strict = imapserver.New(s.libraryOptions(false, cfg.TLS))
	s.loopback = imapserver.New(s.libraryOptions(true, cfg.TLS))
	s.tlsSrv = imapserver.New(s.libraryOptions(true, nil))
	return s, nil
}

func (s *Server) libraryOptions(plaintextAuth bool, starttls *tls.Config) *imapserver.Options {
	return &imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return s.newSession(c), nil, nil
		},
		Caps:         capabilities(),
		Logger:       libraryLogger{log: s.log, m: s.m},
		TLSConfig:    starttls, // never used by the library: the guard answers STARTTLS
		InsecureAuth: plaintextAuth,
	}
}

// start runs the two imapserver instances on their in-process listeners,
// once, unless Close came first.
func (s *Server) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.started {
		return
	}
	s.started = true
	for _, p := range []struct {
		srv *imapserver.Server
		ln  *chanListener
	}{{s.strict, s.strictLn}, {s.loopback, s.loopbackLn}, {s.tlsSrv, s.tlsLn}} {
		s.served.Add(1)
		go func() {
			defer s.served.Done()
			if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, net.ErrClosed) && !s.isClosed() {
				s.log.Error("imap server stopped", "err", err)
			}
		}()
	}
}

// Serve serves plain connections that may upgrade with STARTTLS (port 143).
func (s *Server) Serve(ln net.Listener) error { return s.acceptLoop(ln, false) }

// ServeTLS serves implicit-TLS connections (port 993). ln is a plain TCP
// listener; the server does the TLS.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("imap: implicit TLS needs a TLS configuration")
	}
	return s.acceptLoop(ln, true)
}

func (s *Server) acceptLoop(ln net.Listener, implicitTLS bool) error {
	// The shared accept loop: temporary errors (EMFILE too) retried, the
	// connection limits, and on port 993 the TLS handshake within its
	// deadline (a real *tls.Conn, so the library knows it is encrypted: it
	// allows LOGIN and offers no STARTTLS).
	opts := listen.Options{
		Name: "imap", Limit: s.limit, HandshakeTimeout: s.cfg.HandshakeTimeout, Logger: s.log,
		Wrap: s.track,
		Refuse: func(c net.Conn, _ auth.Refusal) {
			s.m.rejected.Inc()
			if !implicitTLS {
				_, _ = c.Write([]byte("* BYE Too many connections, try again later\r\n"))
			}
		},
	}
	if implicitTLS {
		opts.Name, opts.TLS = "imaps", s.cfg.TLS
	}
	l := listen.New(ln, opts)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.Close()
		return net.ErrClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		_ = l.Close()
	}()
	s.start()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("imap: accept: %w", err)
		}
		s.route(c)
	}
}

// track registers an admitted connection so Close can end it; closing it
// frees its connection slot.
func (s *Server) track(raw net.Conn, free func()) net.Conn {
	tracked := &trackedConn{Conn: raw}
	tracked.release = func() {
		s.mu.Lock()
		delete(s.conns, tracked)
		s.mu.Unlock()
		free()
	}
	s.mu.Lock()
	s.conns[tracked] = struct{}{}
	s.mu.Unlock()
	return tracked
}

// route guards an admitted connection and hands it to the imapserver
// instance that matches it: "tls" for a connection whose TLS we
// terminated (port 993: the shared accept loop did the handshake), else
// the one whose plain-text-password rule fits the client. The library is
// never handed an unguarded connection.
func (s *Server) route(conn net.Conn) {
	target := s.strictLn
	switch {
	case isTLS(conn):
		// The "tls" instance allows LOGIN and offers no STARTTLS.
		conn = newGuard(conn, s.opts.LoginIdleTimeout, nil)
		target = s.tlsLn
	case auth.PlaintextAllowed(conn.RemoteAddr(), false):
		target = s.loopbackLn
		fallthrough
	default:
		conn = newGuard(conn, s.opts.LoginIdleTimeout, s.startTLSFunc())
	}
	if !target.deliver(conn, s.ctx.Done()) {
		_ = conn.Close()
	}
}

// startTLSFunc is what a plain connection's guard calls after answering
// STARTTLS: the TLS side of the connection starts over in the "tls"
// instance (its greeting dropped: the client expects none). nil without a
// TLS configuration (the library then answers that STARTTLS is not
// supported).
func (s *Server) startTLSFunc() func(net.Conn) {
	if s.cfg.TLS == nil {
		return nil
	}
	return func(raw net.Conn) {
		g := newGuard(tls.Server(raw, s.cfg.TLS), s.opts.LoginIdleTimeout, nil)
		g.skipGreeting = true
		if !s.tlsLn.deliver(g, s.ctx.Done()) {
			_ = raw.Close()
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// OpenConnections is the number of client connections currently open.
func (s *Server) OpenConnections() int { return s.limit.Open() }

// Close stops every listener and session.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	listeners := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		listeners = append(listeners, ln)
	}
	s.mu.Unlock()
	// Outside s.mu: closing waits for the accept loop, which may be
	// registering a connection (track takes s.mu).
	var errs []error
	for _, ln := range listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	// The library servers' own Close races its Serve (WaitGroup.Add after
	// the closed check): end their loops by closing their listeners, and
	// close the connections here.
	_ = s.strictLn.Close()
	_ = s.loopbackLn.Close()
	_ = s.tlsLn.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	s.served.Wait()
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.opts.ShutdownGrace):
		s.log.Warn("imap sessions still running after shutdown grace period")
	}
	return errors.Join(errs...)
}

// trackedConn releases its connection slot once, when closed.
type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func isTLS(c net.Conn) bool {
	_, ok := c.(*tls.Conn)
	return ok
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// chanListener is an in-process listener: admit hands it connections that
// already passed the limits, and an imapserver instance accepts them.
type chanListener struct {
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// deliver hands c to Accept; false if the listener or server closed first.
func (l *chanListener) deliver(c net.Conn, stop <-chan struct{}) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	case <-stop:
		return false
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return inProcessAddr{} }

type inProcessAddr struct{}

func (inProcessAddr) Network() string { return "inprocess" }
func (inProcessAddr) String() string  { return "imap" }

// libraryLogger routes imapserver's log lines into slog. A client that
// disconnects mid-command is routine (debug); a recovered panic is an error.
// "handling X command: err" comes from an error that is not an *imap.Error:
// the session never returns one (it maps every store error itself), so it
// is the library refusing the client's arguments (a sequence set, date or
// modified UTF-7 name it cannot parse; the guard turns its NO [SERVERBUG]
// into the right reply) or a connection that broke: debug. Only the
// library's own complaints ("imapserver: ...") are worth a warning.
type libraryLogger struct {
	log *slog.Logger
	m   *metrics
}

func (l libraryLogger) Printf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	switch {
	case strings.HasPrefix(format, "panic"):
		l.m.panics.Inc()
		l.log.Error("imap connection panicked; closed it", "detail", msg)
	case strings.HasPrefix(format, "handling") && strings.Contains(msg, "imapserver:"):
		l.log.Warn("imap command failed in the protocol library", "detail", msg)
	case strings.HasPrefix(format, "handling"):
		l.log.Debug("imap command refused by the protocol library", "detail", msg)
	default:
		l.log.Debug("imap connection", "detail", msg)
	}
}
