package managesieve

import (
	"errors"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		args []arg
	}{
		{"logout\r\n", "LOGOUT", nil},
		{"NOOP\n", "NOOP", nil},
		{`PUTSCRIPT "a b" "x\"y\\z"` + "\r\n", "PUTSCRIPT", []arg{{argQuoted, "a b"}, {argQuoted, `x"y\z`}}},
		{"PUTSCRIPT {3+}\r\nabc {4}\r\nd\r\nf\r\n", "PUTSCRIPT", []arg{{argLiteral, "abc"}, {argLiteral, "d\r\nf"}}},
		{`HAVESPACE "s" 100` + "\r\n", "HAVESPACE", []arg{{argQuoted, "s"}, {argAtom, "100"}}},
		{"GETSCRIPT {0+}\r\n\r\n", "GETSCRIPT", []arg{{argLiteral, ""}}},
		{"AUTHENTICATE  \"PLAIN\"   \"=\"\r\n", "AUTHENTICATE", []arg{{argQuoted, "PLAIN"}, {argQuoted, "="}}},
	} {
		cmd, err := parseCommand([]byte(tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if cmd.Name != tc.name || len(cmd.args) != len(tc.args) {
			t.Errorf("%q: %+v", tc.in, cmd)
			continue
		}
		for i := range tc.args {
			if cmd.args[i] != tc.args[i] {
				t.Errorf("%q: argument %d is %+v, want %+v", tc.in, i, cmd.args[i], tc.args[i])
			}
		}
	}
	for _, in := range []string{"\"x\"\r\n", "NOOP \"a\r\n", "NOOP \"\\n\"\r\n", "NOOP {3+} x\r\n", "NOOP \x00\r\n", "NOOP (\r\n"} {
		var perr *parseError
		if _, err := parseCommand([]byte(in)); !errors.As(err, &perr) {
			t.Errorf("%q: %v, want a parseError", in, err)
		}
	}
	if _, err := parseCommand([]byte("\r\n")); !errors.Is(err, errEmpty) {
		t.Errorf("empty line: %v", err)
	}
	if _, err := parseCommand([]byte("PUTSCRIPT \"a\" {99999999999+}\r\n")); !errors.Is(err, errDesync) {
		t.Errorf("huge literal: %v", err)
	}
	var perr *parseError
	if _, err := parseCommand([]byte("PUTSCRIPT \"a\" {70000+}\r\n" + strings.Repeat("x", 70000) + "\r\n")); !errors.As(err, &perr) || !perr.TooBig {
		t.Errorf("literal over the script size: %v", err)
	}
}

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"":                        `""`,
		`say "hi" \o/`:            `"say \"hi\" \\o/"`,
		"two\r\nlines":            "{10}\r\ntwo\r\nlines",
		strings.Repeat("a", 1025): "{1025}\r\n" + strings.Repeat("a", 1025),
	} {
		if got := string(appendString(nil, in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
		// What is written reads back as the same string.
		cmd, err := parseCommand([]byte("X " + strings.Replace(want, "}\r\n", "+}\r\n", 1) + "\r\n"))
		if err != nil || len(cmd.args) != 1 || cmd.args[0].val != in {
			t.Errorf("%q does not read back: %+v %v", in, cmd, err)
		}
	}
}
