package pop3

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Command is one parsed client line.
type Command struct {
	// Name is the keyword in upper case ("RETR"); for an unknown keyword it
	// is still the keyword as sent, upper-cased.
	Name string
	// Args are the space-separated arguments. PASS has at most one: the rest
	// of the line after "PASS ", spaces included (RFC 1939 allows spaces in
	// a password).
	Args []string
}

// Parse errors; each becomes an -ERR line that says what was wrong.
var (
	ErrEmptyLine  = errors.New("empty command line")
	ErrBadKeyword = errors.New("command keyword must be 3 or 4 letters")
	ErrBadChar    = errors.New("control characters in command line")
	ErrLongArg    = errors.New("argument longer than 255 octets")
	ErrTooManyArg = errors.New("too many arguments")
)

// maxArgs bounds the argument list; no POP3 command takes more than two.
const maxArgs = 8

// maxArgLen bounds one argument. RFC 2449 says 40 octets, but user names
// are whole addresses and AUTH initial responses are longer, so the line
// length limit is the real bound; this only stops absurd tokens.
const maxArgLen = 255

// ParseCommand parses one command line. The line may still end in CRLF or
// LF. Keywords are case-insensitive; arguments are separated by one or more
// spaces (RFC 1939 says one; being lenient here costs nothing).
func ParseCommand(line []byte) (Command, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(bytes.Trim(line, " ")) == 0 {
		return Command{}, ErrEmptyLine
	}
	kw, rest, _ := bytes.Cut(line, []byte(" "))
	if len(kw) < 3 || len(kw) > 4 {
		return Command{}, ErrBadKeyword
	}
	for _, c := range kw {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return Command{}, ErrBadKeyword
		}
	}
	cmd := Command{Name: strings.ToUpper(string(kw))}
	if cmd.Name == "PASS" {
		// The password is everything after the first space, as sent.
		if bytes.ContainsAny(rest, "\x00\r\n") {
			return Command{}, ErrBadChar
		}
		if len(rest) > 0 {
			cmd.Args = []string{string(rest)}
		}
		return cmd, nil
	}
	for _, c := range rest {
		if c < 0x20 || c == 0x7f {
			return Command{}, ErrBadChar
		}
	}
	for f := range bytes.SplitSeq(rest, []byte(" ")) {
		if len(f) == 0 {
			continue
		}
		if len(f) > maxArgLen {
			return Command{}, ErrLongArg
		}
		if len(cmd.Args) == maxArgs {
			return Command{}, ErrTooManyArg
		}
		cmd.Args = append(cmd.Args, string(f))
	}
	return cmd, nil
}

// parseNumber parses a message number or line count: decimal digits only
// (no sign, no spaces), at most maxDigits of them.
func parseNumber(s string) (uint64, bool) {
	const maxDigits = 18 // fits in int64 with room to spare
	if s == "" || len(s) > maxDigits {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
