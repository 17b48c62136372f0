package pop3

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	cases := []struct {
		line string
		want Command
		err  error
	}{
		{"STAT\r\n", Command{Name: "STAT"}, nil},
		{"stat\n", Command{Name: "STAT"}, nil},
		{"Retr 12\r\n", Command{Name: "RETR", Args: []string{"12"}}, nil},
		{"TOP 1  10\r\n", Command{Name: "TOP", Args: []string{"1", "10"}}, nil},
		{"UIDL", Command{Name: "UIDL"}, nil},
		{"PASS  two  spaces \r\n", Command{Name: "PASS", Args: []string{" two  spaces "}}, nil},
		{"PASS\r\n", Command{Name: "PASS"}, nil},
		{"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", Command{Name: "AUTH", Args: []string{"PLAIN", "AGFsaWNlAHNlY3JldA=="}}, nil},
		{"\r\n", Command{}, ErrEmptyLine},
		{"   \r\n", Command{}, ErrEmptyLine},
		{"RETRIEVE 1\r\n", Command{}, ErrBadKeyword},
		{"GO\r\n", Command{}, ErrBadKeyword},
		{"RE1R 1\r\n", Command{}, ErrBadKeyword},
		{" STAT\r\n", Command{}, ErrBadKeyword},
		{"RETR 1\x00\r\n", Command{}, ErrBadChar},
		{"RETR \t1\r\n", Command{}, ErrBadChar},
		{"PASS a\x00b\r\n", Command{}, ErrBadChar},
		{"USER " + strings.Repeat("a", 256) + "\r\n", Command{}, ErrLongArg},
		{"LIST 1 2 3 4 5 6 7 8 9\r\n", Command{}, ErrTooManyArg},
	}
	for _, c := range cases {
		got, err := ParseCommand([]byte(c.line))
		if !errors.Is(err, c.err) {
			t.Errorf("%q: error %v, want %v", c.line, err, c.err)
			continue
		}
		if got.Name != c.want.Name || !slices.Equal(got.Args, c.want.Args) {
			t.Errorf("%q: got %+v, want %+v", c.line, got, c.want)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for s, want := range map[string]uint64{"1": 1, "007": 7, "4294967296": 4294967296} {
		if n, ok := parseNumber(s); !ok || n != want {
			t.Errorf("parseNumber(%q) = %d, %v", s, n, ok)
		}
	}
	for _, s := range []string{"", "-1", "+1", "1a", " 1", "0x10", strings.Repeat("9", 19)} {
		if _, ok := parseNumber(s); ok {
			t.Errorf("parseNumber(%q) accepted", s)
		}
	}
}

// FuzzParseCommand: the parser never panics, and what it accepts is
// well-formed: a 3-4 letter upper-case keyword, and arguments without
// spaces or control characters (PASS excepted) that survive a round trip.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"STAT\r\n", "RETR 1\r\n", "TOP 1 0", "PASS a b c\r\n", "AUTH PLAIN =\r\n", "", "\r\n", "UIDL  7 \n", "X\x00Y"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := ParseCommand(line)
		if err != nil {
			return
		}
		if len(cmd.Name) < 3 || len(cmd.Name) > 4 || strings.ToUpper(cmd.Name) != cmd.Name {
			t.Fatalf("bad keyword %q from %q", cmd.Name, line)
		}
		if cmd.Name == "PASS" {
			if len(cmd.Args) > 1 {
				t.Fatalf("PASS with %d args", len(cmd.Args))
			}
			return
		}
		if len(cmd.Args) > maxArgs {
			t.Fatalf("%d args", len(cmd.Args))
		}
		for _, a := range cmd.Args {
			if a == "" || len(a) > maxArgLen || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("bad argument %q from %q", a, line)
			}
		}
		again, err := ParseCommand([]byte(cmd.Name + " " + strings.Join(cmd.Args, " ") + "\r\n"))
		if err != nil || again.Name != cmd.Name || !slices.Equal(again.Args, cmd.Args) {
			t.Fatalf("round trip of %q: %+v, %v", line, again, err)
		}
	})
}
