package smtp

import (
	"bufio"
	"io"
	"reflect"
	"unsafe"

	gosmtp "github.com/emersion/go-smtp"
)

// Message data after DATA is read here, not by go-smtp.
//
// go-smtp v0.25.1 (and v0.26.0: its data.go is unchanged) ends DATA with a
// state machine that forgets a CR in two places: after a CR, or after a
// "." and a CR at the start of a line, a second CR is taken for ordinary
// data, so the CRLF that follows it does not start a line, and a
// "\r\r\n.\r\n" does not end the message (the client's next commands become
// message text); and a line that starts ".\r" followed by anything but LF
// loses both bytes. RFC 5321 §4.1.1.4 ends the data at the first
// CRLF.CRLF, whatever came before it.
//
// The library keeps its reader private, and it reads from a buffer above
// TLS that no wrapper of ours can reach after STARTTLS. So Data takes the
// reader over: it finds go-smtp's buffered reader inside it (by
// reflection, checked against the field layout of the pinned version;
// a test fails if an upgrade changes it), reads the data itself with
// dotReader, and when it is done marks go-smtp's reader as at the end, so
// that the library's own drain after Data reads nothing more.

// goSMTPData is the layout of go-smtp's dataReader this file relies on.
const (
	goSMTPDataType  = "dataReader"
	goSMTPDataPkg   = "github.com/emersion/go-smtp"
	goSMTPDataEOF   = 5 // stateEOF in go-smtp's data.go
	goSMTPDataState = "state"
	goSMTPDataBuf   = "r"
)

var bufioReaderType = reflect.TypeOf((*bufio.Reader)(nil))

// takeOverData returns a reader of the message data behind go-smtp's DATA
// reader r, or false if r is not one (BDAT feeds Data through a pipe) or
// its layout is not the one this file knows.
func takeOverData(r io.Reader, maxSize int64) (*dotReader, bool) {
	v := reflect.ValueOf(r)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return nil, false
	}
	e := v.Elem()
	t := e.Type()
	if t.Kind() != reflect.Struct || t.Name() != goSMTPDataType || t.PkgPath() != goSMTPDataPkg {
		return nil, false
	}
	buf, state := e.FieldByName(goSMTPDataBuf), e.FieldByName(goSMTPDataState)
	if !buf.IsValid() || buf.Type() != bufioReaderType || !state.IsValid() || state.Kind() != reflect.Int {
		return nil, false
	}
	// The fields are unexported: reach them through their addresses.
	br := reflect.NewAt(buf.Type(), unsafe.Pointer(buf.UnsafeAddr())).Elem().Interface().(*bufio.Reader)
	if br == nil {
		return nil, false
	}
	st := reflect.NewAt(state.Type(), unsafe.Pointer(state.UnsafeAddr())).Elem()
	return &dotReader{r: br, max: maxSize, done: func() { st.SetInt(goSMTPDataEOF) }}, true
}

// dotReader reads SMTP message data (RFC 5321 §4.5.2): it removes the
// transparency dot at the start of a line and ends at the first
// CRLF "." CRLF. Every other byte, a bare CR or LF included, is passed on
// as it is; the body rules (bodyReader) decide about those. Past max bytes
// of message (dots removed, terminator excluded: the size RFC 1870 counts)
// it reports gosmtp.ErrDataTooLarge, and Finish still reads to the end.
type dotReader struct {
	r     *bufio.Reader
	max   int64 // 0: no limit
	done  func()
	state int
	n     int64 // message bytes passed on
	err   error // sticky: io.EOF at the end of the data
}

const (
	dotLineStart = iota // at the start of a line (after CRLF, or the first byte)
	dotDot              // read "." at the start of a line
	dotDotCR            // read ".\r" at the start of a line
	dotCR               // read "\r"
	dotData             // in the middle of a line
)

func (d *dotReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && d.err == nil {
		if d.max > 0 && d.n+int64(n) >= d.max {
			// One byte more would be too much; it is only allowed if it
			// is the start of the terminator.
			if !d.atEnd() {
				if d.err == nil {
					d.err = gosmtp.ErrDataTooLarge
				}
				break
			}
			continue
		}
		c, err := d.r.ReadByte()
		if err != nil {
			d.err = unexpected(err)
			break
		}
		// The CR of ".\r" was held back: at a byte that is not LF it
		// turns out to be data.
		if d.state == dotDotCR {
			if c == '\n' {
				d.err = io.EOF
				break
			}
			// Pass the CR on and read c again after it, so that the limit
			// and the end of p are checked before c is taken.
			p[n] = '\r'
			n++
			d.state = dotCR
			_ = d.r.UnreadByte()
			continue
		}
		switch d.state {
		case dotLineStart:
			switch c {
			case '.':
				d.state = dotDot
				continue
			case '\r':
				d.state = dotCR
			default:
				d.state = dotData
			}
		case dotDot:
			if c == '\r' {
				d.state = dotDotCR
				continue
			}
			d.state = dotData
		case dotCR:
			switch c {
			case '\n':
				d.state = dotLineStart
			case '\r':
			default:
				d.state = dotData
			}
		case dotData:
			if c == '\r' {
				d.state = dotCR
			}
		}
		p[n] = c
		n++
	}
	d.n += int64(n)
	if n > 0 {
		return n, nil
	}
	return 0, d.err
}

// atEnd reads ahead at the size limit: it consumes the terminator and
// sets io.EOF if that is what follows, and otherwise leaves the input as
// it was and returns false. Only the terminator, or the dot and CR of one
// that is still arriving, may follow a message of exactly max bytes.
func (d *dotReader) atEnd() bool {
	var want string
	switch d.state {
	case dotLineStart:
		want = ".\r\n"
	case dotDot:
		want = "\r\n"
	case dotDotCR:
		want = "\n"
	default:
		return false
	}
	for i := 0; i < len(want); i++ {
		c, err := d.r.ReadByte()
		if err != nil {
			d.err = unexpected(err)
			return true
		}
		if c != want[i] {
			_ = d.r.UnreadByte()
			return false
		}
		switch c {
		case '.':
			d.state = dotDot
		case '\r':
			d.state = dotDotCR
		}
	}
	d.err = io.EOF
	return true
}

// Finish reads what is left of the message data, past any size limit,
// and then tells go-smtp the data has ended. It returns the error that
// ended reading, nil at a proper end.
func (d *dotReader) Finish() error {
	d.max = 0
	if d.err == gosmtp.ErrDataTooLarge {
		d.err = nil
	}
	buf := make([]byte, 4096)
	for d.err == nil {
		_, _ = d.Read(buf)
	}
	if d.done != nil {
		d.done()
		d.done = nil
	}
	if d.err == io.EOF {
		return nil
	}
	return d.err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
