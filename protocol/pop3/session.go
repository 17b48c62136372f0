package pop3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// phase is the RFC 1939 state of a session. UPDATE is not a phase here:
// QUIT in TRANSACTION runs it and ends the session.
type phase uint8

const (
	authorization phase = iota
	transaction
)

// session is one client connection. It runs on one goroutine.
type session struct {
	srv         *Server
	raw         net.Conn // the TCP connection
	conn        net.Conn // raw, or TLS over it
	r           *bufio.Reader
	w           *bufio.Writer
	tls         bool
	implicitTLS bool
	ip          string
	ctx         context.Context
	log         *slog.Logger
	buf         []byte // body read buffer, allocated on first RETR/TOP

	phase       phase
	pendingUser string // from USER, for the very next command (PASS) only
	account     string
	drop        maildrop
	deleted     []bool
	sizes       []int64 // wire sizes; -1 until measured
	seenNow     []bool  // sent in full by RETR this session

	authFailures int
	badCommands  int
	lastOK       bool
	quit         bool
	// expunged: QUIT deleted the marked messages. updateFailed: it could
	// not (the cluster is unavailable: do not try \Seen either).
	expunged, updateFailed bool
}

func newSession(s *Server, conn net.Conn, implicitTLS bool) *session {
	return &session{
		srv:         s,
		raw:         conn,
		conn:        conn,
		implicitTLS: implicitTLS,
		ip:          auth.ClientIP(conn.RemoteAddr()),
		ctx:         s.ctx,
		log:         s.log.With("remote", conn.RemoteAddr().String()),
	}
}

// deadlineWriter gives every write to the connection its own deadline, so
// a client that stops reading cannot hold a session forever.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.conn.Write(p)
}

func (c *session) setupIO() {
	c.r = bufio.NewReaderSize(c.conn, c.srv.opts.MaxLineLength)
	c.w = bufio.NewWriterSize(deadlineWriter{c.conn, c.srv.idle}, chunkSize)
}

func (c *session) run() {
	defer c.finish()
	if c.implicitTLS && !c.startTLS() {
		return
	}
	c.setupIO()
	c.ok("%s POP3 server ready", c.srv.hostname)
	for !c.quit {
		if !c.lineBuffered() {
			// PIPELINING: answers go out together once the client has
			// no more complete commands waiting.
			if c.w.Flush() != nil {
				return
			}
		}
		line, err := c.readLine()
		if errors.Is(err, errLineTooLong) {
			c.bad("line too long (the limit is %d octets)", c.srv.opts.MaxLineLength)
			continue
		}
		if err != nil {
			// EOF, reset, or the idle timer: RFC 1939 says close without a
			// reply and without entering UPDATE.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.log.Debug("pop3 session idle too long; closing")
			}
			return
		}
		c.handle(line)
	}
	_ = c.w.Flush()
}

// lineBuffered reports whether a complete command is already read ahead.
func (c *session) lineBuffered() bool {
	n := c.r.Buffered()
	if n == 0 {
		return false
	}
	b, _ := c.r.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

var errLineTooLong = errors.New("pop3: line too long")

// readLine reads one line, waiting at most the idle timeout for it. An
// overlong line is read to its end and dropped.
func (c *session) readLine() ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.srv.idle))
	line, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = c.r.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, errLineTooLong
	}
	return line, err
}

// handle parses and runs one command line and records its metrics.
func (c *session) handle(line []byte) {
	start := time.Now()
	cmd, err := ParseCommand(line)
	if err != nil {
		switch {
		case errors.Is(err, ErrEmptyLine):
			c.bad("empty command")
		case errors.Is(err, ErrBadKeyword):
			c.bad("unknown command")
		default:
			c.bad("syntax error: %v", err)
		}
		c.srv.metrics.commands.WithLabelValues("other", "err").Inc()
		return
	}
	c.dispatch(cmd)
	label := commandLabel(cmd.Name)
	result := "err"
	if c.lastOK {
		result = "ok"
	}
	c.srv.metrics.commands.WithLabelValues(label, result).Inc()
	c.srv.metrics.duration.WithLabelValues(label).Observe(time.Since(start).Seconds())
}

// Replies. Every reply is one line; multi-line bodies follow an ok().

func (c *session) ok(format string, args ...any) { c.reply(true, "+OK", format, args...) }

func (c *session) fail(format string, args ...any) { c.reply(false, "-ERR", format, args...) }

func (c *session) reply(ok bool, status, format string, args ...any) {
	c.lastOK = ok
	c.w.WriteString(status)
	if format != "" {
		c.w.WriteByte(' ')
		fmt.Fprintf(c.w, format, args...)
	}
	c.w.WriteString("\r\n")
}

// bad answers a command the client should not have sent, and closes the
// connection once there were too many.
func (c *session) bad(format string, args ...any) {
	c.fail(format, args...)
	c.badCommands++
	if c.badCommands >= c.srv.opts.MaxBadCommands {
		c.quit = true // the client reads EOF next
		c.log.Info("pop3 too many bad commands; closing", "count", c.badCommands)
	}
}

// storeFailed answers a failed store call. It is the one place that maps
// store errors to POP3 response codes (RFC 2449, 3206).
func (c *session) storeFailed(what string, err error) {
	switch {
	case errors.Is(err, replication.ErrAuthFailed):
		c.fail("[AUTH] %s", what)
	case errors.Is(err, replication.ErrNoSuchMailbox), errors.Is(err, replication.ErrNoSuchAccount):
		c.fail("[SYS/PERM] %s: the maildrop no longer exists", what)
	case errors.Is(err, replication.ErrOutcomeUnknown):
		c.fail("[SYS/TEMP] the mail cluster lost its majority before it could confirm; the change may have been made: look before you retry")
		c.log.Info("pop3 store outcome unknown", "what", what, "err", err)
		return
	case replication.Temporary(err), errors.Is(err, context.Canceled):
		c.fail("[SYS/TEMP] %s: the mail cluster is unavailable; try again later", what)
		c.log.Info("pop3 store unavailable", "what", what, "err", err)
		return
	default:
		c.fail("[SYS/PERM] %s", what)
	}
	c.log.Warn("pop3 store call failed", "what", what, "err", err)
}

// usage checks the argument count.
func (c *session) usage(cmd Command, lo, hi int, syntax string) bool {
	if n := len(cmd.Args); n < lo || n > hi {
		c.bad("syntax: %s", syntax)
		return false
	}
	return true
}

func (c *session) dispatch(cmd Command) {
	if c.phase == authorization {
		switch cmd.Name {
		case "CAPA":
			c.capa(cmd)
		case "USER":
			c.cmdUser(cmd)
		case "PASS":
			c.cmdPass(cmd)
		case "AUTH":
			c.cmdAuth(cmd)
		case "STLS":
			c.cmdSTLS(cmd)
		case "APOP":
			c.fail("APOP is not supported; use USER and PASS, or AUTH PLAIN")
		case "QUIT":
			if c.usage(cmd, 0, 0, "QUIT") {
				c.ok("%s POP3 server signing off", c.srv.hostname)
				c.quit = true
			}
		case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL":
			c.bad("%s is only valid after login", cmd.Name)
		default:
			c.bad("unknown command")
		}
		if cmd.Name != "USER" {
			c.pendingUser = ""
		}
		return
	}
	switch cmd.Name {
	case "CAPA":
		c.capa(cmd)
	case "STAT":
		c.cmdStat(cmd)
	case "LIST":
		c.cmdList(cmd)
	case "UIDL":
		c.cmdUIDL(cmd)
	case "RETR":
		c.cmdRetr(cmd)
	case "TOP":
		c.cmdTop(cmd)
	case "DELE":
		c.cmdDele(cmd)
	case "NOOP":
		if c.usage(cmd, 0, 0, "NOOP") {
			c.ok("")
		}
	case "RSET":
		c.cmdRset(cmd)
	case "QUIT":
		if c.usage(cmd, 0, 0, "QUIT") {
			c.update()
		}
	case "USER", "PASS", "AUTH", "APOP", "STLS":
		c.bad("%s is not valid after login", cmd.Name)
	default:
		c.bad("unknown command")
	}
}

// --- AUTHORIZATION ---

// plaintextOK reports whether a password may be sent on this connection.
func (c *session) plaintextOK() bool { return auth.PlaintextAllowed(c.raw.RemoteAddr(), c.tls) }

const plaintextRefused = "[AUTH] plain-text authentication is not allowed without TLS; use STLS or port 995"

// capa lists exactly what this session accepts now (RFC 2449).
func (c *session) capa(cmd Command) {
	if !c.usage(cmd, 0, 0, "CAPA") {
		return
	}
	c.ok("capability list follows")
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if c.phase == authorization {
		if c.plaintextOK() {
			caps = append(caps, "USER", "SASL PLAIN")
		}
		if c.srv.tls != nil && !c.tls {
			caps = append(caps, "STLS")
		}
	}
	caps = append(caps, "IMPLEMENTATION mailcluster")
	for _, s := range caps {
		c.w.WriteString(s)
		c.w.WriteString("\r\n")
	}
	c.w.WriteString(".\r\n")
}

func (c *session) cmdUser(cmd Command) {
	if !c.usage(cmd, 1, 1, "USER name") {
		return
	}
	if !c.plaintextOK() {
		c.fail(plaintextRefused)
		return
	}
	// Always +OK: whether the account exists is not revealed here.
	c.pendingUser = cmd.Args[0]
	c.ok("send PASS")
}

func (c *session) cmdPass(cmd Command) {
	user := c.pendingUser
	switch {
	case !c.plaintextOK():
		c.fail(plaintextRefused)
	case user == "":
		c.bad("PASS must follow a successful USER")
	case len(cmd.Args) != 1:
		c.bad("syntax: PASS password")
	default:
		c.authenticate(user, cmd.Args[0])
	}
}

// cmdAuth is RFC 5034 AUTH with the one mechanism offered, PLAIN
// (RFC 4616), with or without an initial response. "AUTH" alone lists the
// mechanisms, as many clients expect.
func (c *session) cmdAuth(cmd Command) {
	if !c.usage(cmd, 0, 2, "AUTH mechanism [initial-response]") {
		return
	}
	if len(cmd.Args) == 0 {
		c.ok("SASL mechanisms follow")
		if c.plaintextOK() {
			c.w.WriteString("PLAIN\r\n")
		}
		c.w.WriteString(".\r\n")
		return
	}
	if !strings.EqualFold(cmd.Args[0], "PLAIN") {
		c.fail("unsupported SASL mechanism; this server offers PLAIN")
		return
	}
	if !c.plaintextOK() {
		c.fail(plaintextRefused)
		return
	}
	var resp string
	if len(cmd.Args) == 2 {
		resp = cmd.Args[1]
	} else {
		c.w.WriteString("+ \r\n")
		if c.w.Flush() != nil {
			c.quit = true
			return
		}
		line, err := c.readLine()
		if errors.Is(err, errLineTooLong) {
			c.bad("line too long (the limit is %d octets)", c.srv.opts.MaxLineLength)
			return
		}
		if err != nil {
			c.quit = true
			return
		}
		resp = strings.TrimRight(string(line), "\r\n")
	}
	if resp == "*" {
		c.fail("authentication cancelled")
		return
	}
	var raw []byte
	if resp != "=" { // "=": an empty initial response (RFC 5034 §4)
		var err error
		if raw, err = base64.StdEncoding.DecodeString(resp); err != nil {
			c.fail("invalid base64 in the SASL response")
			return
		}
	}
	// PLAIN (RFC 4616) is protocol/auth's, shared with SMTP and IMAP.
	var user, pass string
	_, done, err := auth.NewPlainServer(func(authz, u, p string) error {
		if authz != "" && authz != u {
			return errProxyAuth
		}
		user, pass = u, p
		return nil
	}).Next(raw)
	switch {
	case errors.Is(err, errProxyAuth):
		c.fail("[AUTH] logging in as another user is not allowed")
		return
	case err != nil || !done:
		c.fail("[AUTH] malformed PLAIN response")
		return
	}
	c.authenticate(user, pass)
}

var errProxyAuth = errors.New("pop3: proxy authorization")

// authenticate checks a password under the shared login throttle and
// opens the maildrop.
func (c *session) authenticate(user, pass string) {
	var acct state.Account
	err := c.srv.limiter.Login(c.ctx, c.conn.RemoteAddr(), user, pass, func(ctx context.Context) (bool, error) {
		var err error
		acct, err = c.srv.store.Authenticate(ctx, user, pass)
		if errors.Is(err, replication.ErrAuthFailed) {
			return false, nil
		}
		return err == nil, err
	})
	var throttled *auth.ThrottledError
	switch {
	case errors.As(err, &throttled):
		c.srv.metrics.logins.WithLabelValues("throttled").Inc()
		c.fail("[SYS/TEMP] too many failed logins from your address; try again in %d seconds", int(throttled.RetryAfter.Seconds())+1)
		return
	case errors.Is(err, auth.ErrBusy):
		if c.ctx.Err() != nil {
			c.quit = true
			return
		}
		c.srv.metrics.logins.WithLabelValues("unavailable").Inc()
		c.fail("[SYS/TEMP] too many logins being checked; try again later")
		return
	case errors.Is(err, auth.ErrFailed), errors.Is(err, auth.ErrMalformed):
		c.srv.metrics.logins.WithLabelValues("failed").Inc()
		c.log.Info("pop3 login failed", "user", user)
		if c.ctx.Err() != nil {
			c.quit = true
			return
		}
		c.fail("[AUTH] invalid user name or password")
		c.authFailures++
		if c.authFailures >= c.srv.opts.MaxAuthFailures {
			c.quit = true
		}
		return
	case err != nil:
		c.srv.metrics.logins.WithLabelValues("unavailable").Inc()
		c.storeFailed("cannot check the password now", err)
		return
	}
	md, err := c.srv.store.OpenMaildrop(c.ctx, acct.Address)
	if err != nil {
		c.srv.metrics.logins.WithLabelValues("unavailable").Inc()
		c.storeFailed("cannot open the maildrop", err)
		return
	}
	c.srv.metrics.logins.WithLabelValues("ok").Inc()
	c.phase = transaction
	c.account = acct.Address
	c.drop = md
	n := len(md.msgs)
	c.deleted = make([]bool, n)
	c.seenNow = make([]bool, n)
	c.sizes = make([]int64, n)
	for i := range c.sizes {
		c.sizes[i] = -1
	}
	c.log = c.log.With("account", acct.Address)
	c.log.Debug("pop3 login", "messages", n)
	c.ok("logged in; maildrop has %d messages", n)
}

func (c *session) cmdSTLS(cmd Command) {
	if !c.usage(cmd, 0, 0, "STLS") {
		return
	}
	switch {
	case c.tls:
		c.fail("TLS is already active")
		return
	case c.srv.tls == nil:
		c.fail("STLS is not available on this server")
		return
	}
	c.ok("begin TLS negotiation")
	if c.w.Flush() != nil {
		c.quit = true
		return
	}
	// Whatever the client sent after STLS in plain text is dropped unread
	// (RFC 2595 §3.1: no command injection before the handshake).
	if !c.startTLS() {
		c.quit = true
		return
	}
	c.setupIO()
	c.pendingUser = ""
}

// startTLS runs the server side of the TLS handshake on the raw connection.
func (c *session) startTLS() bool {
	tc := tls.Server(c.raw, c.srv.tls)
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.opts.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.log.Debug("pop3 TLS handshake failed", "err", err)
		return false
	}
	c.conn, c.tls = tc, true
	return true
}

// --- TRANSACTION ---

// message resolves a message-number argument to an index into the view,
// answering -ERR itself when it cannot.
func (c *session) message(arg string) (int, bool) {
	n, ok := parseNumber(arg)
	switch {
	case !ok:
		c.bad("invalid message number")
		return 0, false
	case n == 0 || n > uint64(len(c.drop.msgs)):
		c.fail("no such message; the maildrop has %d", len(c.drop.msgs))
		return 0, false
	case c.deleted[n-1]:
		c.fail("message %d is deleted", n)
		return 0, false
	}
	return int(n - 1), true
}

// uidl is a message's unique ID: its UID and the INBOX's UIDVALIDITY, each
// as 8 upper-case hex digits (Dovecot's default %08Xu%08Xv). Equal on
// every node and stable for the life of the mailbox.
func (c *session) uidl(i int) string {
	return fmt.Sprintf("%08X%08X", c.drop.msgs[i].uid, c.drop.uidValidity)
}

// measure finds the wire size of every undeleted message not measured yet,
// reading a few bodies at once.
func (c *session) measure() error {
	var todo []int
	for i, n := range c.sizes {
		if n < 0 && !c.deleted[i] {
			if cached, ok := c.srv.sizes.get(c.drop.msgs[i].blob); ok {
				c.sizes[i] = cached
			} else {
				todo = append(todo, i)
			}
		}
	}
	if len(todo) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range min(4, len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= len(todo) || ctx.Err() != nil {
					return
				}
				i := todo[k]
				n, err := c.measureOne(ctx, i)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				c.sizes[i] = n // each worker writes its own indexes
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func (c *session) measureOne(ctx context.Context, i int) (int64, error) {
	e := c.drop.msgs[i]
	n, err := c.srv.sizes.measure(ctx, c.srv.store, e.blob)
	if err == nil {
		return n, nil
	}
	// A message another session deleted may have lost its body; it can no
	// longer be retrieved, so its stored size is as good as any.
	if exists, xerr := c.srv.store.Exists(ctx, c.account, c.drop.mailboxID, e.uid); xerr == nil && !exists {
		return e.rawSize, nil
	}
	return 0, err
}

func (c *session) cmdStat(cmd Command) {
	if !c.usage(cmd, 0, 0, "STAT") {
		return
	}
	if err := c.measure(); err != nil {
		c.storeFailed("cannot read the message sizes", err)
		return
	}
	count, total := c.totals()
	c.ok("%d %d", count, total)
}

// totals counts the messages not marked deleted and their octets (after
// measure).
func (c *session) totals() (count int, octets int64) {
	for i, n := range c.sizes {
		if !c.deleted[i] {
			count++
			octets += n
		}
	}
	return count, octets
}

func (c *session) cmdList(cmd Command) {
	if !c.usage(cmd, 0, 1, "LIST [message]") {
		return
	}
	if len(cmd.Args) == 1 {
		i, ok := c.message(cmd.Args[0])
		if !ok {
			return
		}
		n, err := c.sizeOf(i)
		if err != nil {
			c.storeFailed("cannot read the message size", err)
			return
		}
		c.ok("%d %d", i+1, n)
		return
	}
	if err := c.measure(); err != nil {
		c.storeFailed("cannot read the message sizes", err)
		return
	}
	count, total := c.totals()
	c.ok("%d messages (%d octets)", count, total)
	for i, n := range c.sizes {
		if !c.deleted[i] {
			fmt.Fprintf(c.w, "%d %d\r\n", i+1, n)
		}
	}
	c.w.WriteString(".\r\n")
}

func (c *session) sizeOf(i int) (int64, error) {
	if c.sizes[i] < 0 {
		n, err := c.measureOne(c.ctx, i)
		if err != nil {
			return 0, err
		}
		c.sizes[i] = n
	}
	return c.sizes[i], nil
}

func (c *session) cmdUIDL(cmd Command) {
	if !c.usage(cmd, 0, 1, "UIDL [message]") {
		return
	}
	if len(cmd.Args) == 1 {
		if i, ok := c.message(cmd.Args[0]); ok {
			c.ok("%d %s", i+1, c.uidl(i))
		}
		return
	}
	c.ok("unique-id listing follows")
	for i := range c.drop.msgs {
		if !c.deleted[i] {
			fmt.Fprintf(c.w, "%d %s\r\n", i+1, c.uidl(i))
		}
	}
	c.w.WriteString(".\r\n")
}

func (c *session) cmdRetr(cmd Command) {
	if !c.usage(cmd, 1, 1, "RETR message") {
		return
	}
	if i, ok := c.message(cmd.Args[0]); ok && c.send(i, false, 0) {
		c.seenNow[i] = true
	}
}

func (c *session) cmdTop(cmd Command) {
	if !c.usage(cmd, 2, 2, "TOP message lines") {
		return
	}
	lines, ok := parseNumber(cmd.Args[1])
	if !ok {
		c.bad("invalid line count")
		return
	}
	if i, ok := c.message(cmd.Args[0]); ok {
		c.send(i, true, lines)
	}
}

// send answers RETR (or TOP with its line count) for message index i and
// reports whether the whole message went out.
func (c *session) send(i int, top bool, lines uint64) bool {
	e := c.drop.msgs[i]
	exists, err := c.srv.store.Exists(c.ctx, c.account, c.drop.mailboxID, e.uid)
	if err != nil {
		c.storeFailed("cannot read the maildrop", err)
		return false
	}
	if !exists {
		c.fail("message %d was deleted by another session", i+1)
		return false
	}
	b, err := c.srv.store.OpenBody(c.ctx, e.blob)
	if err != nil {
		c.storeFailed("cannot read the message", err)
		return false
	}
	defer b.Close()
	size := c.sizes[i]
	if size < 0 && !top {
		if size, err = wireSize(b, b.Size()); err != nil {
			c.storeFailed("cannot read the message", err)
			return false
		}
		c.srv.sizes.put(e.blob, size)
		c.sizes[i] = size
	}
	var enc *encoder
	if top {
		enc = newTopEncoder(c.w, lines)
		c.ok("top of message %d follows", i+1)
	} else {
		enc = newEncoder(c.w)
		c.ok("%d octets", size)
	}
	if c.buf == nil {
		c.buf = make([]byte, chunkSize)
	}
	total := b.Size()
	for off := int64(0); off < total; {
		want := min(int64(len(c.buf)), total-off)
		n, err := b.ReadAt(c.buf[:want], off)
		if int64(n) < want {
			// The +OK is out: all that can be done is to drop the
			// connection so the client sees no false end of message.
			c.log.Error("pop3 reading a body failed mid-reply; closing", "blob", e.blob, "err", err)
			c.quit = true
			_ = c.raw.Close()
			return false
		}
		off += int64(n)
		if _, werr := enc.Write(c.buf[:n]); werr != nil {
			if errors.Is(werr, errTopDone) {
				break
			}
			c.quit = true // the client is gone
			return false
		}
	}
	if enc.Finish() != nil {
		c.quit = true
		return false
	}
	c.w.WriteString(".\r\n")
	c.srv.metrics.sentOctets.Add(float64(enc.octets))
	if !top && enc.octets != size {
		// Cannot happen while wireSize and encoder agree (tested); if it
		// does, LIST lied to this client.
		c.log.Error("pop3 RETR sent a different size than LIST reported", "blob", e.blob, "listed", size, "sent", enc.octets)
	}
	return true
}

func (c *session) cmdDele(cmd Command) {
	if !c.usage(cmd, 1, 1, "DELE message") {
		return
	}
	if i, ok := c.message(cmd.Args[0]); ok {
		c.deleted[i] = true
		c.ok("message %d marked for deletion", i+1)
	}
}

func (c *session) cmdRset(cmd Command) {
	if !c.usage(cmd, 0, 0, "RSET") {
		return
	}
	clear(c.deleted)
	c.ok("maildrop has %d messages", len(c.drop.msgs))
}

// update is the UPDATE state: delete every marked message in one
// committed store operation, then end the session either way.
func (c *session) update() {
	c.quit = true
	var uids []uint32
	for i, d := range c.deleted {
		if d {
			uids = append(uids, c.drop.msgs[i].uid)
		}
	}
	if len(uids) == 0 {
		c.ok("%s POP3 server signing off", c.srv.hostname)
		return
	}
	if err := c.srv.store.Expunge(c.ctx, c.account, c.drop.mailboxID, uids); err != nil && !c.allGone(uids) {
		c.updateFailed = true
		if replication.Temporary(err) || errors.Is(err, context.Canceled) {
			c.srv.metrics.updates.WithLabelValues("unavailable").Inc()
		} else {
			c.srv.metrics.updates.WithLabelValues("error").Inc()
		}
		c.storeFailed(fmt.Sprintf("the %d marked messages were not deleted", len(uids)), err)
		return
	}
	c.expunged = true
	c.srv.metrics.updates.WithLabelValues("ok").Inc()
	c.srv.metrics.deleted.Add(float64(len(uids)))
	c.log.Debug("pop3 update", "deleted", len(uids))
	c.ok("%s POP3 server signing off (%d messages deleted)", c.srv.hostname, len(uids))
}

// allGone reports whether local state already lacks every one of uids.
// After an Expunge whose outcome is unknown (it timed out, but may have
// committed and be applied a moment later), that makes +OK true after all.
func (c *session) allGone(uids []uint32) bool {
	for _, uid := range uids {
		exists, err := c.srv.store.Exists(c.ctx, c.account, c.drop.mailboxID, uid)
		if err != nil || exists {
			return false
		}
	}
	return true
}

// finish runs when the session ends, however it ends: it marks the
// messages RETR sent \Seen (unless configured not to), best effort.
func (c *session) finish() {
	if c.phase != transaction || c.srv.opts.LeaveUnseen || c.updateFailed {
		return
	}
	var uids []uint32
	for i, sent := range c.seenNow {
		if sent && !c.drop.msgs[i].seen && !(c.expunged && c.deleted[i]) {
			uids = append(uids, c.drop.msgs[i].uid)
		}
	}
	if len(uids) == 0 {
		return
	}
	// Flush the last reply first: the client need not wait for this.
	if c.w != nil {
		_ = c.w.Flush()
	}
	_ = c.raw.Close()
	ctx, cancel := context.WithTimeout(c.srv.ctx, time.Minute)
	defer cancel()
	if err := c.srv.store.MarkSeen(ctx, c.account, c.drop.mailboxID, uids); err != nil {
		c.log.Info(`pop3 could not mark retrieved messages \Seen`, "count", len(uids), "err", err)
	}
}
