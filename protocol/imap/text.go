package imap

import (
	"bytes"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/mailcluster/mailcluster/message"
)

// Decoders for BINARY fetches and SEARCH BODY/TEXT. Mail is often
// malformed: they decode what they can and never fail on content.

// decodeTransfer undoes a Content-Transfer-Encoding. ok is false for an
// encoding this server does not know (BINARY answers [UNKNOWN-CTE]).
func decodeTransfer(encoding string, b []byte) (out []byte, ok bool) {
	switch strings.ToUpper(strings.TrimSpace(encoding)) {
	case "", "7BIT", "8BIT", "BINARY":
		return b, true
	case "BASE64":
		return decodeBase64(b), true
	case "QUOTED-PRINTABLE":
		return decodeQuotedPrintable(b), true
	}
	return nil, false
}

// isIdentityEncoding reports whether the decoded bytes equal the raw ones.
func isIdentityEncoding(encoding string) bool {
	switch strings.ToUpper(strings.TrimSpace(encoding)) {
	case "", "7BIT", "8BIT", "BINARY":
		return true
	}
	return false
}

var b64 = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t[c] = byte(i)
	}
	return t
}()

// decodeBase64 skips every byte outside the alphabet, stops at padding and
// drops an incomplete last group's partial bits, as mail readers do.
func decodeBase64(b []byte) []byte {
	out := make([]byte, 0, len(b)*3/4)
	var acc uint32
	n := 0
	for _, c := range b {
		if c == '=' {
			break
		}
		v := b64[c]
		if v == 0xff {
			continue
		}
		acc = acc<<6 | uint32(v)
		n++
		if n == 4 {
			out = append(out, byte(acc>>16), byte(acc>>8), byte(acc))
			acc, n = 0, 0
		}
	}
	switch n {
	case 2:
		out = append(out, byte(acc>>4))
	case 3:
		out = append(out, byte(acc>>10), byte(acc>>2))
	}
	return out
}

// decodeQuotedPrintable decodes leniently: a malformed escape is kept as
// written.
func decodeQuotedPrintable(b []byte) []byte {
	out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b)))
	if err == nil {
		return out
	}
	// quotedprintable gives up on bad input; decode by hand instead.
	out = out[:0]
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			i++ // soft line break
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			i += 2
		case i+2 < len(b) && unhex(b[i+1]) < 16 && unhex(b[i+2]) < 16:
			out = append(out, unhex(b[i+1])<<4|unhex(b[i+2]))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return out
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0xff
}

// toUTF8 converts text in a charset to UTF-8 where the server knows the
// charset (message.ToUTF8, the one decoder); other text is searched as it is.
func toUTF8(charset string, b []byte) []byte {
	if s, ok := message.ToUTF8(charset, b); ok {
		return []byte(s)
	}
	return b
}

// headerField is one unfolded field of a raw header.
type headerField struct {
	name  string
	value string // unfolded, raw (not decoded)
}

// headerFields splits a raw header (up to its blank line) into fields.
// Lines that are not fields are skipped.
func headerFields(header []byte) []headerField {
	var out []headerField
	for rest := header; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		content := bytes.TrimRight(line, "\r\n")
		if len(content) == 0 {
			break
		}
		if content[0] == ' ' || content[0] == '\t' {
			if n := len(out); n > 0 {
				out[n-1].value += " " + strings.TrimSpace(string(content))
			}
			continue
		}
		name, value, ok := bytes.Cut(content, []byte(":"))
		if !ok || len(bytes.TrimSpace(name)) == 0 {
			continue
		}
		out = append(out, headerField{name: string(bytes.TrimSpace(name)), value: strings.TrimSpace(string(value))})
	}
	return out
}

// decodeHeaderValue decodes RFC 2047 encoded words where it can.
func decodeHeaderValue(v string) string { return message.DecodeHeader(v) }

// containsFold reports whether haystack contains needle, ignoring case
// (needle already lower case).
func containsFold(haystack []byte, lowerNeedle []byte) bool {
	if len(lowerNeedle) == 0 {
		return true
	}
	if isASCII(lowerNeedle) {
		// Fast path: fold ASCII only, no allocation per byte.
		n := len(lowerNeedle)
		first := lowerNeedle[0]
		for i := 0; i+n <= len(haystack); i++ {
			if asciiLower(haystack[i]) != first {
				continue
			}
			j := 1
			for j < n && asciiLower(haystack[i+j]) == lowerNeedle[j] {
				j++
			}
			if j == n {
				return true
			}
		}
		return false
	}
	return bytes.Contains(bytes.ToLower(haystack), lowerNeedle)
}

func asciiLower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
