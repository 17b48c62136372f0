package imap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
)

// guardConn stands between a client and imapserver (go-imap v2.0.0-beta.8)
// and keeps the library in step with the client where its connection code
// loses it:
//
//   - a command over maxCommandBytes makes the library fail in the middle
//     of the line ("max size exceeded", answered NO [SERVERBUG]) and then
//     parse the rest of that line as the next command;
//   - a literal it will not buffer (over 4096 bytes) is refused without a
//     reply, and it goes on parsing whatever comes next as the argument; a
//     non-synchronising literal's data, if the command failed before it,
//     is parsed as commands;
//   - a bare CR ends a line for its error recovery but not for the client;
//   - a line longer than its 4 KiB buffer in IDLE or AUTHENTICATE is
//     answered and its rest parsed as a new command;
//   - its pre-login read timeout is applied twice (60 s instead of 30 s).
//
// So the guard hands the library one piece at a time: a line, or (part of)
// the data of a literal the library accepted. It watches what the library
// writes: a tagged response ends the command, a "+" accepts a literal or
// starts a continuation line (IDLE's DONE, a SASL response). A line it
// will not hand on is refused: at the start of a command the guard answers
// it itself; inside a command it makes the library's read fail with the
// reply, and then ends the line for it. Anything that cannot be refused
// without losing step (an over-long line, a refused literal whose data is
// already on the way) ends the connection after the reply.
//
// It also answers STARTTLS itself (see startTLS) and keeps the pre-login
// idle limit.
//
// Reads happen on imapserver's connection goroutine only; writes may also
// come from the IDLE goroutine, so the output side is under mu.
type guardConn struct {
	net.Conn // the client's connection: plain TCP, or TLS that we terminate

	preLogin time.Duration // idle limit before login
	// startTLS, for a plain connection that may upgrade: it takes over the
	// connection (after the OK was sent) and hands the TLS side to the
	// TLS imapserver instance. nil: STARTTLS is left to the library.
	startTLS func(raw net.Conn)
	// authenticated reports whether the session is logged in; set by the
	// session.
	authenticated func() bool

	// --- input (imapserver's connection goroutine only)
	in       []byte // read from the client, not handed on yet
	pending  []byte // the rest of a line handed on in parts
	scratch  []byte // fill's read buffer
	fail     error  // every Read returns it from now on
	crlfDue  bool   // hand on "\r\n" next: ends the line after a refusal
	atStart  bool   // the next line starts a command
	cmdBytes int    // bytes of the current command handed on (not literal data)
	tag      string
	isAppend bool
	appendN  int     // APPEND: literals seen
	mailLit  bool    // APPEND: the first literal was the mailbox name
	lit      *litAnn // announced at the end of the last line handed on
	litLeft  int64   // data of an accepted literal still to hand on
	// readDeadline is the one imapserver asked for; lineDue bounds the
	// rest of a line that has begun.
	readDeadline, lineDue time.Time

	// --- output
	mu           sync.Mutex
	sawPlus      bool // a "+" line was written since the last Read
	sawDone      bool // a tagged response was written since the last Read
	outStart     bool
	outSkip      int64
	outTail      []byte
	skipGreeting bool   // drop the first line written (after STARTTLS)
	name         string // the current command's name, for rewriting replies
	moved        bool   // STARTTLS took the connection over: Close keeps it open
	bye          string // say this in a BYE when the connection closes
}

// Limits the guard keeps.
const (
	// maxCommandBytes bounds one command's bytes outside APPEND's message
	// literal, literal data included: imapserver's own limit (50 KiB, not
	// counting literals) can then never be reached.
	maxCommandBytes = 50 * 1024
	// maxRawLine bounds a continuation line (DONE, a SASL response): the
	// library reads them into its 4 KiB buffer.
	maxRawLine = 4000
	// maxBufferedLiteral is what imapserver accepts outside APPEND's
	// message (and before login, RFC 7888 LITERAL-, everywhere).
	maxBufferedLiteral = 4096
	guardChunk         = 16 << 10
	// lineTimeout bounds how long the rest of a begun line may take.
	lineTimeout = 30 * time.Second
)

// litAnn is a literal announced at the end of a line.
type litAnn struct {
	size    int64
	nonSync bool
	message bool // APPEND's message: may be large, and is not counted
}

// errMoved ends the library's side of a connection STARTTLS took over.
var errMoved = fmt.Errorf("imap: connection upgraded to TLS: %w", net.ErrClosed)

func newGuard(c net.Conn, preLogin time.Duration, startTLS func(net.Conn)) *guardConn {
	return &guardConn{Conn: c, preLogin: preLogin, startTLS: startTLS, atStart: true, outStart: true}
}

func (g *guardConn) loggedIn() bool { return g.authenticated != nil && g.authenticated() }

// Read hands imapserver the next piece of input.
func (g *guardConn) Read(p []byte) (int, error) {
	for {
		if g.fail != nil {
			return 0, g.fail
		}
		if g.crlfDue {
			g.crlfDue = false
			return copy(p, "\r\n"), nil
		}
		if len(g.pending) > 0 {
			n := copy(p, g.pending)
			g.pending = g.pending[n:]
			return n, nil
		}
		g.mu.Lock()
		plus, done := g.sawPlus, g.sawDone
		g.sawPlus, g.sawDone = false, false
		g.mu.Unlock()
		if done {
			// The library finished the command. A literal it did not read
			// was refused or the command failed before it: a synchronising
			// one never comes (no "+"), a non-synchronising one is on its
			// way and would be parsed as commands.
			if (g.lit != nil && g.lit.nonSync) || g.litLeft > 0 {
				return 0, g.closeWith("Literal data of a refused command; closing the connection")
			}
			g.newCommand()
		}
		if g.litLeft > 0 {
			return g.readLiteral(p)
		}
		if lit := g.lit; lit != nil {
			g.lit = nil
			if lit.nonSync || plus {
				g.litLeft = lit.size
				if !lit.message {
					g.cmdBytes += int(lit.size)
				}
				if g.litLeft == 0 {
					continue
				}
				return g.readLiteral(p)
			}
			// A synchronising literal, and the library reads on without a
			// "+": it refused the literal without saying so.
			return g.refuseInside(no(imap.ResponseCodeTooBig, "Literal too large for this command"))
		}
		raw := plus && !g.atStart
		n, err, again := g.nextLine(p, raw)
		if again {
			continue
		}
		return n, err
	}
}

func (g *guardConn) newCommand() {
	g.atStart, g.lit, g.litLeft, g.cmdBytes = true, nil, 0, 0
	g.tag, g.isAppend, g.appendN, g.mailLit = "", false, 0, false
}

// nextLine hands on the next line, or refuses it. again: the line was
// answered by the guard; read the next one.
func (g *guardConn) nextLine(p []byte, raw bool) (n int, err error, again bool) {
	limit := maxRawLine
	if !raw {
		limit = maxCommandBytes - g.cmdBytes
	}
	line, err := g.readLine(limit)
	if err != nil {
		return 0, err, false
	}
	if line == nil { // over the limit
		if g.atStart {
			return 0, g.closeAnswering(tagOf(g.in), "BAD Command line too long"), false
		}
		return 0, g.closeWith("Command line too long"), false
	}
	if raw {
		return g.handOn(p, line), nil, false
	}
	first := g.atStart
	if first && len(bytes.TrimRight(line, "\r\n")) == 0 {
		return 0, nil, true // an empty line: imapserver would hang up
	}
	if first {
		g.startCommand(line)
	}
	if err := lineProblem(line); err != "" {
		if first {
			return 0, g.closeAnswering(g.tag, "BAD "+err), false
		}
		return 0, g.closeWith(err), false
	}
	if first && g.startTLS != nil && !g.loggedIn() && isStartTLS(line) {
		return 0, g.upgrade(), false
	}
	g.cmdBytes += len(line)
	lit, ok := literalAtEnd(line)
	if !ok {
		return g.handOn(p, line), nil, false
	}
	lit.message = g.isAppend && !(first && isMailboxLiteral(line)) && g.appendN == boolInt(g.mailLit)
	if g.isAppend {
		if first && isMailboxLiteral(line) {
			g.mailLit = true
		}
		g.appendN++
	}
	if refusal := g.literalRefusal(lit); refusal != "" {
		switch {
		case lit.nonSync:
			// Its data is already on the way (RFC 7888: BAD, then read the
			// data or close).
			if first {
				return 0, g.closeAnswering(g.tag, "BAD "+refusal), false
			}
			return 0, g.closeWith(refusal), false
		case first:
			g.answer(g.tag, "NO [TOOBIG] "+refusal)
			g.newCommand()
			return 0, nil, true
		default:
			n, err := g.refuseInside(no(imap.ResponseCodeTooBig, refusal))
			return n, err, false
		}
	}
	g.lit = &lit
	return g.handOn(p, line), nil, false
}

// literalRefusal says why a literal is not acceptable, or "".
func (g *guardConn) literalRefusal(lit litAnn) string {
	switch {
	case lit.size <= maxBufferedLiteral:
		return ""
	case !g.loggedIn():
		// Before login only LITERAL- is advertised (RFC 7888 section 4).
		return fmt.Sprintf("Literals are limited to %d bytes before login", maxBufferedLiteral)
	case !lit.message:
		return fmt.Sprintf("Literals are limited to %d bytes for this command", maxBufferedLiteral)
	}
	return ""
}

func (g *guardConn) startCommand(line []byte) {
	g.atStart = false
	tag, rest, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(" "))
	g.tag = string(tag)
	name, rest, _ := bytes.Cut(rest, []byte(" "))
	upper := string(bytes.ToUpper(name))
	if upper == "UID" {
		sub, _, _ := bytes.Cut(rest, []byte(" "))
		upper += " " + string(bytes.ToUpper(sub))
	}
	g.isAppend = upper == "APPEND"
	g.mu.Lock()
	g.name = upper
	g.mu.Unlock()
}

// handOn gives the library line; a line longer than p (bufio's 4 KiB
// buffer) goes in parts: bufio asks again only once it used up the last.
func (g *guardConn) handOn(p []byte, line []byte) int {
	n := copy(p, line)
	g.pending = line[n:]
	return n
}

// readLiteral hands on accepted literal data.
func (g *guardConn) readLiteral(p []byte) (int, error) {
	if len(g.in) == 0 {
		// Straight into the library's buffer: no copy for a large APPEND.
		n, err := g.readClient(p[:min(int64(len(p)), g.litLeft)])
		g.litLeft -= int64(n)
		if n > 0 {
			return n, nil
		}
		return 0, err
	}
	n := copy(p, g.in[:min(int64(len(g.in)), g.litLeft)])
	g.in = g.in[n:]
	g.litLeft -= int64(n)
	return n, nil
}

// readLine returns the next line (with its LF) from the client, or nil if
// it is longer than limit.
func (g *guardConn) readLine(limit int) ([]byte, error) {
	for {
		if i := bytes.IndexByte(g.in, '\n'); i >= 0 {
			g.lineDue = time.Time{}
			if i+1 > limit {
				return nil, nil
			}
			line := g.in[: i+1 : i+1]
			g.in = g.in[i+1:]
			return line, nil
		}
		if len(g.in) > limit {
			return nil, nil
		}
		if len(g.in) > 0 && g.lineDue.IsZero() {
			// Once a line has begun, the rest must come soon (imapserver
			// gave a command 30 s from its first byte).
			g.lineDue = time.Now().Add(lineTimeout)
		}
		err := g.fill()
		if err != nil {
			return nil, err
		}
	}
}

// fill reads more from the client into g.in.
func (g *guardConn) fill() error {
	if len(g.scratch) == 0 {
		g.scratch = make([]byte, guardChunk)
	}
	n, err := g.readClient(g.scratch)
	g.in = append(g.in, g.scratch[:n]...)
	if n > 0 {
		return nil
	}
	return err
}

// readClient reads from the client under imapserver's read deadline, or
// the pre-login idle limit if that comes first. A failed read fails every
// later one too (imapserver reads again after a timeout, which doubled its
// own pre-login limit).
func (g *guardConn) readClient(p []byte) (int, error) {
	deadline := g.readDeadline
	if !g.lineDue.IsZero() && (deadline.IsZero() || g.lineDue.Before(deadline)) {
		deadline = g.lineDue
	}
	preLogin := !g.loggedIn() && g.preLogin > 0
	if preLogin {
		if d := time.Now().Add(g.preLogin); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	_ = g.Conn.SetReadDeadline(deadline)
	n, err := g.Conn.Read(p)
	if n > 0 || err == nil {
		return n, nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if g.atStart && preLogin {
			return 0, g.closeAnswering("*", "BYE Autologout; idle for too long")
		}
		g.fail = fmt.Errorf("imap: client idle too long: %w", net.ErrClosed)
		return 0, g.fail
	}
	g.fail = err
	return 0, err
}

// refuseInside makes the library's read in the middle of a command fail
// with reply, then ends the line for it, so its error recovery stops there.
func (g *guardConn) refuseInside(reply *imap.Error) (int, error) {
	g.crlfDue = true
	return 0, reply
}

// closeWith fails the command being read with a BAD and ends the
// connection after it.
func (g *guardConn) closeWith(text string) error {
	g.mu.Lock()
	g.bye = text
	g.mu.Unlock()
	g.fail = &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: text}
	return g.fail
}

// closeAnswering answers at the start of a command (the library is not
// writing then) and ends the connection.
func (g *guardConn) closeAnswering(tag, reply string) error {
	g.answer(tag, reply)
	g.fail = fmt.Errorf("imap: refused client input: %s: %w", reply, net.ErrClosed)
	if tag != "*" {
		g.mu.Lock()
		g.bye = "Closing the connection after a refused command"
		g.mu.Unlock()
	}
	return g.fail
}

// answer writes a response line of the guard's own.
func (g *guardConn) answer(tag, reply string) {
	_ = g.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = g.Conn.Write([]byte(tag + " " + reply + "\r\n"))
	_ = g.Conn.SetWriteDeadline(time.Time{})
}

// upgrade answers STARTTLS and hands the connection to the TLS instance.
// Input sent after the command, before the handshake, is dropped (it
// would otherwise be taken as sent inside TLS).
func (g *guardConn) upgrade() error {
	g.in = nil
	g.answer(g.tag, "OK Begin TLS negotiation now")
	g.mu.Lock()
	g.moved = true
	g.mu.Unlock()
	g.fail = errMoved
	g.startTLS(g.Conn)
	return g.fail
}

// SetReadDeadline records imapserver's deadline; fill applies it (with
// the pre-login limit).
func (g *guardConn) SetReadDeadline(t time.Time) error {
	g.readDeadline = t
	return nil
}

func (g *guardConn) SetDeadline(t time.Time) error {
	g.readDeadline = t
	return g.Conn.SetWriteDeadline(t)
}

// Write passes the library's output on and notes what the Read side needs:
// "+" lines and tagged responses (skipping literal data).
func (g *guardConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	out := p
	if g.skipGreeting {
		i := bytes.IndexByte(out, '\n')
		if i < 0 {
			g.mu.Unlock()
			return len(p), nil
		}
		g.skipGreeting = false
		out = out[i+1:]
	}
	if g.outStart && g.outSkip == 0 {
		out = g.rewrite(out)
	}
	g.track(out)
	g.mu.Unlock()
	if len(out) > 0 {
		if _, err := g.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (g *guardConn) track(b []byte) {
	for i := 0; i < len(b); i++ {
		if g.outSkip > 0 {
			n := min(int64(len(b)-i), g.outSkip)
			g.outSkip -= n
			i += int(n) - 1
			continue
		}
		c := b[i]
		if g.outStart {
			g.outStart = false
			switch c {
			case '+':
				g.sawPlus = true
			case '*':
			default:
				g.sawDone = true
			}
		}
		if c == '\n' {
			if lit, ok := literalAtEnd(g.outTail); ok {
				g.outSkip = lit.size
			}
			g.outTail = g.outTail[:0]
			g.outStart = true
			continue
		}
		if len(g.outTail) >= 32 {
			copy(g.outTail, g.outTail[1:])
			g.outTail = g.outTail[:31]
		}
		g.outTail = append(g.outTail, c)
	}
}

// libraryBug is imapserver's reply to any error from its command parsing
// that is not a syntax error of its own kind: a sequence set, date or
// modified UTF-7 mailbox name it cannot parse. The session never returns
// such an error, so it is the client's mistake.
var libraryBug = []byte(" NO [SERVERBUG] Internal server error\r\n")

// rewrite replaces imapserver's NO [SERVERBUG] to a client's mistake with
// the reply the mistake deserves (b is one whole response line then:
// imapserver writes each status response in one flush).
func (g *guardConn) rewrite(b []byte) []byte {
	if !bytes.HasSuffix(b, libraryBug) || bytes.IndexByte(b, '\n') != len(b)-1 {
		return b
	}
	tag := string(b[:len(b)-len(libraryBug)])
	if tag == "" || tag == "*" || bytes.ContainsAny([]byte(tag), " \r") {
		return b
	}
	reply := "BAD [CLIENTBUG] Invalid arguments (a sequence set, date or mailbox name that cannot be parsed)"
	if g.loggedIn() {
		switch g.name {
		case "LIST", "LSUB":
			// A name that is not valid modified UTF-7 matches no mailbox.
			reply = "OK " + g.name + " completed"
		case "SELECT", "EXAMINE", "STATUS", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE":
			reply = "NO [NONEXISTENT] No such mailbox (the name is not valid modified UTF-7)"
		case "CREATE":
			reply = "NO [CANNOT] Invalid mailbox name (not valid modified UTF-7)"
		}
	}
	return []byte(tag + " " + reply + "\r\n")
}

// writeUntagged writes an untagged response between two of the library's
// (it flushes each one whole, so none is half written when the session
// runs).
func (g *guardConn) writeUntagged(line string) error {
	_, err := g.Write([]byte("* " + line + "\r\n"))
	return err
}

// Close closes the connection, with a BYE if the guard ended it; after
// STARTTLS, the TLS side lives on.
func (g *guardConn) Close() error {
	g.mu.Lock()
	moved, bye := g.moved, g.bye
	g.bye = ""
	g.mu.Unlock()
	if moved {
		return nil
	}
	if bye != "" {
		g.answer("*", "BYE "+bye)
		// Read (a bounded amount of) what the client is still sending:
		// closing with unread input resets the connection, and the client
		// could lose the reply and the BYE.
		_ = g.Conn.SetReadDeadline(time.Now().Add(time.Second))
		_, _ = io.CopyN(io.Discard, g.Conn, 1<<20)
	}
	return g.Conn.Close()
}

// --- line checks ----------------------------------------------------------------

// lineProblem checks a command line (up to a literal) the way the library
// will read it: a quoted string may not run past the line (the library
// would read on into the next line, or into literal data), and a CR must
// end the line.
func lineProblem(line []byte) string {
	inQuote, escaped := false, false
	body := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	for _, c := range body {
		switch {
		case c == '\r':
			return "CR not followed by LF"
		case escaped:
			escaped = false
		case inQuote && c == '\\':
			escaped = true
		case c == '"':
			inQuote = !inQuote
		}
	}
	if inQuote {
		return "Quoted string not closed on its line"
	}
	return ""
}

// literalAtEnd parses "{n}" or "{n+}" at the end of a line, as imapserver
// does (an optional space, then CRLF or LF).
func literalAtEnd(line []byte) (litAnn, bool) {
	b := bytes.TrimSuffix(line, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	b = bytes.TrimSuffix(b, []byte(" "))
	if len(b) < 3 || b[len(b)-1] != '}' {
		return litAnn{}, false
	}
	b = b[:len(b)-1]
	var lit litAnn
	if b[len(b)-1] == '+' {
		lit.nonSync = true
		b = b[:len(b)-1]
	}
	i := bytes.LastIndexByte(b, '{')
	if i < 0 || i == len(b)-1 {
		return litAnn{}, false
	}
	n, err := strconv.ParseInt(string(b[i+1:]), 10, 64)
	if err != nil || n < 0 || b[i+1] == '+' || b[i+1] == '-' {
		return litAnn{}, false
	}
	lit.size = n
	return lit, true
}

// isMailboxLiteral: "tag APPEND {n}": the literal is the mailbox name.
func isMailboxLiteral(line []byte) bool {
	f := bytes.Fields(line)
	return len(f) == 3 && bytes.HasPrefix(f[2], []byte("{"))
}

func isStartTLS(line []byte) bool {
	f := bytes.Fields(line)
	return len(f) == 2 && bytes.EqualFold(f[1], []byte("STARTTLS"))
}

// tagOf is the tag at the start of buffered input, if it looks like one.
func tagOf(b []byte) string {
	tag, _, found := bytes.Cut(b[:min(len(b), 64)], []byte(" "))
	if !found || len(tag) == 0 {
		return "*"
	}
	for _, c := range tag {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`(){%*"\]+`), c) >= 0 {
			return "*"
		}
	}
	return string(tag)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
