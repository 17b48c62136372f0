package smtp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestBodyReaderRules(t *testing.T) {
	long := strings.Repeat("x", 998)
	cases := []struct {
		name  string
		in    string
		rules bodyRules
		want  error  // nil: accepted
		out   string // expected output when accepted ("" means same as in)
	}{
		{name: "plain message", in: "From: a@b\r\nSubject: hi\r\n\r\nbody\r\n"},
		{name: "no body", in: "Subject: hi\r\n"},
		{name: "empty", in: ""},
		{name: "empty header", in: "\r\nbody without headers: fine\r\n"},
		{name: "continuation", in: "Subject: a\r\n long\r\n\tlonger\r\n\r\nx\r\n"},
		{name: "obsolete space before colon", in: "Subject : a\r\n\r\n"},
		{name: "body lines need no colon", in: "A: b\r\n\r\nno colon here\r\n.\r\n"},
		{name: "8-bit body without SMTPUTF8", in: "A: b\r\n\r\ncaf\xc3\xa9\r\n"},
		{name: "8-bit header with SMTPUTF8", in: "Subject: caf\xc3\xa9\r\n\r\n", rules: bodyRules{utf8Headers: true}},
		{name: "line at the limit", in: "A: b\r\n\r\n" + long + "\r\n"},
		{name: "no final CRLF", in: "A: b\r\n\r\nlast"},

		{name: "bare LF in body", in: "A: b\r\n\r\nx\ny\r\n", want: errBareLF},
		{name: "bare LF dot (smuggling)", in: "A: b\r\n\r\nx\n.\nMAIL FROM:<e@vil>\r\n", want: errBareLF},
		{name: "CRLF dot LF (smuggling)", in: "A: b\r\n\r\nx\r\n.\nMAIL FROM:<e@vil>\r\n", want: errBareLF},
		{name: "bare LF in header", in: "A: b\nC: d\r\n\r\n", want: errBareLF},
		{name: "bare CR", in: "A: b\r\n\r\nx\ry\r\n", want: errBareCR},
		{name: "CR at the end", in: "A: b\r\n\r\nx\r", want: errBareCR},
		{name: "NUL", in: "A: b\r\n\r\nx\x00y\r\n", want: errNUL},
		{name: "line too long", in: "A: b\r\n\r\n" + long + "x\r\n", want: &bodyError{reason: "line_too_long"}},
		{name: "header without colon", in: "From a@b\r\n\r\nx\r\n", want: errHeaderSyntax},
		{name: "only text, no header", in: "hello world\r\n", want: errHeaderSyntax},
		{name: "header name at EOF", in: "Subject", want: errHeaderSyntax},
		{name: "space in field name", in: "Sub ject: x\r\n\r\n", want: errHeaderSyntax},
		{name: "continuation first", in: " folded: x\r\n\r\n", want: errHeaderSyntax},
		{name: "control char in name", in: "Sub\x01ject: x\r\n\r\n", want: errHeaderSyntax},
		{name: "8-bit header without SMTPUTF8", in: "Subject: caf\xc3\xa9\r\n\r\n", want: err8BitHeader},
		{name: "8-bit field name", in: "Sübject: x\r\n\r\n", rules: bodyRules{utf8Headers: true}, want: errHeaderSyntax},

		{name: "fix bare LF", in: "A: b\nC: d\n\nx\n.\ny\n", rules: bodyRules{fixBare: true}, out: "A: b\r\nC: d\r\n\r\nx\r\n.\r\ny\r\n"},
		{name: "fix bare CR", in: "A: b\r\n\r\nx\ry\r", rules: bodyRules{fixBare: true}, out: "A: b\r\n\r\nx\r\ny\r\n"},
		{name: "fix keeps NUL refused", in: "A: b\n\nx\x00\n", rules: bodyRules{fixBare: true}, want: errNUL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rules := tc.rules
			if rules.maxLine == 0 {
				rules.maxLine = 1000
			}
			for _, split := range []bool{false, true} {
				var src io.Reader = strings.NewReader(tc.in)
				if split {
					src = iotest.OneByteReader(src)
				}
				var eofSize int64 = -1
				out, err := io.ReadAll(newBodyReader(src, rules, func(n int64) error { eofSize = n; return nil }))
				if tc.want != nil {
					var be, want *bodyError
					if !errors.As(err, &be) || !errors.As(tc.want, &want) || be.reason != want.reason {
						t.Fatalf("split=%v: got %v, want %v", split, err, tc.want)
					}
					if eofSize != -1 {
						t.Fatalf("split=%v: onEOF ran for a refused message", split)
					}
					continue
				}
				if err != nil {
					t.Fatalf("split=%v: %v", split, err)
				}
				wantOut := tc.out
				if wantOut == "" {
					wantOut = tc.in
				}
				if string(out) != wantOut {
					t.Fatalf("split=%v: output %q, want %q", split, out, wantOut)
				}
				if eofSize != int64(len(out)) {
					t.Fatalf("split=%v: onEOF size %d, want %d", split, eofSize, len(out))
				}
			}
		})
	}
}

func TestBodyReaderEOFHookRefuses(t *testing.T) {
	refused := errors.New("over quota")
	_, err := io.ReadAll(newBodyReader(strings.NewReader("A: b\r\n\r\nx\r\n"), bodyRules{maxLine: 1000}, func(int64) error { return refused }))
	if !errors.Is(err, refused) {
		t.Fatalf("got %v, want the hook's error", err)
	}
}

func TestBodyReaderSourceError(t *testing.T) {
	boom := errors.New("client gone")
	b := newBodyReader(io.MultiReader(strings.NewReader("A: b\r\n"), iotest.ErrReader(boom)), bodyRules{maxLine: 1000}, nil)
	_, err := io.ReadAll(b)
	if !errors.Is(err, boom) || !errors.Is(b.SourceErr(), boom) {
		t.Fatalf("got %v / %v, want the source error", err, b.SourceErr())
	}
}

// FuzzBodyReader checks, for any input and any read split, that the reader
// never panics, refuses or passes data consistently, and that whatever it
// passes has only CRLF line endings, no NUL and no over-long line; in strict
// mode it passes the input unchanged.
func FuzzBodyReader(f *testing.F) {
	for _, seed := range []string{
		"From: a@b\r\n\r\nbody\r\n", "A: b\n\nx\n.\n", "x\r.\r", "\r\n\r\n", "Subject: \xff\r\n\r\n", "A:\r\n \r\n\r\n\x00",
	} {
		f.Add([]byte(seed), uint8(3), false, false)
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, fix, utf8 bool) {
		rules := bodyRules{maxLine: 64, fixBare: fix, utf8Headers: utf8}
		src := &chunkReader{data: in, n: int(chunk%16) + 1}
		var eofSize int64 = -1
		out, err := io.ReadAll(newBodyReader(src, rules, func(n int64) error { eofSize = n; return nil }))
		if err != nil {
			var be *bodyError
			if !errors.As(err, &be) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if eofSize != int64(len(out)) {
			t.Fatalf("onEOF size %d, output %d", eofSize, len(out))
		}
		if !fix && !bytes.Equal(out, in) {
			t.Fatalf("strict mode changed the data: %q -> %q", in, out)
		}
		if bytes.IndexByte(out, 0) >= 0 {
			t.Fatal("NUL passed")
		}
		for i, c := range out {
			if c == '\n' && (i == 0 || out[i-1] != '\r') {
				t.Fatalf("bare LF passed at %d: %q", i, out)
			}
			if c == '\r' && (i+1 >= len(out) || out[i+1] != '\n') {
				t.Fatalf("bare CR passed at %d: %q", i, out)
			}
		}
		for _, line := range bytes.Split(out, []byte("\r\n")) {
			if len(line)+2 > rules.maxLine {
				t.Fatalf("line of %d bytes passed", len(line))
			}
		}
		// The header is well formed: every line up to the first empty one
		// is a field or a continuation.
		lines := bytes.Split(out, []byte("\r\n"))
		for i, line := range lines {
			if len(line) == 0 {
				break
			}
			if line[0] == ' ' || line[0] == '\t' {
				if i == 0 {
					t.Fatalf("continuation first: %q", out)
				}
				continue
			}
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				t.Fatalf("header line without colon passed: %q", line)
			}
			if !utf8 && bytes.ContainsFunc(line, func(r rune) bool { return r >= 0x80 }) {
				t.Fatalf("8-bit header passed: %q", line)
			}
		}
	})
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(r.n, len(p), len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// BenchmarkBodyReader measures the checking cost per byte of message data.
func BenchmarkBodyReader(b *testing.B) {
	msg := []byte("From: a@b\r\nSubject: benchmark\r\n\r\n" + strings.Repeat("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod\r\n", 1<<14))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := io.Copy(io.Discard, newBodyReader(bytes.NewReader(msg), bodyRules{maxLine: 1000}, nil)); err != nil {
			b.Fatal(err)
		}
	}
}
