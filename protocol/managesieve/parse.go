package managesieve

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The command syntax of RFC 5804 §4: a keyword, then arguments separated
// by spaces, each an atom (a number, "ACTIVE"), a quoted string or a
// literal. A literal is announced at the end of a line as {n+} (RFC 5804
// has clients send only this form) or {n} (older clients; ManageSieve has
// no continuation request, so the octets are read at once in both cases),
// and its n octets follow the CRLF; the command then goes on on the same
// line after them.

// argKind is how an argument was sent.
type argKind uint8

const (
	argAtom    argKind = iota
	argQuoted          // "..."
	argLiteral         // {n+} CRLF octets
)

// arg is one argument as sent (quotes and escapes removed).
type arg struct {
	kind argKind
	val  string
}

func (a arg) isString() bool { return a.kind != argAtom }

// command is one parsed client command.
type command struct {
	// Name is the keyword, upper-cased.
	Name string
	args []arg
}

// parseError is a command the reader read to its end but could not
// understand; the session answers NO with its text and goes on.
type parseError struct {
	Msg string
	// TooBig: a literal was over the size limit (and was thrown away).
	TooBig bool
}

func (e *parseError) Error() string { return e.Msg }

var (
	// errEmpty is an empty line: ignored.
	errEmpty = errors.New("managesieve: empty command")
	// errDesync: the client announced more than the reader will read and
	// throw away; the only safe answer is BYE and close.
	errDesync = errors.New("managesieve: literal too large to skip")
)

// maxLiterals bounds the literals of one command: the longest command
// (PUTSCRIPT, RENAMESCRIPT) has two strings.
const maxLiterals = 4

// maxLiteralHeader bounds the digits of a literal's length: more than a
// 32-bit number (RFC 5804's number) is never read.
const maxLiteralDigits = 10

// cmdReader reads whole commands from the client, keeping to the limits.
type cmdReader struct {
	r *bufio.Reader
	// maxLiteral is the largest literal kept; a larger one is read and
	// thrown away (parseError.TooBig), up to maxDiscard octets per command,
	// beyond which the reader gives up (errDesync).
	maxLiteral int
	maxDiscard int64
	buf        []byte
}

// newCmdReader reads lines of at most maxLine octets (CRLF included).
func newCmdReader(r io.Reader, maxLine, maxLiteral int, maxDiscard int64) *cmdReader {
	return &cmdReader{r: bufio.NewReaderSize(r, maxLine), maxLiteral: maxLiteral, maxDiscard: maxDiscard}
}

// readLine returns one line without its line end. A line over the
// buffer's size is read to its end and dropped: long is true, and line is
// its last few octets (so a literal announced at its end is still seen).
func (cr *cmdReader) readLine() (line []byte, long bool, err error) {
	line, err = cr.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		var tail []byte
		keep := func(b []byte) {
			tail = append(tail, b...)
			if len(tail) > 32 {
				tail = append(tail[:0], tail[len(tail)-32:]...)
			}
		}
		keep(line)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = cr.r.ReadSlice('\n')
			keep(line)
		}
		if err != nil {
			return nil, true, err
		}
		return trimEOL(tail), true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return trimEOL(line), false, nil
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// cutLiteral splits a literal header off the end of a line: "{12+}" or
// "{12}". ok is false when the line does not end in one. n is -1 when the
// header has too many digits to be read.
func cutLiteral(line []byte) (rest []byte, n int64, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return line, 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return line, 0, false
	}
	digits := bytes.TrimSuffix(line[open+1:len(line)-1], []byte("+"))
	if len(digits) == 0 {
		return line, 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return line, 0, false
		}
	}
	if len(digits) > maxLiteralDigits {
		return line[:open], -1, true
	}
	v, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return line[:open], -1, true
	}
	return line[:open], v, true
}

// readArgs reads one command, or one AUTHENTICATE response, to its end:
// its lines and the literals between them. A command it cannot understand
// is still read to its end and comes back as a *parseError. An I/O error,
// errEmpty or errDesync is returned as such.
func (cr *cmdReader) readArgs() ([]arg, error) {
	var (
		args     []arg
		perr     *parseError
		literals int
		kept     int   // literal octets kept
		skipped  int64 // literal octets thrown away
	)
	fail := func(e *parseError) {
		if perr == nil {
			perr = e
		}
	}
	for {
		line, long, err := cr.readLine()
		if err != nil {
			return nil, err
		}
		body, n, lit := cutLiteral(line)
		if long {
			fail(&parseError{Msg: "line too long"})
		} else if perr == nil {
			toks, terr := tokenize(body)
			if terr != nil {
				fail(&parseError{Msg: terr.Error()})
			}
			args = append(args, toks...)
		}
		if !lit {
			break
		}
		literals++
		if n < 0 || n > cr.maxDiscard-skipped {
			return nil, errDesync
		}
		if literals > maxLiterals {
			fail(&parseError{Msg: "too many literals in one command"})
		}
		if n > int64(cr.maxLiteral) || kept+int(n) > cr.maxLiteral+maxNameLength*2 {
			fail(&parseError{Msg: fmt.Sprintf("literal of %d octets is over the limit of %d", n, cr.maxLiteral), TooBig: true})
		}
		if perr != nil {
			if _, err := io.CopyN(io.Discard, cr.r, n); err != nil {
				return nil, err
			}
			skipped += n
			continue
		}
		if cap(cr.buf) < int(n) {
			cr.buf = make([]byte, n)
		}
		b := cr.buf[:n]
		if _, err := io.ReadFull(cr.r, b); err != nil {
			return nil, err
		}
		kept += int(n)
		args = append(args, arg{kind: argLiteral, val: string(b)})
	}
	if perr != nil {
		return nil, perr
	}
	if len(args) == 0 {
		return nil, errEmpty
	}
	return args, nil
}

// readCommand reads one command: a keyword atom and its arguments.
func (cr *cmdReader) readCommand() (command, error) {
	args, err := cr.readArgs()
	if err != nil {
		return command{}, err
	}
	return commandOf(args)
}

func commandOf(args []arg) (command, error) {
	if args[0].kind != argAtom {
		return command{}, &parseError{Msg: "a command starts with its name"}
	}
	return command{Name: strings.ToUpper(args[0].val), args: args[1:]}, nil
}

// parseCommand parses one command from b: what the fuzz test and the unit
// tests drive, with the server's default limits.
func parseCommand(b []byte) (command, error) {
	cr := newCmdReader(bytes.NewReader(b), defaultMaxLine, DefaultMaxScriptSize, defaultMaxDiscard)
	return cr.readCommand()
}

// tokenize splits one line (without a literal header) into atoms and
// quoted strings.
func tokenize(line []byte) ([]arg, error) {
	var out []arg
	i := 0
	for i < len(line) {
		switch c := line[i]; {
		case c == ' ':
			i++
		case c == '"':
			s, n, err := unquote(line[i:])
			if err != nil {
				return nil, err
			}
			out = append(out, arg{kind: argQuoted, val: s})
			i += n
		case isAtomChar(c):
			j := i
			for j < len(line) && isAtomChar(line[j]) {
				j++
			}
			out = append(out, arg{kind: argAtom, val: string(line[i:j])})
			i = j
		case c == '{':
			return nil, errors.New("a literal must end its line")
		default:
			return nil, fmt.Errorf("unexpected character 0x%02x", c)
		}
	}
	return out, nil
}

// isAtomChar is RFC 5804's ATOM-CHAR: printable ASCII but the specials.
func isAtomChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`(){"\%*`, rune(c))
}

// unquote reads a quoted string at the start of b and returns it and the
// octets it took. Only \" and \\ are escapes (QUOTED-SPECIALS); CR, LF and
// NUL cannot occur in one.
func unquote(b []byte) (string, int, error) {
	var s []byte
	for i := 1; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			return string(s), i + 1, nil
		case '\\':
			if i+1 < len(b) && (b[i+1] == '"' || b[i+1] == '\\') {
				s = append(s, b[i+1])
				i++
				continue
			}
			return "", 0, errors.New(`a quoted string may escape only " and \`)
		case 0, '\r', '\n':
			return "", 0, errors.New("control character in a quoted string")
		default:
			s = append(s, c)
		}
	}
	return "", 0, errors.New("unterminated quoted string")
}

// maxQuoted is the longest string sent quoted (RFC 5804 §4: at most 1024
// octets); longer ones, and any with CR, LF or NUL, go as literals.
const maxQuoted = 1024

// appendString writes s as a quoted string or, when it cannot be one, as a
// server literal {n} CRLF s.
func appendString(b []byte, s string) []byte {
	if len(s) <= maxQuoted && !strings.ContainsAny(s, "\r\n\x00") {
		b = append(b, '"')
		for i := 0; i < len(s); i++ {
			if s[i] == '"' || s[i] == '\\' {
				b = append(b, '\\')
			}
			b = append(b, s[i])
		}
		return append(b, '"')
	}
	b = append(b, '{')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, "}\r\n"...)
	return append(b, s...)
}
