package message

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode/utf8"
)

// normalizeCharset maps the common names of the charsets this package
// converts itself to one name; others are returned lower case.
func normalizeCharset(cs string) string {
	cs = strings.ToLower(strings.TrimSpace(cs))
	switch cs {
	case "utf-8", "utf8":
		return "utf-8"
	case "us-ascii", "ascii", "us_ascii", "ansi_x3.4-1968", "iso646-us", "us":
		return "us-ascii"
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819", "iso-ir-100", "iso_8859-1:1987":
		return "iso-8859-1"
	case "windows-1252", "cp1252", "x-cp1252", "windows1252", "win-1252":
		return "windows-1252"
	case "iso-8859-15", "iso8859-15", "iso_8859-15", "latin-9", "latin9", "l9":
		return "iso-8859-15"
	}
	return cs
}

// ToUTF8 is the one charset decoder of the server: it turns text in
// charset into UTF-8 for the charsets it knows itself (UTF-8, US-ASCII,
// ISO-8859-1, ISO-8859-15, Windows-1252, under their common names; an empty
// charset is taken as US-ASCII). ok is false for any other charset; the
// result is then the input unchanged.
func ToUTF8(charset string, b []byte) (s string, ok bool) {
	switch name := normalizeCharset(charset); name {
	case "", "utf-8", "us-ascii":
		return string(b), true
	case "iso-8859-1", "windows-1252", "iso-8859-15":
		return decodeSingleByte(name, b), true
	}
	return string(b), false
}

// DecodeHeader decodes the RFC 2047 encoded words in a header value with
// ToUTF8. A value with a word in an unknown charset, or a malformed one,
// is kept as written.
func DecodeHeader(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	dec := mime.WordDecoder{CharsetReader: func(charset string, input io.Reader) (io.Reader, error) {
		b, err := io.ReadAll(io.LimitReader(input, 1<<20))
		if err != nil {
			return nil, err
		}
		s, ok := ToUTF8(charset, b)
		if !ok {
			return nil, fmt.Errorf("message: unknown charset %q", charset)
		}
		return strings.NewReader(s), nil
	}}
	d, err := dec.DecodeHeader(v)
	if err != nil {
		return v
	}
	return d
}

// convert is ToUTF8, then the parser's CharsetReader for other charsets.
func (p *Parser) convert(charset string, b []byte) (s string, ok bool) {
	if s, ok := ToUTF8(charset, b); ok {
		return s, true
	}
	if p.opts.CharsetReader != nil {
		if r, err := p.opts.CharsetReader(strings.ToLower(charset), bytes.NewReader(b)); err == nil && r != nil {
			out, err := io.ReadAll(io.LimitReader(r, int64(4*len(b)+16)))
			if err == nil {
				return string(out), true
			}
		}
	}
	return string(b), false
}

// toUTF8 converts what it can and keeps the raw octets otherwise.
func (p *Parser) toUTF8(charset string, b []byte) string {
	s, _ := p.convert(charset, b)
	return s
}

// charsetReader serves mime.WordDecoder, which handles UTF-8, US-ASCII and
// ISO-8859-1 itself.
func (p *Parser) charsetReader(charset string, input io.Reader) (io.Reader, error) {
	b, err := io.ReadAll(io.LimitReader(input, 1<<20))
	if err != nil {
		return nil, err
	}
	s, ok := p.convert(charset, b)
	if !ok {
		return nil, fmt.Errorf("message: unknown charset %q", charset)
	}
	return strings.NewReader(s), nil
}

// decodeText decodes RFC 2047 encoded words. Text with a word in an
// unknown charset is kept as written, so a client can still decode it.
func (p *Parser) decodeText(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := p.words.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

// decodeSingleByte converts ISO-8859-1, ISO-8859-15 or Windows-1252.
func decodeSingleByte(charset string, b []byte) string {
	// Windows-1252 0x80-0x9f; the five unassigned octets map to the C1
	// controls, as the WHATWG encoding standard does.
	cp1252 := [32]rune{
		0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
		0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
		0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
		0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
	}
	out := make([]byte, 0, len(b)+len(b)/2)
	for _, c := range b {
		r := rune(c)
		switch {
		case c < 0x80:
			out = append(out, c)
			continue
		case charset == "windows-1252" && c < 0xa0:
			r = cp1252[c-0x80]
		case charset == "iso-8859-15":
			switch c {
			case 0xa4:
				r = 0x20AC
			case 0xa6:
				r = 0x0160
			case 0xa8:
				r = 0x0161
			case 0xb4:
				r = 0x017D
			case 0xb8:
				r = 0x017E
			case 0xbc:
				r = 0x0152
			case 0xbd:
				r = 0x0153
			case 0xbe:
				r = 0x0178
			}
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}
