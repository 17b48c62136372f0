package smtp

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	gosmtp "github.com/emersion/go-smtp"
)

func readDot(t *testing.T, in string, max int64, chunk bool) (string, string, error) {
	t.Helper()
	var src io.Reader = strings.NewReader(in)
	if chunk {
		src = iotest.OneByteReader(src)
	}
	br := bufio.NewReader(src)
	d := &dotReader{r: br, max: max}
	var r io.Reader = d
	if chunk {
		r = iotest.OneByteReader(d)
	}
	got, err := io.ReadAll(r)
	if ferr := d.Finish(); err == nil {
		err = ferr
	}
	rest, _ := io.ReadAll(br)
	return string(got), string(rest), err
}

func TestDotReader(t *testing.T) {
	cases := []struct {
		in, want, rest string
	}{
		{"a\r\n.\r\nQUIT\r\n", "a\r\n", "QUIT\r\n"},
		{".\r\nQUIT\r\n", "", "QUIT\r\n"},
		{"..a\r\n.\r\n", ".a\r\n", ""},
		{"..\r\n.\r\n", ".\r\n", ""},
		{".a\r\n.\r\n", "a\r\n", ""},
		// The defects of go-smtp's reader: the data ends at the first
		// CRLF.CRLF, and no byte but the transparency dot is dropped.
		{"last\r\n.\r\r\n.\r\nQUIT\r\n", "last\r\n\r\r\n", "QUIT\r\n"},
		{"a\r\r\n.\r\nQUIT\r\n", "a\r\r\n", "QUIT\r\n"},
		{"\r\r\n.\r\nQUIT\r\n", "\r\r\n", "QUIT\r\n"},
		{"a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n", ""},
		{"a\r\n.\r.\r\n.\r\n", "a\r\n\r.\r\n", ""},
		{"a\r\r\r\n.\r\n", "a\r\r\r\n", ""},
		// A bare LF never ends the data.
		{"a\n.\nb\r\n.\r\n", "a\n.\nb\r\n", ""},
		{"a\n.\r\n.\r\n", "a\n.\r\n", ""},
	}
	for _, c := range cases {
		for _, chunk := range []bool{false, true} {
			got, rest, err := readDot(t, c.in, 0, chunk)
			if err != nil || got != c.want || rest != c.rest {
				t.Errorf("%q (one byte at a time: %v): got %q, rest %q, %v; want %q, rest %q", c.in, chunk, got, rest, err, c.want, c.rest)
			}
		}
	}
}

func TestDotReaderLimit(t *testing.T) {
	body := "0123456\r\n" // 9 bytes
	for _, chunk := range []bool{false, true} {
		// Exactly the limit (RFC 1870 counts the message without the
		// terminator and the transparency dots).
		got, rest, err := readDot(t, body+".\r\nQUIT\r\n", 9, chunk)
		if err != nil || got != body || rest != "QUIT\r\n" {
			t.Errorf("at the limit: %q, rest %q, %v", got, rest, err)
		}
		got, rest, err = readDot(t, "..23456\r\n.\r\nQUIT\r\n", 8, chunk)
		if err != nil || got != ".23456\r\n" || rest != "QUIT\r\n" {
			t.Errorf("stuffed, at the limit: %q, rest %q, %v", got, rest, err)
		}
		// One byte over: refused, and the rest of the data still read.
		for _, in := range []string{body + "x\r\n.\r\nQUIT\r\n", body + "..\r\n.\r\nQUIT\r\n", body + ".\rx\r\n.\r\nQUIT\r\n"} {
			_, rest, err = readDot(t, in, 9, chunk)
			if !errors.Is(err, gosmtp.ErrDataTooLarge) || rest != "QUIT\r\n" {
				t.Errorf("%q over the limit: rest %q, %v", in, rest, err)
			}
		}
	}
}

func TestDotReaderTruncated(t *testing.T) {
	for _, in := range []string{"", "a\r\n", "a\r\n.", "a\r\n.\r"} {
		if _, _, err := readDot(t, in, 0, false); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%q: %v, want unexpected EOF", in, err)
		}
	}
}

// FuzzDotReader compares dotReader with the definition: the data ends at
// the first CRLF "." CRLF of the stream (its start counting as after a
// CRLF), and a dot that starts a line is removed.
func FuzzDotReader(f *testing.F) {
	for _, s := range []string{"a\r\n.\r\nQUIT\r\n", "last\r\n.\r\r\n.\r\n", ".\rb\r\n.\r\n", "..\r\n.\r\n", "a\n.\n\r\n.\r\n", "\r\r\r\n.\r\n"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, chunk bool) {
		s := "\r\n" + in
		i := strings.Index(s, "\r\n.\r\n")
		got, rest, err := readDot(t, in, 0, chunk)
		if i < 0 {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%q: no terminator, but %q, %v", in, got, err)
			}
			return
		}
		want := strings.ReplaceAll(s[:i+2], "\r\n.", "\r\n")[2:]
		if err != nil || got != want || rest != s[i+5:] {
			t.Fatalf("%q: got %q rest %q %v; want %q rest %q", in, got, rest, err, want, s[i+5:])
		}
	})
}
