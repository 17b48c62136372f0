package listen

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
)

// DefaultHandshakeTimeout bounds an implicit-TLS handshake unless
// Options.HandshakeTimeout says otherwise.
const DefaultHandshakeTimeout = 30 * time.Second

// Backoff bounds for retrying a temporary Accept error.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Options shape a Listener. The zero value accepts everything in plain TCP.
type Options struct {
	// Name is the endpoint, for logs ("imaps", "submission", ...).
	Name string
	// TLS makes this an implicit-TLS port: Accept returns *tls.Conn values
	// whose handshake is complete.
	TLS *tls.Config
	// HandshakeTimeout bounds that handshake. Default 30s.
	HandshakeTimeout time.Duration
	// Limit is the server's connection limit (shared by its ports); nil:
	// none.
	Limit *auth.ConnLimit
	// Refuse is told about a connection over Limit, before it is closed
	// (here, after Refuse returns). It runs on its own goroutine and gets
	// the plain TCP connection, with a write deadline set; on an
	// implicit-TLS port nothing is written unless Refuse does the TLS.
	Refuse func(c net.Conn, why auth.Refusal)
	// Wrap, if set, wraps each admitted connection (under TLS, if any).
	// The returned connection must call release once, when it is closed.
	// Without Wrap, the connection does that itself.
	Wrap   func(c net.Conn, release func()) net.Conn
	Logger *slog.Logger
}

// Listener is a net.Listener over another one, with the retry policy,
// connection limit and handshake deadline of the package doc. Close stops
// it and closes connections still in their handshake.
type Listener struct {
	inner net.Listener
	opts  Options
	log   *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	conns  chan net.Conn
	failed chan struct{} // closed when the inner listener failed for good
	err    error         // why, set before failed is closed
	wg     sync.WaitGroup
	once   sync.Once
}

// New starts accepting on inner.
func New(inner net.Listener, opts Options) *Listener {
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		inner: inner, opts: opts, log: opts.Logger.With("endpoint", opts.Name),
		ctx: ctx, cancel: cancel, conns: make(chan net.Conn), failed: make(chan struct{}),
	}
	l.wg.Add(1)
	go l.loop()
	return l
}

// Accept returns the next admitted connection (TLS done, on an
// implicit-TLS port). After Close it returns net.ErrClosed; after the
// inner listener failed for good, that error.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	case <-l.failed:
		select {
		case c := <-l.conns:
			return c, nil
		default:
		}
		return nil, l.err
	}
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting, closes the inner listener and every connection
// not yet returned by Accept, and waits for the accept loop to end.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		err = l.inner.Close()
		l.wg.Wait()
	})
	return err
}

func (l *Listener) loop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			if Temporary(err) {
				backoff = min(max(2*backoff, minBackoff), maxBackoff)
				l.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-l.ctx.Done():
					t.Stop()
					return
				}
				continue
			}
			l.err = err
			close(l.failed)
			return
		}
		backoff = 0
		l.admit(c)
	}
}

// admit applies the connection limit and, on an implicit-TLS port, starts
// the handshake; it never waits on the client.
func (l *Listener) admit(c net.Conn) {
	release := func() {}
	if l.opts.Limit != nil {
		rel, why := l.opts.Limit.Admit(auth.ClientIP(c.RemoteAddr()))
		if rel == nil {
			l.log.Info("connection refused", "remote", c.RemoteAddr().String(), "limit", why)
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer c.Close()
				if l.opts.Refuse != nil {
					_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					l.opts.Refuse(c, why)
				}
			}()
			return
		}
		release = rel
	}
	var conn net.Conn
	if l.opts.Wrap != nil {
		conn = l.opts.Wrap(c, release)
	} else {
		conn = &releasing{Conn: c, release: release}
	}
	if l.opts.TLS == nil {
		l.hand(conn)
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tc := tls.Server(conn, l.opts.TLS)
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.HandshakeTimeout)
		defer cancel()
		// On the deadline, HandshakeContext closes the connection itself.
		if err := tc.HandshakeContext(ctx); err != nil {
			l.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			_ = conn.Close()
			return
		}
		l.hand(tc)
	}()
}

// hand gives c to Accept, or closes it if the listener closes first.
func (l *Listener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.ctx.Done():
		_ = c.Close()
	}
}

// Temporary reports whether an Accept error is worth retrying: a timeout,
// the process or system out of file descriptors or buffers, or a
// connection that went away before it was accepted.
func Temporary(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// releasing frees its connection slot once, when closed.
type releasing struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *releasing) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Releasing returns c made to call release once, when it is first closed:
// what a Wrap that only counts or logs returns.
func Releasing(c net.Conn, release func()) net.Conn { return &releasing{Conn: c, release: release} }
