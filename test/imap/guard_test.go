package imap_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/test/cluster"
)

// warnings counts the IMAP log records at WARN or above.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) handler() slog.Handler { return &warnHandler{w: w} }

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

type warnHandler struct {
	w     *warnings
	attrs []slog.Attr
}

func (h *warnHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *warnHandler) Handle(_ context.Context, r slog.Record) error {
	imap := false
	for _, a := range h.attrs {
		imap = imap || (a.Key == "proto" && a.Value.String() == "imap")
	}
	if !imap {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	h.w.mu.Lock()
	h.w.msgs = append(h.w.msgs, b.String())
	h.w.mu.Unlock()
	return nil
}
func (h *warnHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnHandler{w: h.w, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}
func (h *warnHandler) WithGroup(string) slog.Handler { return h }

// closedAfter reads until the server hangs up and returns what it said.
func (r *rawConn) closedAfter() []string {
	r.t.Helper()
	var got []string
	for {
		l, err := r.line()
		if err != nil {
			if strings.Contains(err.Error(), "timeout") {
				r.t.Fatalf("connection still open after %q", got)
			}
			return got
		}
		got = append(got, l)
	}
}

func hasPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestInputGuard: input that go-imap's connection code would lose step on
// is answered and never executed as commands (issue 11).
func TestInputGuard(t *testing.T) {
	w := &warnings{}
	e := newEnv(t, cluster.Options{Logger: slog.New(w.handler())})
	u := e.user(t, "guarded")
	e.deliver(t, 0, u, message("present", "x"))
	const n = 1
	login := func(r *rawConn) {
		t.Helper()
		if got := r.cmd("L", "LOGIN "+u+" \""+password+"\""); !strings.HasPrefix(got[len(got)-1], "L OK") {
			t.Fatalf("login: %q", got)
		}
	}
	last := func(lines []string) string { return lines[len(lines)-1] }
	mailboxExists := func(name string) bool {
		t.Helper()
		c := e.dialTLS(t, n, u, nil)
		boxes, err := c.List("", name, nil).Collect()
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		return len(boxes) > 0
	}
	padTo := func(prefix string, size int) string { return prefix + strings.Repeat("x", size-len(prefix)) }

	t.Run("a command line over 50 KiB ends in BAD and is not executed", func(t *testing.T) {
		for i, attack := range []string{
			// The report: the library failed at byte 51,202 and ran the rest.
			padTo("a SEARCH TEXT \"", 51202) + " X1 CREATE injected1\r\n",
			// Over the limit in a line after a literal.
			"a SEARCH TEXT {3+}\r\nabc TEXT \"" + strings.Repeat("x", 51200) + " X1 CREATE injected2\r\n",
			// A quoted string the library would read on into the next line.
			"a SEARCH TEXT \"" + strings.Repeat("x", 30000) + "\r\n" + strings.Repeat("x", 30000) + "\r\nX1 CREATE injected3\r\n",
		} {
			r := e.raw(t, n, i%2 == 0)
			login(r)
			r.cmd("s", "SELECT INBOX")
			_ = r.trySend(attack)
			got := r.closedAfter()
			if !hasPrefix(got, "a BAD") {
				t.Errorf("attack %d: want a BAD before the connection closes, got %q", i+1, got)
			}
		}
		for i := 1; i <= 3; i++ {
			if name := "injected" + string(rune('0'+i)); mailboxExists(name) {
				t.Fatalf("the rest of an over-long line was executed: %s exists", name)
			}
		}
	})

	t.Run("other input the library would split into two commands", func(t *testing.T) {
		r := e.raw(t, n, true)
		login(r)
		// A bare CR: the library's error recovery stopped there.
		_ = r.trySend("a NOOPX\rX1 CREATE injected4\r\n")
		r.closedAfter()
		// A DONE line longer than the library's 4 KiB buffer.
		r = e.raw(t, n, true)
		login(r)
		r.cmd("s", "SELECT INBOX")
		r.send("i IDLE\r\n")
		r.expect("+ ")
		_ = r.trySend("DONE" + strings.Repeat("x", 4100) + "X1 CREATE injected5\r\n")
		if got := r.closedAfter(); !hasPrefix(got, "i BAD") {
			t.Errorf("over-long DONE: %q", got)
		}
		for _, name := range []string{"injected4", "injected5"} {
			if mailboxExists(name) {
				t.Fatalf("%s exists", name)
			}
		}
	})

	t.Run("a refused synchronising literal is answered at once", func(t *testing.T) {
		r := e.raw(t, n, false)
		// No further line is sent: the answer must not wait for one.
		if got := r.cmd("a1", "LOGIN {1048576}"); !strings.HasPrefix(last(got), "a1 NO [TOOBIG]") || hasPrefix(got, "+") {
			t.Fatalf("LOGIN {1048576}: %q", got)
		}
		// The next line is a command of its own, not the literal's data or
		// an argument (it used to try a login as user "a2").
		if got := r.cmd("a2", "NOOP"); !strings.HasPrefix(last(got), "a2 OK") {
			t.Fatalf("after the refused literal: %q", got)
		}
		login(r)
		if got := r.cmd("b1", "SELECT {4294967295}"); !strings.HasPrefix(last(got), "b1 NO [TOOBIG]") || hasPrefix(got, "+") {
			t.Fatalf("SELECT {4294967295}: %q", got)
		}
		if got := r.cmd("b2", "SELECT INBOX"); !strings.HasPrefix(last(got), "b2 OK") {
			t.Fatalf("after the refused literal: %q", got)
		}
		// A second literal of one command, refused in the middle.
		r.send("c1 LOGIN {3}\r\n")
		r.expect("+ ")
		if got := r.cmd("c1", "abc {100000}"); !strings.HasPrefix(last(got), "c1 NO [TOOBIG]") || hasPrefix(got, "+") {
			t.Fatalf("second literal: %q", got)
		}
		if got := r.cmd("c2", "NOOP"); !strings.HasPrefix(last(got), "c2 OK") {
			t.Fatalf("after the refused second literal: %q", got)
		}
	})

	t.Run("non-synchronising literals over 4096 bytes", func(t *testing.T) {
		// Before login only LITERAL- is advertised.
		r := e.raw(t, n, true)
		caps := r.cmd("c", "CAPABILITY")
		if !strings.Contains(caps[0], "LITERAL-") || strings.Contains(caps[0], "LITERAL+") {
			t.Fatalf("capabilities before login: %q", caps)
		}
		_ = r.trySend("a LOGIN {5000+}\r\n" + strings.Repeat("x", 5000) + " y\r\n")
		if got := r.closedAfter(); !hasPrefix(got, "a BAD") || hasPrefix(got, "a OK") || hasPrefix(got, "a NO") {
			t.Fatalf("LOGIN {5000+} before login: %q", got)
		}
		// After login, outside APPEND, the library would refuse it without
		// a word and parse the data as commands.
		r = e.raw(t, n, true)
		login(r)
		data := "x\r\nX1 CREATE injected6\r\n" + strings.Repeat("y", 5000)
		_ = r.trySend("a SELECT {" + itoa(len(data)) + "+}\r\n" + data + "\r\n")
		if got := r.closedAfter(); !hasPrefix(got, "a BAD") {
			t.Fatalf("SELECT {5000+}: %q", got)
		}
		// APPEND's message may be large, non-synchronising.
		r = e.raw(t, n, true)
		login(r)
		msg := string(message("big", strings.Repeat("z", 6000)))
		r.send("a APPEND INBOX {" + itoa(len(msg)) + "+}\r\n" + msg + "\r\n")
		if got := r.expect("a "); !strings.HasPrefix(last(got), "a OK") {
			t.Fatalf("APPEND {n+}: %q", got)
		}
		// Data of a non-synchronising literal whose command failed first.
		data = "x\r\nX1 CREATE injected7\r\n"
		_ = r.trySend("b APPEND INBOX (\\Seen {" + itoa(len(data)) + "+}\r\n" + data)
		r.closedAfter()
		for _, name := range []string{"injected6", "injected7"} {
			if mailboxExists(name) {
				t.Fatalf("%s exists", name)
			}
		}
	})

	t.Run("client mistakes are BAD or a plain NO, never SERVERBUG", func(t *testing.T) {
		w.take()
		r := e.raw(t, n, true)
		for _, c := range []struct{ cmd, want string }{
			{"SELECT &Jjo", "a BAD"}, // before login
			{"LOGIN " + u + " \"" + password + "\"", "a OK"},
			{"LIST \"\" \"&Jjo\"", "a OK"}, // not modified UTF-7: no match
			{"SELECT \"&Jjo\"", "a NO [NONEXISTENT]"},
			{"STATUS \"&Jjo\" (MESSAGES)", "a NO [NONEXISTENT]"},
			{"SELECT INBOX", "a OK"},
			{"FETCH 1:x FLAGS", "a BAD"},
			{"UID STORE 1,,2 +FLAGS (x)", "a BAD"},
			{"SEARCH SINCE 99-Foo-2026", "a BAD"},
			{"SEARCH CHARSET X-UNKNOWN TEXT a", "a NO [BADCHARSET]"},
			{"APPEND INBOX \"31-Feb-2026 99:00:00 +0000\" {1}", "a BAD"},
		} {
			got := r.cmd("a", c.cmd)
			if !strings.HasPrefix(last(got), c.want) || strings.Contains(last(got), "SERVERBUG") {
				t.Fatalf("%s: %q, want %s", c.cmd, got, c.want)
			}
			if strings.HasPrefix(c.cmd, "LIST") && len(got) != 1 {
				t.Fatalf("LIST of an invalid name matched: %q", got)
			}
		}
		if msgs := w.take(); len(msgs) > 0 {
			t.Fatalf("client mistakes logged at WARN: %q", msgs)
		}
	})
}

// TestPreLoginTimeout: a connection that does not log in is closed after
// the configured idle time (default 30 s; imapserver alone took 60 s).
func TestPreLoginTimeout(t *testing.T) {
	e := newEnv(t, cluster.Options{Nodes: 1, Configure: func(_ int, cfg *node.Config) {
		cfg.IMAP.LoginIdleTimeout = 500 * time.Millisecond
	}})
	u := e.user(t, "patient")
	for _, useTLS := range []bool{false, true} {
		r := e.raw(t, 0, useTLS) // reads wait at most 30 s
		if got := r.closedAfter(); !hasPrefix(got, "* BYE") {
			t.Fatalf("tls=%v: idle before login: %q", useTLS, got)
		}
	}
	// Logged in, the limit no longer applies (the session outlives it).
	r := e.raw(t, 0, true)
	r.cmd("L", "LOGIN "+u+" \""+password+"\"")
	c := e.dialTLS(t, 0, "", nil)
	_ = c.Noop().Wait()
	probe := e.raw(t, 0, false)
	probe.closedAfter() // waits out the limit once
	if got := r.cmd("n", "NOOP"); !strings.HasPrefix(got[len(got)-1], "n OK") {
		t.Fatalf("logged-in session after the pre-login limit: %q", got)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
