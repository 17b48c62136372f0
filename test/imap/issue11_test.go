package imap_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mailcluster/mailcluster/test/cluster"
)

// TestIssue11Commands: SEARCH by parsed address, NUL bytes under BODY[],
// MOVE into the selected mailbox, FLAGS before a FETCH with a new keyword.
func TestIssue11Commands(t *testing.T) {
	e := newEnv(t, cluster.Options{})
	const n = 1
	last := func(lines []string) string { return lines[len(lines)-1] }
	login := func(r *rawConn, u string) {
		t.Helper()
		if got := r.cmd("L", "LOGIN "+u+" \""+password+"\""); !strings.HasPrefix(last(got), "L OK") {
			t.Fatalf("login: %q", got)
		}
	}

	t.Run("SEARCH FROM matches the address as parsed, comments removed", func(t *testing.T) {
		u := e.user(t, "searcher")
		e.deliver(t, n, u, []byte("From: <user-from (comment)@ (comment) domain.org>\r\nTo: bob@example.test\r\nSubject: commented\r\n\r\nx\r\n"))
		e.deliver(t, n, u, message("other", "x"))
		r := e.raw(t, n, true)
		login(r, u)
		r.cmd("s", "SELECT INBOX")
		got := r.cmd("a", "SEARCH FROM user-from@domain.org")
		if !slicesContain(got, "* SEARCH 1") {
			t.Fatalf("SEARCH FROM: %q", got)
		}
		if got := r.cmd("b", "FETCH 1 ENVELOPE"); !strings.Contains(got[0], `"user-from" "domain.org"`) {
			t.Fatalf("ENVELOPE keeps the comments: %q", got)
		}
	})

	t.Run("a NUL byte under BODY[] is sent as 0x80", func(t *testing.T) {
		u := e.user(t, "nul")
		e.deliver(t, n, u, []byte("From: a@remote.test\r\nSubject: nul\r\n\r\nbefore\x00after\r\n"))
		r := e.raw(t, n, true)
		login(r, u)
		r.cmd("s", "SELECT INBOX")
		r.send("a FETCH 1 (BODY.PEEK[1] BINARY.PEEK[1])\r\n")
		// Read the raw bytes of the whole response.
		got := strings.Join(r.expect("a "), "\n")
		if !strings.HasPrefix(got, "* 1 FETCH") || !strings.Contains(got, "a OK") {
			t.Fatalf("FETCH: %q", got)
		}
		body := got[strings.Index(got, "BODY[1]"):]
		body = body[:strings.Index(body, "BINARY[1]")]
		if strings.IndexByte(body, 0) >= 0 || !strings.Contains(body, "before\x80after") {
			t.Fatalf("BODY[1] with a NUL: %q", body)
		}
		if bin := got[strings.Index(got, "BINARY[1]"):]; !strings.Contains(bin, "~{") || !strings.Contains(bin, "before\x00after") {
			t.Fatalf("BINARY[1] should keep the NUL in a literal8: %q", bin)
		}
	})

	t.Run("MOVE into the selected mailbox gives new UIDs there", func(t *testing.T) {
		u := e.user(t, "mover")
		e.deliver(t, n, u, message("one", "x"))
		e.deliver(t, n, u, message("two", "x"))
		r := e.raw(t, n, true)
		login(r, u)
		r.cmd("s", "SELECT INBOX")
		got := r.cmd("a", "UID MOVE 1 INBOX")
		if !strings.HasPrefix(last(got), "a OK") || !hasPrefix(got, "* OK [COPYUID") || !slicesContain(got, "* 1 EXPUNGE") {
			t.Fatalf("UID MOVE 1 INBOX: %q", got)
		}
		got = r.cmd("b", "UID FETCH 1:* (UID)")
		uids := regexp.MustCompile(`UID (\d+)`).FindAllStringSubmatch(strings.Join(got, " "), -1)
		if len(uids) != 2 || uids[0][1] != "2" || uids[1][1] != "3" {
			t.Fatalf("after MOVE into INBOX: %q", got)
		}
	})

	t.Run("FLAGS announces a new keyword before any FETCH shows it", func(t *testing.T) {
		u := e.user(t, "keywords")
		e.deliver(t, n, u, message("one", "x"))
		a := e.raw(t, n, true)
		login(a, u)
		a.cmd("s", "SELECT INBOX")
		b := e.raw(t, n, false)
		login(b, u)
		b.cmd("s", "SELECT INBOX")
		order := func(who string, lines []string, kw string) {
			t.Helper()
			flags, fetch := -1, -1
			for i, l := range lines {
				if strings.HasPrefix(l, "* FLAGS") && strings.Contains(l, kw) && flags < 0 {
					flags = i
				}
				if strings.Contains(l, "FETCH") && strings.Contains(l, kw) && fetch < 0 {
					fetch = i
				}
			}
			if fetch < 0 || flags < 0 || flags > fetch {
				t.Fatalf("%s: FLAGS with %s must come before the FETCH showing it: %q", who, kw, lines)
			}
		}
		order("the session that stored it", a.cmd("a", "STORE 1 +FLAGS ($Fresh1)"), "$Fresh1")
		order("another session", b.cmd("b", "FETCH 1 FLAGS"), "$Fresh1")
		// A keyword first seen in a FETCH after the other session stored it.
		b.cmd("c", "STORE 1 +FLAGS.SILENT ($Fresh2)")
		order("FETCH in the first session", a.cmd("d", "FETCH 1 (FLAGS)"), "$Fresh2")
	})
}

func slicesContain(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
