package pop3

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// normalizeRef is the wire form written the slow, obvious way: split into
// lines at LF, end each with CRLF (keeping a CR already there), and end an
// unterminated last line.
func normalizeRef(raw []byte) []byte {
	var out bytes.Buffer
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			out.Write(raw)
			if raw[len(raw)-1] == '\r' {
				out.WriteString("\n")
			} else {
				out.WriteString("\r\n")
			}
			break
		}
		line := raw[:i]
		out.Write(line)
		if len(line) > 0 && line[len(line)-1] == '\r' {
			out.WriteString("\n")
		} else {
			out.WriteString("\r\n")
		}
		raw = raw[i+1:]
	}
	return out.Bytes()
}

// fataler is what helpers need from *testing.T and *rapid.T.
type fataler interface {
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// unstuff undoes dot-stuffing of a wire-form body (without the final ".").
func unstuff(t fataler, stuffed []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(stuffed, []byte("\r\n")) {
		if len(line) == 0 {
			continue
		}
		if line[0] == '.' {
			if len(line) < 2 || line[1] != '.' {
				t.Fatalf("line starting with an unstuffed dot: %q", line)
			}
			line = line[1:]
		}
		out.Write(line)
	}
	return out.Bytes()
}

// encodeAll runs the encoder over raw in pieces of the given sizes.
func encodeAll(t fataler, raw []byte, pieces []int, top bool, n uint64) ([]byte, int64) {
	var out bytes.Buffer
	enc := newEncoder(&out)
	if top {
		enc = newTopEncoder(&out, n)
	}
	rest := raw
	for k := 0; len(rest) > 0; k++ {
		size := len(rest)
		if len(pieces) > 0 {
			size = min(max(pieces[k%len(pieces)], 1), len(rest))
		}
		if _, err := enc.Write(rest[:size]); err != nil {
			if errors.Is(err, errTopDone) {
				break
			}
			t.Fatal(err)
		}
		rest = rest[size:]
	}
	if err := enc.Finish(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), enc.octets
}

func TestWireFormExamples(t *testing.T) {
	cases := []struct{ raw, wire string }{
		{"", ""},
		{"a\r\n", "a\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\r\nb", "a\r\nb\r\n"},
		{"a\r", "a\r\n"},
		{"a\rb\r\n", "a\rb\r\n"},
		{".\r\n..x\n.", "..\r\n...x\r\n..\r\n"},
		{"\n\n", "\r\n\r\n"},
	}
	for _, c := range cases {
		got, octets := encodeAll(t, []byte(c.raw), nil, false, 0)
		if string(got) != c.wire {
			t.Errorf("%q: sent %q, want %q", c.raw, got, c.wire)
		}
		n, err := wireSize(strings.NewReader(c.raw), int64(len(c.raw)))
		if err != nil || n != octets || n != int64(len(unstuff(t, got))) {
			t.Errorf("%q: wireSize %d (%v), encoder counted %d, unstuffed %d", c.raw, n, err, octets, len(unstuff(t, got)))
		}
	}
}

func TestTopExamples(t *testing.T) {
	msg := "Subject: x\r\nFrom: y\r\n\r\nline 1\r\n.line 2\nline 3\r\n"
	cases := map[uint64]string{
		0:  "Subject: x\r\nFrom: y\r\n\r\n",
		1:  "Subject: x\r\nFrom: y\r\n\r\nline 1\r\n",
		2:  "Subject: x\r\nFrom: y\r\n\r\nline 1\r\n..line 2\r\n",
		3:  "Subject: x\r\nFrom: y\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n",
		99: "Subject: x\r\nFrom: y\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n",
	}
	for n, want := range cases {
		got, _ := encodeAll(t, []byte(msg), nil, true, n)
		if string(got) != want {
			t.Errorf("TOP %d: %q, want %q", n, got, want)
		}
	}
	// No blank line: the whole message is header.
	got, _ := encodeAll(t, []byte("Subject: x\nNo-Body: y"), nil, true, 0)
	if string(got) != "Subject: x\r\nNo-Body: y\r\n" {
		t.Errorf("header-only TOP: %q", got)
	}
	// A header ending in a bare-LF blank line.
	got, _ = encodeAll(t, []byte("A: b\n\nbody\n"), nil, true, 0)
	if string(got) != "A: b\r\n\r\n" {
		t.Errorf("LF-only TOP: %q", got)
	}
}

// TestWireFormProperties checks on arbitrary bytes, cut in arbitrary
// pieces, that what RETR sends unstuffs to the reference wire form, that
// LIST's size is its exact length, and that TOP n is a prefix of it.
func TestWireFormProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		alphabet := []byte("\r\n.a ")
		raw := rapid.SliceOfN(rapid.SampledFrom(alphabet), 0, 300).Draw(t, "raw")
		pieces := rapid.SliceOfN(rapid.IntRange(1, 20), 0, 10).Draw(t, "pieces")
		want := normalizeRef(raw)
		got, octets := encodeAll(t, raw, pieces, false, 0)
		plain := unstuff(t, got)
		if !bytes.Equal(plain, want) {
			t.Fatalf("raw %q: sent %q, want %q", raw, plain, want)
		}
		size, err := wireSize(bytes.NewReader(raw), int64(len(raw)))
		if err != nil || size != int64(len(want)) || octets != size {
			t.Fatalf("raw %q: wireSize %d, encoder %d, want %d", raw, size, octets, len(want))
		}
		n := rapid.Uint64Range(0, 10).Draw(t, "lines")
		top, _ := encodeAll(t, raw, pieces, true, n)
		if !bytes.HasPrefix(got, top) {
			t.Fatalf("TOP %d of %q is %q, not a prefix of RETR %q", n, raw, top, got)
		}
	})
}

func TestWireSizeCountsAcrossChunks(t *testing.T) {
	// A CRLF split exactly at the 64 KiB chunk boundary.
	raw := bytes.Repeat([]byte("x"), chunkSize-1)
	raw = append(raw, "\r\nend\n"...)
	n, err := wireSize(bytes.NewReader(raw), int64(len(raw)))
	if err != nil || n != int64(len(normalizeRef(raw))) {
		t.Fatalf("wireSize %d, %v; want %d", n, err, len(normalizeRef(raw)))
	}
}

// FuzzEncoder: for any input, RETR's octets unstuff to the reference form
// and match wireSize.
func FuzzEncoder(f *testing.F) {
	for _, s := range []string{"", "a\n", ".\r\n.", "\r\r\n\n", "x\r"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, raw []byte, piece uint8) {
		got, octets := encodeAll(t, raw, []int{int(piece)}, false, 0)
		want := normalizeRef(raw)
		if !bytes.Equal(unstuff(t, got), want) {
			t.Fatalf("mismatch for %q", raw)
		}
		size, err := wireSize(bytes.NewReader(raw), int64(len(raw)))
		if err != nil || size != octets || size != int64(len(want)) {
			t.Fatalf("sizes %d %d %d", size, octets, len(want))
		}
	})
}
