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
	// LoginIdleTimeout closes a connection that has not logged in after
	// this long without sending anything. Default 30s.
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
// Two imapserver instances share the work, because the library decides per
// server (not per connection) whether a password may travel in plain text:
// "loopback" allows it, for clients on this machine; "strict" allows it only
// inside TLS (STARTTLS or the implicit-TLS port) and advertises
// LOGINDISABLED before that.
type Server struct {
	cfg    Config
	opts   Options
	log    *slog.Logger
	m      *metrics
	bodies *bodyCache

	strict, loopback     *imapserver.Server
	strictLn, loopbackLn *chanListener
	served               sync.WaitGroup // the imapserver Serve loops

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
	s.strict = imapserver.New(s.libraryOptions(false))
	s.loopback = imapserver.New(s.libraryOptions(true))
	return s, nil
}

func (s *Server) libraryOptions(plaintextAuth bool) *imapserver.Options {
	return &imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return s.newSession(c), nil, nil
		},
		Caps:         capabilities(),
		Logger:       libraryLogger{log: s.log, m: s.m},
		TLSConfig:    s.cfg.TLS,
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
	}{{s.strict, s.strictLn}, {s.loopback, s.loopbackLn}} {
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
	tracked := &trackedConn{Conn: raw, preLogin: s.opts.LoginIdleTimeout, active: time.Now()}
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

// route hands an admitted connection to the imapserver instance that
// matches its plain-text-password rule.
func (s *Server) route(conn net.Conn) {
	target := s.strictLn
	if _, isTLS := conn.(*tls.Conn); !isTLS && auth.PlaintextAllowed(conn.RemoteAddr(), false) {
		target = s.loopbackLn
	}
	if !target.deliver(conn, s.ctx.Done()) {
		_ = conn.Close()
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

// trackedConn releases its connection slot once, when closed. Until its
// client logs in, it also caps every read deadline at preLogin after the
// client last sent anything: imapserver gives an idle client 30 s twice
// over (once waiting for input, then again for the command), so a silent
// connection lasted 60 s.
type trackedConn struct {
	net.Conn
	once    sync.Once
	release func()

	preLogin time.Duration
	loggedIn atomic.Bool
	mu       sync.Mutex
	active   time.Time // the client last sent bytes (or connected)
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.loggedIn.Load() {
		c.mu.Lock()
		c.active = time.Now()
		c.mu.Unlock()
	}
	return n, err
}

func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if c.preLogin > 0 && !c.loggedIn.Load() {
		c.mu.Lock()
		limit := c.active.Add(c.preLogin)
		c.mu.Unlock()
		if t.IsZero() || t.After(limit) {
			t = limit
		}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// setLoggedIn tells the connection under an imapserver connection whether
// its client is logged in (the pre-login idle limit applies until then).
func setLoggedIn(nc net.Conn, in bool) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*trackedConn)
	if !ok {
		return
	}
	if !in {
		c.mu.Lock()
		c.active = time.Now()
		c.mu.Unlock()
	}
	c.loggedIn.Store(in)
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
	case strings.HasPrefix(format, "handling"):
		l.log.Warn("imap command failed", "detail", msg)
	default:
		l.log.Debug("imap connection", "detail", msg)
	}
}
