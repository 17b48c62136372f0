package smtp

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/protocol/listen"
)

// listener is what go-smtp serves: the shared accept loop of
// protocol/listen (retries, connection limits, the implicit-TLS handshake
// within its deadline), whose connections are conns, under TLS on the
// implicit-TLS port.
type listener struct {
	*listen.Listener
}

func (s *Server) newListener(ln net.Listener, md mode) *listener {
	opts := listen.Options{
		Name: md.String(), Limit: s.conns, HandshakeTimeout: s.cfg.HandshakeTimeout, Logger: s.log,
		Wrap: func(raw net.Conn, release func()) net.Conn { return newConn(raw, s, md, release) },
		Refuse: func(raw net.Conn, refused auth.Refusal) {
			reply := replyTooManyConns
			if refused == auth.TooManyConnections {
				reply = replyServerBusy
			}
			s.metrics.connRefused.WithLabelValues(md.String(), string(refused)).Inc()
			s.log.Info("connection refused", "listener", md.String(), "remote", raw.RemoteAddr().String(), "limit", refused)
			s.refuseConn(raw, reply, md == modeSubmissions)
		},
	}
	if md == modeSubmissions {
		opts.TLS = s.cfg.TLS
	}
	return &listener{listen.New(ln, opts)}
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if tc, ok := nc.(*tls.Conn); ok {
		// Policy replies before EHLO must go inside TLS.
		if c := connOf(tc); c != nil {
			c.setTop(tc)
		}
	}
	return nc, err
}

// errPolicyClose ends a connection that broke a limit; it reads as a clean
// end of input, so go-smtp closes without another reply.
var errPolicyClose = io.EOF

// conn sits under go-smtp (and under TLS). It keeps what outlives one
// go-smtp session (which restarts at every EHLO and after STARTTLS): the
// session ID, error and command counts, and the read deadlines.
//
// go-smtp sets one absolute read deadline per command line and none during
// DATA (DESIGN.md §7). conn replaces that: go-smtp's SetReadDeadline calls
// only mark "a command line is about to be read" (that is also where
// commands are counted), and every Read sets the real deadline itself:
// CommandTimeout after the start of a command line, or, while a message is
// being received, DataTimeout after the previous read — so a slow upload
// that keeps sending is never cut, and an idle one is. A timeout is sticky:
// later reads fail at once, so the client promptly gets a 4xx and the
// connection closes.
type conn struct {
	net.Conn
	srv     *Server
	mode    mode
	id      string
	started time.Time
	release func()

	closeOnce    sync.Once
	mu           sync.Mutex
	top          net.Conn // where a policy reply goes: this conn or the TLS conn above it; nil when unknown
	lineDeadline time.Time
	timedOut     bool
	inData       bool
	inTxn        bool
	commands     int // outside transactions, since the last message
	errors       int
	closeNow     bool   // end at the next read
	closeReply   string // written first, if not empty
	peerGone     bool   // the client closed its end (EOF or reset seen)
	pushback     []byte // read by peerClosed, not yet passed on
	messages     int
	replied      []func() // run once the next reply is written, or at close
	closed       bool     // Close ran: afterReply runs its fn at once
}

func newConn(raw net.Conn, srv *Server, m mode, release func()) *conn {
	c := &conn{Conn: raw, srv: srv, mode: m, id: newSessionID(), started: time.Now(), release: release}
	c.top = c
	srv.metrics.connections.WithLabelValues(m.String()).Inc()
	return c
}

var sessionIDEncoding = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// newSessionID returns a random 16-character ID for logs and headers.
func newSessionID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return sessionIDEncoding.EncodeToString(b[:])
}

// connOf finds the conn under a go-smtp connection (plain or TLS).
func connOf(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, _ := nc.(*conn)
	return c
}

// SetReadDeadline is called by go-smtp before it reads each command line
// (and by TLS passing the call down). The time given is ignored: see Read.
//
// It is also where the command and error limits are enforced, one command
// at a time: go-smtp reads commands out of its own buffer, so a client that
// pipelines many commands in one write would otherwise have every buffered
// one executed before conn.Read is called again. An error here ends
// go-smtp's read of the line, and io.EOF makes it close the connection
// without a reply of its own (DESIGN.md §7).
func (c *conn) SetReadDeadline(time.Time) error {
	c.mu.Lock()
	c.lineDeadline = time.Now().Add(c.srv.opts.CommandTimeout)
	if !c.inTxn && !c.inData {
		c.commands++
		if c.commands > c.srv.opts.MaxCommandsBeforeMail && !c.closeNow {
			c.closeNow, c.closeReply = true, replyTooManyCommands
			c.srv.metrics.rejected.WithLabelValues(c.mode.String(), "session", "too_many_commands").Inc()
			c.srv.log.Info("closing: too many commands without a message", "session", c.id, "remote", c.RemoteAddr().String())
		}
	}
	if !c.closeNow {
		c.mu.Unlock()
		return nil
	}
	reply, top := c.closeReply, c.top
	c.closeReply = ""
	c.mu.Unlock()
	c.writeCloseReply(reply, top)
	return errPolicyClose
}

// writeCloseReply writes the reply of a policy close, if there is one and
// somewhere safe to write it.
func (c *conn) writeCloseReply(reply string, top net.Conn) {
	if reply != "" && top != nil {
		_ = top.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(top, reply)
	}
}

// SetDeadline sets only the write deadline; read deadlines are conn's own.
func (c *conn) SetDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(t) }

func (c *conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closeNow {
		reply, top := c.closeReply, c.top
		c.closeReply = ""
		c.mu.Unlock()
		c.writeCloseReply(reply, top)
		return 0, errPolicyClose
	}
	if c.timedOut {
		c.mu.Unlock()
		return 0, os.ErrDeadlineExceeded
	}
	if len(c.pushback) > 0 {
		n := copy(p, c.pushback)
		c.pushback = c.pushback[n:]
		c.mu.Unlock()
		return n, nil
	}
	if c.peerGone {
		inData := c.inData
		c.mu.Unlock()
		return 0, eofFor(inData)
	}
	var deadline time.Time
	if c.inData {
		deadline = time.Now().Add(c.srv.opts.DataTimeout)
	} else {
		deadline = c.lineDeadline
		if deadline.IsZero() {
			deadline = time.Now().Add(c.srv.opts.CommandTimeout)
		}
	}
	c.mu.Unlock()
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.mu.Lock()
		c.peerGone = true
		inData := c.inData
		c.mu.Unlock()
		return n, eofFor(inData)
	}
	if ne := net.Error(nil); err != nil && errors.As(err, &ne) && ne.Timeout() {
		c.mu.Lock()
		c.timedOut = true
		c.mu.Unlock()
		c.srv.log.Info("connection timed out", "session", c.id, "remote", c.RemoteAddr().String(), "in_data", c.isInData())
		return n, os.ErrDeadlineExceeded
	}
	return n, err
}

// eofFor is what a client's end of input means: inside a message it is
// truncation, never a clean end. (go-smtp copies a BDAT chunk with
// io.LimitReader, which takes an early EOF for a complete chunk.)
func eofFor(inData bool) error {
	if inData {
		return io.ErrUnexpectedEOF
	}
	return io.EOF
}

// peerClosed reports whether the client has closed its end, waiting at most
// a millisecond. Bytes read meanwhile are kept for the next Reads. It is
// only called while go-smtp waits for a BDAT LAST result, so nobody else
// reads the connection.
func (c *conn) peerClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peerGone {
		return true
	}
	if len(c.pushback) > 0 {
		return false // the client is sending more: alive
	}
	if err := c.Conn.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return true
	}
	buf := make([]byte, 4096)
	for len(c.pushback) < 64<<10 {
		n, err := c.Conn.Read(buf)
		c.pushback = append(c.pushback, buf[:n]...)
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			return false
		default: // EOF, reset: gone
			c.peerGone = true
			return true
		}
	}
	return false
}

// Write sends a reply; then it runs what waited for it (afterReply).
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.runReplied()
	return n, err
}

// afterReply runs fn once the reply to the command being handled has been
// written (go-smtp writes it after the handler returns), or when the
// connection closes without one. A stopping server waits for a delivery's
// reply this way before it closes the connection under it.
func (c *conn) afterReply(fn func()) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		fn()
		return
	}
	c.replied = append(c.replied, fn)
	c.mu.Unlock()
}

func (c *conn) runReplied() {
	c.mu.Lock()
	fns := c.replied
	c.replied = nil
	c.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (c *conn) Close() error {
	defer c.runReplied()
	c.mu.Lock()
	c.closed = true
	linger := c.closeNow && !c.peerGone
	c.mu.Unlock()
	if linger {
		c.lingerClose()
	}
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.release()
		c.srv.metrics.connections.WithLabelValues(c.mode.String()).Dec()
	})
	return err
}

// Lingering close, for a connection closed on a limit: a client that
// pipelined commands past the limit still has bytes on their way to us,
// and closing with unread input makes the kernel answer with a reset,
// which can destroy the 421 before the client reads it. So send FIN
// first, and read (and discard) what still arrives, for a little while.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 1 << 20
)

func (c *conn) lingerClose() {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := c.Conn.(closeWriter)
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if c.Conn.SetReadDeadline(time.Now().Add(lingerTime)) != nil {
		return
	}
	_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
}

func (c *conn) isInData() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inData
}

func (c *conn) setTop(nc net.Conn) {
	c.mu.Lock()
	c.top = nc
	c.mu.Unlock()
}

func (c *conn) setInData(v bool) {
	c.mu.Lock()
	c.inData = v
	c.mu.Unlock()
}

func (c *conn) setInTxn(v bool) {
	c.mu.Lock()
	c.inTxn = v
	c.mu.Unlock()
}

// nextMessageID restarts the command count and returns the message's ID.
func (c *conn) nextMessageID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commands = 0
	c.messages++
	return c.id + "." + strconv.Itoa(c.messages)
}

// countError records a refused command and reports whether the connection
// must now close (after this reply).
func (c *conn) countError() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors++
	if c.errors >= c.srv.opts.MaxErrors {
		c.closeNow = true
		return true
	}
	return false
}
