package managesieve

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

// session is one client connection. It runs on one goroutine.
type session struct {
	srv  *Server
	raw  net.Conn // the TCP connection
	conn net.Conn // raw, or TLS over it
	r    *cmdReader
	w    *bufio.Writer
	tls  bool
	ctx  context.Context
	log  *slog.Logger

	account string // "" until a login

	commandsBeforeAuth int
	authFailures       int
	badCommands        int
	lastOK             bool
	quit               bool
}

func newSession(s *Server, conn net.Conn) *session {
	return &session{
		srv: s, raw: conn, conn: conn, ctx: s.ctx,
		log: s.log.With("remote", conn.RemoteAddr().String()),
	}
}

// deadlineWriter gives every write its own deadline, so a client that
// stops reading cannot hold a session forever.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.conn.Write(p)
}

// flushingReader sends the replies written so far before it waits for the
// client: pipelined commands already read are answered together, and a
// client never waits for a reply the server still holds.
type flushingReader struct {
	conn net.Conn
	w    *bufio.Writer
}

func (f flushingReader) Read(p []byte) (int, error) {
	if err := f.w.Flush(); err != nil {
		return 0, err
	}
	return f.conn.Read(p)
}

func (c *session) setupIO() {
	o := c.srv.opts
	c.w = bufio.NewWriterSize(deadlineWriter{c.conn, c.srv.idle}, 16<<10)
	c.r = newCmdReader(flushingReader{c.conn, c.w}, o.MaxLineLength, o.MaxScriptSize, o.MaxDiscard)
}

func (c *session) run() {
	c.setupIO()
	c.capabilities()
	c.ok("", c.srv.cfg.Hostname+" ManageSieve ready")
	for !c.quit {
		// The whole command, literals included, must arrive within the
		// idle timeout: a client trickling octets cannot hold the session.
		_ = c.conn.SetReadDeadline(time.Now().Add(c.srv.idle))
		cmd, err := c.r.readCommand()
		var perr *parseError
		switch {
		case err == nil:
			c.handle(cmd)
		case errors.Is(err, errEmpty):
			// RFC 5804 has no empty command; ignoring one costs nothing.
		case errors.As(err, &perr):
			c.countCommand()
			switch {
			case c.quit:
			case perr.TooBig:
				c.no("QUOTA/MAXSIZE", perr.Msg)
			default:
				c.bad("syntax error: " + perr.Msg)
			}
			c.srv.metrics.commands.WithLabelValues("other", "no").Inc()
		case errors.Is(err, errDesync):
			c.bye("", "literal too large")
		default:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && c.ctx.Err() == nil {
				c.bye("", "idle for too long")
				c.log.Debug("managesieve session idle too long; closing")
			}
			c.quit = true
		}
	}
	_ = c.w.Flush()
}

// --- replies ---------------------------------------------------------------

func (c *session) ok(code, text string) { c.respond("OK", code, text); c.lastOK = true }

func (c *session) no(code, text string) { c.respond("NO", code, text); c.lastOK = false }

// bye ends the session after the reply.
func (c *session) bye(code, text string) {
	c.respond("BYE", code, text)
	c.lastOK = false
	c.quit = true
}

// respond writes "STATUS [(CODE)] [text]". code is a response code with
// its arguments, already formatted ("QUOTA/MAXSIZE", `TAG "x"`).
func (c *session) respond(status, code, text string) {
	b := []byte(status)
	if code != "" {
		b = append(b, " ("...)
		b = append(b, code...)
		b = append(b, ')')
	}
	if text != "" {
		b = append(b, ' ')
		b = appendString(b, text)
	}
	b = append(b, "\r\n"...)
	_, _ = c.w.Write(b)
}

// line writes one response line of strings and atoms as given.
func (c *session) line(parts ...string) {
	_, _ = c.w.WriteString(strings.Join(parts, " "))
	_, _ = c.w.WriteString("\r\n")
}

func quote(s string) string { return string(appendString(nil, s)) }

// bad answers a command the client should not have sent, and ends the
// session once there were too many.
func (c *session) bad(text string) {
	c.badCommands++
	if c.badCommands >= c.srv.opts.MaxBadCommands {
		c.bye("", "too many bad commands")
		c.log.Info("managesieve too many bad commands; closing", "count", c.badCommands)
		return
	}
	c.no("", text)
}

// storeFailed answers a failed store call: the one place that maps the
// store's errors to response codes.
func (c *session) storeFailed(name string, err error) {
	switch {
	case errors.Is(err, ErrNoSuchScript):
		c.no("NONEXISTENT", fmt.Sprintf("there is no script %q", name))
	case errors.Is(err, ErrActive):
		c.no("ACTIVE", fmt.Sprintf("script %q is active; deactivate it first", name))
	case errors.Is(err, ErrExists):
		c.no("ALREADYEXISTS", fmt.Sprintf("a script %q exists already", name))
	case errors.Is(err, ErrTooMany):
		c.no("QUOTA/MAXSCRIPTS", "you have the maximum number of scripts; delete one first")
	case errors.Is(err, ErrTooBig):
		c.no("QUOTA/MAXSIZE", "the script is too large for your quota")
	case errors.Is(err, ErrInvalid):
		c.no("", err.Error())
	default:
		c.no("TRYLATER", "the mail cluster is unavailable; try again later")
		c.log.Info("managesieve store call failed", "err", err)
	}
}

// storeCtx bounds one store call.
func (c *session) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, c.srv.opts.StoreTimeout)
}

// --- dispatch --------------------------------------------------------------

func (c *session) countCommand() {
	if c.account != "" {
		return
	}
	c.commandsBeforeAuth++
	if c.commandsBeforeAuth > c.srv.opts.MaxCommandsBeforeAuth {
		c.bye("", "too many commands without logging in")
	}
}

func (c *session) handle(cmd command) {
	c.countCommand()
	if c.quit {
		return
	}
	c.dispatch(cmd)
	result := "no"
	if c.lastOK {
		result = "ok"
	}
	c.srv.metrics.commands.WithLabelValues(commandLabel(cmd.Name), result).Inc()
}

// authed returns the handler of a command that needs a login.
func authed(name string) (func(*session, command), bool) {
	switch name {
	case "HAVESPACE":
		return (*session).cmdHaveSpace, true
	case "PUTSCRIPT":
		return (*session).cmdPutScript, true
	case "LISTSCRIPTS":
		return (*session).cmdListScripts, true
	case "SETACTIVE":
		return (*session).cmdSetActive, true
	case "GETSCRIPT":
		return (*session).cmdGetScript, true
	case "DELETESCRIPT":
		return (*session).cmdDeleteScript, true
	case "RENAMESCRIPT":
		return (*session).cmdRenameScript, true
	case "CHECKSCRIPT":
		return (*session).cmdCheckScript, true
	case "UNAUTHENTICATE":
		return (*session).cmdUnauthenticate, true
	}
	return nil, false
}

func (c *session) dispatch(cmd command) {
	switch cmd.Name {
	case "CAPABILITY":
		if c.args(cmd, "CAPABILITY") {
			c.capabilities()
			c.ok("", "")
		}
		return
	case "LOGOUT":
		if c.args(cmd, "LOGOUT") {
			c.ok("", "logout completed")
			c.quit = true
		}
		return
	case "NOOP":
		c.cmdNoop(cmd)
		return
	case "STARTTLS":
		c.cmdStartTLS(cmd)
		return
	case "AUTHENTICATE":
		c.cmdAuthenticate(cmd)
		return
	}
	h, ok := authed(cmd.Name)
	switch {
	case !ok:
		c.bad("unknown command")
	case c.account == "":
		c.bad(cmd.Name + " needs a login first (AUTHENTICATE)")
	default:
		h(c, cmd)
	}
}

// args checks that cmd has exactly the string (s) and number (n)
// arguments the pattern names, in order, and answers NO with the syntax
// when not. pattern is "NAME s n".
func (c *session) args(cmd command, pattern string) bool {
	kinds := strings.Fields(pattern)[1:]
	ok := len(cmd.args) == len(kinds)
	for i := 0; ok && i < len(kinds); i++ {
		switch kinds[i] {
		case "s":
			ok = cmd.args[i].isString()
		case "n":
			_, ok = number(cmd.args[i])
		}
	}
	if !ok {
		syntax := strings.NewReplacer(" s", " <string>", " n", " <number>").Replace(pattern)
		c.bad("syntax: " + syntax)
	}
	return ok
}

// number reads RFC 5804's number: an atom of digits below 2^32.
func number(a arg) (uint32, bool) {
	if a.kind != argAtom || a.val == "" || len(a.val) > 10 {
		return 0, false
	}
	for _, ch := range a.val {
		if ch < '0' || ch > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(a.val, 10, 32)
	return uint32(v), err == nil
}

// ValidName checks a script name (RFC 5804 §1.6): UTF-8, not empty, no
// control characters (C0, DEL, C1), no line or paragraph separator.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("a script name cannot be empty")
	case len(name) > maxNameLength:
		return fmt.Errorf("a script name may have at most %d octets", maxNameLength)
	case !utf8.ValidString(name):
		return errors.New("a script name must be UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return errors.New("a script name cannot contain control characters")
		}
	}
	return nil
}

// name reads a script-name argument, answering NO itself when invalid.
func (c *session) name(a arg) (string, bool) {
	if err := ValidName(a.val); err != nil {
		c.no("", err.Error())
		return "", false
	}
	return a.val, true
}

// --- not authenticated -----------------------------------------------------

func (c *session) plaintextOK() bool { return auth.PlaintextAllowed(c.raw.RemoteAddr(), c.tls) }

// capabilities writes the capability listing (RFC 5804 §1.7), without the
// OK that ends it.
func (c *session) capabilities() {
	cfg := &c.srv.cfg
	c.line(quote("IMPLEMENTATION"), quote("mailcluster"))
	sasl := ""
	if c.account == "" && c.plaintextOK() {
		sasl = auth.MechPlain
	}
	c.line(quote("SASL"), quote(sasl))
	c.line(quote("SIEVE"), quote(strings.Join(cfg.Extensions(), " ")))
	if cfg.TLS != nil && !c.tls && c.account == "" {
		c.line(quote("STARTTLS"))
	}
	if cfg.MaxRedirects > 0 {
		c.line(quote("MAXREDIRECTS"), quote(strconv.Itoa(cfg.MaxRedirects)))
	}
	if c.account != "" {
		c.line(quote("OWNER"), quote(c.account))
	}
	c.line(quote("UNAUTHENTICATE"))
	c.line(quote("VERSION"), quote("1.0"))
}

func (c *session) cmdNoop(cmd command) {
	switch {
	case len(cmd.args) == 0:
		c.ok("", "done")
	case len(cmd.args) == 1 && cmd.args[0].isString() && len(cmd.args[0].val) <= maxQuoted &&
		!strings.ContainsAny(cmd.args[0].val, "\r\n\x00"):
		c.ok("TAG "+quote(cmd.args[0].val), "done")
	default:
		c.bad("syntax: NOOP [<tag>]")
	}
}

func (c *session) cmdStartTLS(cmd command) {
	if !c.args(cmd, "STARTTLS") {
		return
	}
	switch {
	case c.tls:
		c.bad("TLS is already active")
		return
	case c.account != "":
		c.bad("STARTTLS is only valid before a login")
		return
	case c.srv.cfg.TLS == nil:
		c.no("", "STARTTLS is not available on this server")
		return
	}
	c.ok("", "begin TLS negotiation now")
	if c.w.Flush() != nil {
		c.quit = true
		return
	}
	// Whatever the client sent after STARTTLS in plain text stays in the
	// old buffer, unread: nothing can be injected before the handshake.
	tc := tls.Server(c.raw, c.srv.cfg.TLS)
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.opts.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.log.Debug("managesieve TLS handshake failed", "err", err)
		c.quit = true
		return
	}
	c.conn, c.tls = tc, true
	c.setupIO()
	// RFC 5804 §2.2: the server lists its capabilities again, unasked.
	c.capabilities()
	c.ok("", "TLS is active")
}

// maxAuthResponse bounds a SASL response: base64 of a PLAIN message with
// a user name and a password of auth.MaxCredential octets each.
const maxAuthResponse = 4 * (2*auth.MaxCredential + 3 + 2*auth.MaxCredential) / 3

func (c *session) cmdAuthenticate(cmd command) {
	if n := len(cmd.args); n < 1 || n > 2 || !cmd.args[n-1].isString() {
		c.bad(`syntax: AUTHENTICATE "PLAIN" [<initial-response>]`)
		return
	}
	switch {
	case c.account != "":
		c.bad("already logged in")
		return
	case !strings.EqualFold(cmd.args[0].val, auth.MechPlain):
		c.no("", "unsupported SASL mechanism; this server offers PLAIN")
		return
	case !c.plaintextOK():
		c.no("ENCRYPT-NEEDED", "a password may only be sent over TLS; use STARTTLS first")
		return
	}
	var resp string
	if len(cmd.args) == 2 {
		resp = cmd.args[1].val
	} else {
		// The empty challenge of PLAIN, as a string; the client answers
		// with a string (quoted or literal) on its own line.
		_, _ = c.w.WriteString("\"\"\r\n")
		args, err := c.r.readArgs()
		var perr *parseError
		switch {
		case errors.As(err, &perr):
			c.no("", "malformed SASL response: "+perr.Msg)
			return
		case errors.Is(err, errEmpty):
			args = []arg{{kind: argQuoted}}
		case errors.Is(err, errDesync):
			c.bye("", "SASL response too large")
			return
		case err != nil:
			c.quit = true
			return
		}
		if len(args) != 1 || !args[0].isString() {
			c.no("", "malformed SASL response: send one string")
			return
		}
		resp = args[0].val
	}
	if resp == "*" {
		c.no("", "authentication cancelled")
		return
	}
	if len(resp) > maxAuthResponse {
		c.no("", "SASL response too long")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		c.no("", "invalid base64 in the SASL response")
		return
	}
	if len(raw) == 0 {
		raw = nil // no credentials at all
	}
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
		c.no("", "logging in as another user is not allowed")
		return
	case err != nil || !done:
		c.no("", "malformed PLAIN response")
		return
	}
	c.login(user, pass)
}

var errProxyAuth = errors.New("managesieve: proxy authorization")

// login checks a password through the shared login path.
func (c *session) login(user, pass string) {
	var acct state.Account
	err := c.srv.cfg.Limiter.Login(c.ctx, c.conn.RemoteAddr(), user, pass, func(ctx context.Context) (bool, error) {
		var err error
		acct, err = c.srv.cfg.Auth.Authenticate(ctx, user, pass)
		if errors.Is(err, replication.ErrAuthFailed) {
			return false, nil
		}
		return err == nil, err
	})
	var throttled *auth.ThrottledError
	switch {
	case errors.As(err, &throttled):
		c.srv.metrics.logins.WithLabelValues("throttled").Inc()
		c.no("TRYLATER", fmt.Sprintf("too many failed logins from your address; try again in %d seconds", int(throttled.RetryAfter.Seconds())+1))
		return
	case errors.Is(err, auth.ErrBusy):
		if c.ctx.Err() != nil {
			c.quit = true
			return
		}
		c.srv.metrics.logins.WithLabelValues("unavailable").Inc()
		c.no("TRYLATER", "too many logins being checked; try again later")
		return
	case errors.Is(err, auth.ErrFailed), errors.Is(err, auth.ErrMalformed):
		c.srv.metrics.logins.WithLabelValues("failed").Inc()
		c.log.Info("managesieve login failed", "user", user)
		if c.ctx.Err() != nil {
			c.quit = true
			return
		}
		c.authFailures++
		if c.authFailures >= c.srv.opts.MaxAuthFailures {
			c.bye("", "authentication failed; too many failures")
			return
		}
		c.no("", "authentication failed")
		return
	case err != nil:
		c.srv.metrics.logins.WithLabelValues("unavailable").Inc()
		c.no("TRYLATER", "cannot check the password now; try again later")
		c.log.Info("managesieve password check failed", "err", err)
		return
	}
	c.srv.metrics.logins.WithLabelValues("ok").Inc()
	c.account = acct.Address
	c.log = c.log.With("account", acct.Address)
	c.log.Debug("managesieve login")
	c.ok("", "logged in")
}

// --- authenticated ---------------------------------------------------------

func (c *session) cmdUnauthenticate(cmd command) {
	if c.args(cmd, "UNAUTHENTICATE") {
		c.account = ""
		c.log = c.srv.log.With("remote", c.raw.RemoteAddr().String())
		c.commandsBeforeAuth = 0
		c.ok("", "")
	}
}

// sizeOK refuses a script over the size limit.
func (c *session) sizeOK(size int) bool {
	if size > c.srv.opts.MaxScriptSize {
		c.no("QUOTA/MAXSIZE", fmt.Sprintf("a script may have at most %d octets", c.srv.opts.MaxScriptSize))
		return false
	}
	return true
}

func (c *session) cmdHaveSpace(cmd command) {
	if !c.args(cmd, "HAVESPACE s n") {
		return
	}
	name, ok := c.name(cmd.args[0])
	if !ok {
		return
	}
	size, _ := number(cmd.args[1])
	if !c.sizeOK(int(size)) {
		return
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	if err := c.srv.cfg.Store.HaveSpace(ctx, c.account, name, int(size)); err != nil {
		c.storeFailed(name, err)
		return
	}
	c.ok("", "")
}

// check compiles a script, answering NO itself when it is not valid.
func (c *session) check(content string) bool {
	if !c.sizeOK(len(content)) {
		return false
	}
	if !utf8.ValidString(content) {
		c.no("", "a script must be UTF-8")
		return false
	}
	if c.srv.cfg.Check == nil {
		return true
	}
	if err := c.compile(content); err != nil {
		msg := err.Error()
		if len(msg) > 4096 {
			msg = msg[:4096] + "…"
		}
		c.no("", msg)
		return false
	}
	return true
}

// compile runs the Checker. A checker that panics on a hostile script
// costs that script, not the node.
func (c *session) compile(content string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("managesieve: the Sieve checker panicked", "panic", r)
			err = errors.New("the script could not be checked")
		}
	}()
	return c.srv.cfg.Check([]byte(content))
}

func (c *session) cmdPutScript(cmd command) {
	if !c.args(cmd, "PUTSCRIPT s s") {
		return
	}
	name, ok := c.name(cmd.args[0])
	if !ok || !c.check(cmd.args[1].val) {
		return
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	if err := c.srv.cfg.Store.PutScript(ctx, c.account, name, cmd.args[1].val); err != nil {
		c.storeFailed(name, err)
		return
	}
	c.ok("", "")
}

func (c *session) cmdCheckScript(cmd command) {
	if c.args(cmd, "CHECKSCRIPT s") && c.check(cmd.args[0].val) {
		c.ok("", "")
	}
}

func (c *session) cmdListScripts(cmd command) {
	if !c.args(cmd, "LISTSCRIPTS") {
		return
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	scripts, err := c.srv.cfg.Store.ListScripts(ctx, c.account)
	if err != nil {
		c.storeFailed("", err)
		return
	}
	for _, s := range scripts {
		if s.Active {
			c.line(quote(s.Name), "ACTIVE")
		} else {
			c.line(quote(s.Name))
		}
	}
	c.ok("", "")
}

func (c *session) cmdSetActive(cmd command) {
	if !c.args(cmd, "SETACTIVE s") {
		return
	}
	name := cmd.args[0].val
	if name != "" { // "": deactivate
		var ok bool
		if name, ok = c.name(cmd.args[0]); !ok {
			return
		}
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	if err := c.srv.cfg.Store.SetActive(ctx, c.account, name); err != nil {
		c.storeFailed(name, err)
		return
	}
	c.ok("", "")
}

func (c *session) cmdGetScript(cmd command) {
	if !c.args(cmd, "GETSCRIPT s") {
		return
	}
	name, ok := c.name(cmd.args[0])
	if !ok {
		return
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	content, err := c.srv.cfg.Store.GetScript(ctx, c.account, name)
	if err != nil {
		c.storeFailed(name, err)
		return
	}
	// Always a literal: the script is one string of any content.
	fmt.Fprintf(c.w, "{%d}\r\n", len(content))
	_, _ = c.w.WriteString(content)
	_, _ = c.w.WriteString("\r\n")
	c.ok("", "")
}

func (c *session) cmdDeleteScript(cmd command) {
	if !c.args(cmd, "DELETESCRIPT s") {
		return
	}
	name, ok := c.name(cmd.args[0])
	if !ok {
		return
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	if err := c.srv.cfg.Store.DeleteScript(ctx, c.account, name); err != nil {
		c.storeFailed(name, err)
		return
	}
	c.ok("", "")
}

func (c *session) cmdRenameScript(cmd command) {
	if !c.args(cmd, "RENAMESCRIPT s s") {
		return
	}
	oldName, ok := c.name(cmd.args[0])
	if !ok {
		return
	}
	newName, ok := c.name(cmd.args[1])
	if !ok {
		return
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	if err := c.srv.cfg.Store.RenameScript(ctx, c.account, oldName, newName); err != nil {
		name := oldName
		if errors.Is(err, ErrExists) {
			name = newName
		}
		c.storeFailed(name, err)
		return
	}
	c.ok("", "")
}
