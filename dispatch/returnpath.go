package dispatch

import (
	"bufio"
	"bytes"
	"io"
)

// withoutReturnPath passes a stored message on without its Return-Path
// header fields. The node that took the message wrote one for its local
// copies, but a message relayed onwards must not carry one (RFC 5321
// §4.4): the final delivery adds its own from the envelope. Everything
// after the header passes through untouched.
func withoutReturnPath(r io.Reader) io.Reader {
	return &returnPathFilter{br: bufio.NewReader(r), inHeader: true}
}

type returnPathFilter struct {
	br       *bufio.Reader
	inHeader bool
	dropping bool   // inside a Return-Path field (its continuation lines too)
	pending  []byte // a kept header line not yet read out
}

func (f *returnPathFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		if !f.inHeader {
			return f.br.Read(p)
		}
		line, err := f.br.ReadBytes('\n')
		if len(line) == 0 {
			return 0, err
		}
		switch {
		case len(bytes.TrimRight(line, "\r\n")) == 0:
			f.inHeader = false // the blank line ends the header
			f.dropping = false
		case line[0] == ' ' || line[0] == '\t':
			// A continuation line belongs to the field before it.
		default:
			f.dropping = len(line) >= 12 && bytes.EqualFold(line[:12], []byte("return-path:"))
		}
		if !f.dropping {
			f.pending = line
		}
		if err != nil && err != io.EOF {
			return 0, err
		}
		if err == io.EOF && f.dropping {
			return 0, io.EOF
		}
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

// readCloser joins a reader to the Close of what it reads from.
type readCloser struct {
	io.Reader
	io.Closer
}
