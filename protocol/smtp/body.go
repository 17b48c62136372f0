package smtp

import (
	"io"
	"strconv"

	gosmtp "github.com/emersion/go-smtp"
)

// bodyRules say what message data is acceptable.
type bodyRules struct {
	maxLine     int  // longest line, CRLF included
	utf8Headers bool // 8-bit header bytes allowed (SMTPUTF8 or Allow8BitHeaders)
	fixBare     bool // turn bare LF / bare CR into CRLF instead of refusing
}

// bodyError is message data that breaks a rule: the client gets reply and
// the store keeps nothing.
type bodyError struct {
	reason string // metric label
	reply  *gosmtp.SMTPError
}

func (e *bodyError) Error() string { return e.reply.Message }

func newBodyError(reason string, code int, enh gosmtp.EnhancedCode, msg string) *bodyError {
	return &bodyError{reason: reason, reply: &gosmtp.SMTPError{Code: code, EnhancedCode: enh, Message: msg}}
}

var (
	errBareLF = newBodyError("bare_lf", 554, gosmtp.EnhancedCode{5, 6, 0},
		"Message refused: bare LF (line feed without carriage return) in message data; SMTP requires CRLF line endings")
	errBareCR = newBodyError("bare_cr", 554, gosmtp.EnhancedCode{5, 6, 0},
		"Message refused: bare CR (carriage return without line feed) in message data; SMTP requires CRLF line endings")
	errNUL = newBodyError("nul", 554, gosmtp.EnhancedCode{5, 6, 0},
		"Message refused: NUL byte in message data")
	errHeaderSyntax = newBodyError("header_syntax", 554, gosmtp.EnhancedCode{5, 6, 0},
		"Message refused: malformed header line (every header line needs a field name and a colon; the header ends at the first empty line)")
	err8BitHeader = newBodyError("8bit_header", 554, gosmtp.EnhancedCode{5, 6, 7},
		"Message refused: 8-bit characters in the message header, but MAIL FROM had no SMTPUTF8 parameter")
)

func errLineTooLong(limit int) *bodyError {
	return newBodyError("line_too_long", 554, gosmtp.EnhancedCode{5, 6, 0},
		"Message refused: a line is longer than "+strconv.Itoa(limit)+" bytes")
}

// header line states
const (
	hdrLineStart = iota // at the start of a header line
	hdrName             // in a field name
	hdrNameWSP          // white space after a field name (obsolete syntax), colon expected
	hdrValue            // after the colon, or in a continuation line
)

// bodyReader checks message data as the store streams it: line endings,
// NUL bytes, line length and the header syntax, without holding more than
// one read buffer. It counts the bytes it passes on and calls onEOF with the
// total before reporting the end, so a final check can still refuse the
// message before anything is committed.
type bodyReader struct {
	r     io.Reader
	rules bodyRules
	onEOF func(size int64) error

	in  []byte
	out []byte
	off int // read position in out

	n        int64 // bytes passed on
	err      error // sticky
	srcErr   error // first error from r other than io.EOF
	prevCR   bool  // the last byte was CR: the next must be LF
	lineLen  int   // bytes in the current line, line ending excluded
	inHeader bool
	hdr      int  // header line state
	anyLine  bool // a header line has been seen
}

func newBodyReader(r io.Reader, rules bodyRules, onEOF func(int64) error) *bodyReader {
	return &bodyReader{r: r, rules: rules, onEOF: onEOF, in: make([]byte, 32<<10), inHeader: true}
}

// Size is the number of bytes passed on so far.
func (b *bodyReader) Size() int64 { return b.n }

// SourceErr is the first read error of the underlying reader (size limit,
// timeout, client gone), if any.
func (b *bodyReader) SourceErr() error { return b.srcErr }

// Err is the error that ended reading, if any.
func (b *bodyReader) Err() error {
	if b.err == io.EOF {
		return nil
	}
	return b.err
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for b.off == len(b.out) {
		if b.err != nil {
			return 0, b.err
		}
		b.out, b.off = b.out[:0], 0
		n, err := b.r.Read(b.in)
		if n > 0 {
			if perr := b.process(b.in[:n]); perr != nil {
				b.err = perr
				return 0, perr
			}
		}
		if err != nil {
			if err != io.EOF {
				b.srcErr, b.err = err, err
				return 0, err
			}
			if ferr := b.finish(); ferr != nil {
				b.err = ferr
				return 0, ferr
			}
			b.err = io.EOF
		}
	}
	n := copy(p, b.out[b.off:])
	b.off += n
	b.n += int64(n)
	return n, nil
}

// special marks the bytes that need a look in the message body: line
// endings and NUL. Everything else is copied in runs. A lookup table, never
// written.
var special = [256]bool{'\r': true, '\n': true, 0: true}

// process checks data and appends what to pass on to b.out.
func (b *bodyReader) process(data []byte) error {
	for i := 0; i < len(data); {
		if !b.inHeader && !b.prevCR {
			// Fast path: a run of ordinary body bytes.
			j := i
			for j < len(data) && !special[data[j]] {
				j++
			}
			if b.lineLen+(j-i)+2 > b.rules.maxLine {
				return errLineTooLong(b.rules.maxLine)
			}
			b.lineLen += j - i
			b.out = append(b.out, data[i:j]...)
			if i = j; i == len(data) {
				break
			}
		}
		c := data[i]
		i++
		if b.prevCR {
			b.prevCR = false
			if c == '\n' {
				if err := b.endLine(); err != nil {
					return err
				}
				b.out = append(b.out, '\r', '\n')
				continue
			}
			if !b.rules.fixBare {
				return errBareCR
			}
			if err := b.endLine(); err != nil {
				return err
			}
			b.out = append(b.out, '\r', '\n')
		}
		switch c {
		case '\r':
			b.prevCR = true
			continue
		case '\n':
			if !b.rules.fixBare {
				return errBareLF
			}
			if err := b.endLine(); err != nil {
				return err
			}
			b.out = append(b.out, '\r', '\n')
			continue
		case 0:
			return errNUL
		}
		b.lineLen++
		if b.lineLen+2 > b.rules.maxLine {
			return errLineTooLong(b.rules.maxLine)
		}
		if b.inHeader {
			if err := b.headerByte(c); err != nil {
				return err
			}
		}
		b.out = append(b.out, c)
	}
	return nil
}

// headerByte checks one byte of a header line (not a line ending).
func (b *bodyReader) headerByte(c byte) error {
	if c >= 0x80 && !b.rules.utf8Headers {
		return err8BitHeader
	}
	switch b.hdr {
	case hdrLineStart:
		switch {
		case c == ' ' || c == '\t':
			if !b.anyLine {
				return errHeaderSyntax // a continuation of nothing
			}
			b.hdr = hdrValue
		case c > ' ' && c < 0x7f && c != ':':
			b.hdr = hdrName
		default:
			return errHeaderSyntax
		}
		b.anyLine = true
	case hdrName:
		switch {
		case c == ':':
			b.hdr = hdrValue
		case c == ' ' || c == '\t':
			b.hdr = hdrNameWSP
		case c > ' ' && c < 0x7f:
		default:
			return errHeaderSyntax
		}
	case hdrNameWSP:
		switch c {
		case ':':
			b.hdr = hdrValue
		case ' ', '\t':
		default:
			return errHeaderSyntax
		}
	}
	return nil
}

// endLine is called at each line ending.
func (b *bodyReader) endLine() error {
	if b.inHeader {
		switch b.hdr {
		case hdrLineStart:
			b.inHeader = false // the empty line ends the header
		case hdrName, hdrNameWSP:
			return errHeaderSyntax
		}
		b.hdr = hdrLineStart
	}
	b.lineLen = 0
	return nil
}

// finish runs at the end of the data.
func (b *bodyReader) finish() error {
	if b.prevCR {
		if !b.rules.fixBare {
			return errBareCR
		}
		b.prevCR = false
		b.out = append(b.out, '\r', '\n')
	}
	if b.inHeader && (b.hdr == hdrName || b.hdr == hdrNameWSP) {
		return errHeaderSyntax
	}
	if b.onEOF != nil {
		return b.onEOF(b.n + int64(len(b.out)-b.off))
	}
	return nil
}
