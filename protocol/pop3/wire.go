package pop3

import (
	"bytes"
	"errors"
	"io"
)

// The wire form of a stored message is what RETR sends between "+OK" and
// the terminating ".": the stored octets with every LF that has no CR
// before it sent as CRLF, and, if the last line has no line end, one added
// (LF after a trailing CR, CRLF otherwise). An empty message stays empty.
// Bare CRs inside a line are sent as they are. LIST and STAT report the
// length of this form; dot-stuffing comes on top and is not counted.
//
// wireSize and encoder implement the same rule, one counting and one
// writing; the tests check that they agree on arbitrary input.

// chunkSize is how much of a body is read at once.
const chunkSize = 64 << 10

// wireSize returns the length of the wire form of the size octets in r.
func wireSize(r io.ReaderAt, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	buf := make([]byte, min(chunkSize, size))
	total := size
	var prev byte // last octet of the previous chunk
	for off := int64(0); off < size; {
		want := min(int64(len(buf)), size-off)
		n, err := r.ReadAt(buf[:want], off)
		if int64(n) < want {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		chunk := buf[:n]
		lf := int64(bytes.Count(chunk, []byte{'\n'}))
		crlf := int64(bytes.Count(chunk, []byte("\r\n")))
		if prev == '\r' && chunk[0] == '\n' {
			crlf++
		}
		total += lf - crlf
		prev = chunk[n-1]
		off += int64(n)
	}
	switch prev {
	case '\n':
	case '\r':
		total++
	default:
		total += 2
	}
	return total, nil
}

// errTopDone stops a TOP once its lines are written.
var errTopDone = errors.New("pop3: requested lines written")

// encoder writes the wire form of a message, dot-stuffed (RFC 1939 3),
// to w. Feed it the stored octets in pieces of any size, then call Finish
// and write the terminating ".\r\n" yourself.
type encoder struct {
	w io.Writer
	// octets counts what the wire form has so far (not the stuffed dots).
	octets int64

	lineStart bool // the next octet starts a line
	prevCR    bool // the last octet written was CR
	lineLen   int  // octets of the current line so far (without its end)

	// TOP: stop after the header, the blank line, and bodyLines lines.
	top       bool
	bodyLines uint64
	inBody    bool
	done      bool
}

func newEncoder(w io.Writer) *encoder { return &encoder{w: w, lineStart: true} }

// newTopEncoder stops (Write returns errTopDone) after the header, the
// blank line that ends it and n lines of the body.
func newTopEncoder(w io.Writer, n uint64) *encoder {
	e := newEncoder(w)
	e.top, e.bodyLines = true, n
	return e
}

var (
	crlf     = []byte("\r\n")
	cr       = []byte("\r")
	dotStuff = []byte(".")
)

// Write encodes p. It returns errTopDone once a TOP encoder has written all
// it should; the rest of p is then ignored.
func (e *encoder) Write(p []byte) (int, error) {
	if e.done {
		return 0, errTopDone
	}
	start := 0 // p[start:i] is written but not yet passed on
	for i := 0; i < len(p); i++ {
		c := p[i]
		if e.lineStart {
			e.lineStart = false
			if c == '.' {
				if err := e.flush(p[start:i]); err != nil {
					return 0, err
				}
				start = i
				if _, err := e.w.Write(dotStuff); err != nil {
					return 0, err
				}
			}
		}
		if c != '\n' {
			// Fast path: skip to the next LF.
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				e.lineLen += len(p) - i
				e.prevCR = p[len(p)-1] == '\r'
				break
			}
			e.lineLen += j
			i += j
			e.prevCR = p[i-1] == '\r'
		}
		// p[i] is an LF.
		if !e.prevCR {
			if err := e.flush(p[start:i]); err != nil {
				return 0, err
			}
			start = i
			if _, err := e.w.Write(cr); err != nil {
				return 0, err
			}
			e.octets++
		}
		blank := e.lineLen == 0 || (e.lineLen == 1 && e.prevCR)
		e.prevCR, e.lineLen, e.lineStart = false, 0, true
		if e.top {
			switch {
			case !e.inBody:
				e.inBody = blank
			default:
				e.bodyLines--
			}
			if e.inBody && e.bodyLines == 0 {
				if err := e.flush(p[start : i+1]); err != nil {
					return 0, err
				}
				e.done = true
				return i + 1, errTopDone
			}
		}
	}
	if err := e.flush(p[start:]); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (e *encoder) flush(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := e.w.Write(b)
	e.octets += int64(n)
	return err
}

// Finish ends an unterminated last line.
func (e *encoder) Finish() error {
	if e.done || e.lineStart {
		return nil
	}
	end := crlf
	if e.prevCR {
		end = crlf[1:]
	}
	e.lineStart = true
	n, err := e.w.Write(end)
	e.octets += int64(n)
	return err
}
