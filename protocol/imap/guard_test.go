package imap

import "testing"

func TestLiteralAtEnd(t *testing.T) {
	for _, c := range []struct {
		line    string
		size    int64
		nonSync bool
		ok      bool
	}{
		{"a LOGIN {5}\r\n", 5, false, true},
		{"a LOGIN {5+}\r\n", 5, true, true},
		{"a LOGIN {5} \r\n", 5, false, true}, // imapserver allows a space before CRLF
		{"a LOGIN {5}\n", 5, false, true},
		{"a APPEND INBOX ~{0005}\r\n", 5, false, true},
		{"a LOGIN {}\r\n", 0, false, false},
		{"a LOGIN {+5}\r\n", 0, false, false},
		{"a LOGIN {-5}\r\n", 0, false, false},
		{"a LOGIN { 5}\r\n", 0, false, false},
		{"a LOGIN {99999999999999999999}\r\n", 0, false, false}, // imapserver: not a number either
		{"a LOGIN \"{5}\"\r\n", 0, false, false},
		{"a NOOP\r\n", 0, false, false},
	} {
		lit, ok := literalAtEnd([]byte(c.line))
		if ok != c.ok || (ok && (lit.size != c.size || lit.nonSync != c.nonSync)) {
			t.Errorf("%q: got %+v %v", c.line, lit, ok)
		}
	}
}

func TestLineProblem(t *testing.T) {
	for line, bad := range map[string]bool{
		"a LOGIN \"x\" \"y\"\r\n":     false,
		"a LOGIN \"x\\\"y\" z\r\n":    false, // an escaped quote
		"a LOGIN \"x\\\\\" z\r\n":     false, // an escaped backslash
		"a SEARCH TEXT \"abc\r\n":     true,  // the library would read on
		"a NOOPX\rX1 CREATE x\r\n":    true,  // a bare CR
		"a SEARCH TEXT \"a\rb\"\r\n":  true,
		"a STORE 1 +FLAGS (\\Seen)\n": false,
	} {
		if got := lineProblem([]byte(line)) != ""; got != bad {
			t.Errorf("%q: problem %v, want %v", line, got, bad)
		}
	}
}

func TestTagOf(t *testing.T) {
	for in, want := range map[string]string{
		"a1 SEARCH": "a1",
		"x":         "*",
		" SEARCH":   "*",
		"a\"b x":    "*",
		"a+b x":     "*",
	} {
		if got := tagOf([]byte(in)); got != want {
			t.Errorf("tagOf(%q) = %q, want %q", in, got, want)
		}
	}
}
