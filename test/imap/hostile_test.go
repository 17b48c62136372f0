package imap_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/mailcluster/mailcluster/test/cluster"
)

// TestHostileInput throws malformed and abusive input at one node and
// checks that each connection gets a sane answer (or is closed), that no
// session panics, and that the node keeps serving everybody else.
func TestHostileInput(t *testing.T) {
	e := newEnv(t, cluster.Options{})
	u := e.user(t, "target")
	e.deliver(t, 0, u, message("present", "x"))
	const n = 1
	login := func(r *rawConn) {
		t.Helper()
		if got := r.cmd("L", "LOGIN "+u+" \""+password+"\""); !strings.HasPrefix(got[len(got)-1], "L OK") {
			t.Fatalf("login: %q", got)
		}
	}
	last := func(lines []string) string { return lines[len(lines)-1] }

	t.Run("unterminated literal, then hang up", func(t *testing.T) {
		r := e.raw(t, n, false)
		r.send("a LOGIN {10}\r\n")
		r.expect("+ ")
		r.send("abc")
		_ = r.conn.Close()

		r2 := e.raw(t, n, true)
		login(r2)
		r2.cmd("s", "SELECT INBOX")
		r2.send("b APPEND INBOX {100}\r\n")
		r2.expect("+ ")
		r2.send(strings.Repeat("x", 40))
		_ = r2.conn.Close()

		c := e.dialTLS(t, n, u, nil)
		if d := mustSelect(t, c, "INBOX", false); d.NumMessages != 1 {
			t.Fatalf("a half-sent APPEND stored something: %d messages", d.NumMessages)
		}
	})

	t.Run("unterminated literal held open does not block others", func(t *testing.T) {
		r := e.raw(t, n, false)
		login(r)
		r.send("a APPEND INBOX {5000}\r\n")
		r.expect("+ ")
		r.send("partial")
		c := e.dialTLS(t, n, u, nil)
		mustSelect(t, c, "INBOX", false)
		if _, err := tryAppend(c, "INBOX", message("meanwhile", "x"), nil); err != nil {
			t.Fatal(err)
		}
		_ = r.conn.Close()
	})

	t.Run("literal announcing 1 GB", func(t *testing.T) {
		r := e.raw(t, n, true)
		// Refused at once, without asking for the bytes.
		if got := r.cmd("a", "LOGIN {1000000000}"); !strings.HasPrefix(last(got), "a NO [TOOBIG]") || strings.HasPrefix(got[0], "+") {
			t.Fatalf("LOGIN with a 1 GB literal: %q", got)
		}
		login(r)
		got := r.cmd("b", "APPEND INBOX {1000000000}")
		if !strings.HasPrefix(last(got), "b NO [TOOBIG]") || strings.HasPrefix(got[0], "+") {
			t.Fatalf("APPEND of 1 GB: %q", got)
		}
		if got := r.cmd("c", "NOOP"); !strings.HasPrefix(last(got), "c OK") {
			t.Fatalf("after refusing the literal: %q", got)
		}
		r.cmd("s", "SELECT INBOX")
		if got := r.cmd("d", "SEARCH SUBJECT {999999}"); !strings.HasPrefix(last(got), "d NO [TOOBIG]") || strings.HasPrefix(got[0], "+") {
			t.Fatalf("a 1 MB search literal: %q", got)
		}
		if got := r.cmd("e", "NOOP"); !strings.HasPrefix(last(got), "e OK") {
			t.Fatalf("after refusing the search literal: %q", got)
		}
	})

	t.Run("deep nesting", func(t *testing.T) {
		r := e.raw(t, n, true)
		login(r)
		r.cmd("s", "SELECT INBOX")
		for _, cmd := range []string{
			"FETCH 1 " + strings.Repeat("(", 20000),
			"SEARCH " + strings.Repeat("(", 5000) + "ALL" + strings.Repeat(")", 5000),
			"SEARCH " + strings.Repeat("NOT ", 10000) + "ALL",
			"SEARCH " + strings.Repeat("OR ALL ", 5000) + "ALL",
			"LIST " + strings.Repeat("(", 5000) + " \"\" *",
			"STORE 1 +FLAGS " + strings.Repeat("(", 5000),
		} {
			got := r.cmd("x", cmd)
			if !strings.HasPrefix(last(got), "x BAD") && !strings.HasPrefix(last(got), "x NO") {
				t.Fatalf("%.40s…: %q", cmd, got)
			}
			if got := r.cmd("y", "NOOP"); !strings.HasPrefix(last(got), "y OK") {
				t.Fatalf("connection unusable after %.40s…: %q", cmd, got)
			}
		}
	})

	t.Run("unknown commands and wrong state", func(t *testing.T) {
		r := e.raw(t, n, true)
		for _, c := range []struct{ cmd, want string }{
			{"SELECT INBOX", "a BAD"},
			{"FETCH 1 FLAGS", "a BAD"},
			{"IDLE", "a BAD"},
			{"CAPABILITY", "a OK"},
		} {
			if got := r.cmd("a", c.cmd); !strings.HasPrefix(last(got), c.want) {
				t.Fatalf("%s before login: %q", c.cmd, got)
			}
		}
		login(r)
		for _, c := range []struct{ cmd, want string }{
			{"LOGIN " + u + " x", "a BAD"},
			{"FETCH 1 FLAGS", "a BAD"},
			{"EXPUNGE", "a BAD"},
			{"XYZZY plugh", "a BAD"},
			{"UID FROB 1", "a BAD"},
			{"SELECT", "a BAD"},
			{"SELECT INBOX", "a OK"},
			{"FETCH 1:4294967295 FLAGS", "a BAD"},
			{"FETCH 1 (BODY[]<4294967295.4294967295>)", "a OK"},
			{"FETCH 1 (BODY[1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20])", "a OK"},
			{"UID FETCH " + strings.TrimSuffix(strings.Repeat("1,", 9000), ",") + " FLAGS", "a OK"},
			{"STORE 1 +FLAGS (\\Recent)", "a OK"},
			{"STORE 1 FROB (\\Seen)", "a BAD"},
			{"SEARCH FROB", "a BAD"},                // imapserver: not a sequence set
			{"SEARCH BEFORE 31-Feb-2026x", "a BAD"}, // imapserver: a date it cannot parse
			{"COPY 1 \"\"", "a NO"},
			{"CREATE \"a//b\"", "a NO"},
			{"CREATE \"" + strings.Repeat("x", 2000) + "\"", "a NO"},
			{"LIST \"\" \"" + strings.Repeat("*a", 3000) + "b\"", "a OK"},
		} {
			if got := r.cmd("a", c.cmd); !strings.HasPrefix(last(got), c.want) {
				t.Fatalf("%.60s: %q", c.cmd, got)
			}
		}
		// Before login, an unknown command ends the connection (it may be
		// another protocol talking to us).
		r2 := e.raw(t, n, false)
		r2.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		r2.expect("* BYE")
	})

	t.Run("garbage and overlong lines", func(t *testing.T) {
		r := e.raw(t, n, true)
		login(r)
		r.send("\x00\x01\x02 \xff\xfe\r\n") // not even a tag: imapserver hangs up
		if l, err := r.line(); err == nil && !strings.Contains(l, "BAD") {
			t.Fatalf("garbage answered with %q", l)
		}
		r = e.raw(t, n, true)
		login(r)
		// The line is refused; the server may even hang up before it has
		// read all of it (then the write fails); either way the node is fine.
		_ = r.trySend("a " + strings.Repeat("A", 200<<10) + "\r\n")
		c := e.dialTLS(t, n, u, nil)
		mustSelect(t, c, "INBOX", false)
		if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true}).Collect(); err != nil {
			t.Fatal(err)
		}
	})

	// Every hostile connection is gone again, none panicked.
	for i := range 3 {
		if got := metric(t, e.c.Node(i), "mailcluster_imap_session_panics_total"); got != "0" {
			t.Fatalf("node %d: %s sessions panicked", i, got)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		open := metric(t, e.c.Node(n), "mailcluster_imap_sessions")
		// The clients of the subtests are closed by t.Cleanup when each
		// subtest ends; only the ones still open would count.
		if open == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions still open on node %d: %s", n, open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
