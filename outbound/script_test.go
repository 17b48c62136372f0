package outbound

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// scriptServer speaks just enough SMTP, by hand, for what go-smtp's server
// cannot be made to do (no 8BITMIME, bytes after a STARTTLS reply). answer
// gets each command line and returns the reply lines (CRLF added).
type scriptServer struct {
	addr  string
	mu    sync.Mutex
	lines []string
}

func newScript(t *testing.T, answer func(line string) string) *scriptServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{addr: l.Addr().String()}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.Write([]byte("220 script.test ESMTP\r\n"))
				r := bufio.NewReader(conn)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimRight(line, "\r\n")
					s.mu.Lock()
					s.lines = append(s.lines, line)
					s.mu.Unlock()
					reply := answer(line)
					if reply == "" {
						return
					}
					conn.Write([]byte(strings.ReplaceAll(reply, "\n", "\r\n") + "\r\n"))
				}
			}()
		}
	}()
	return s
}

func (s *scriptServer) saw(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.HasPrefix(strings.ToUpper(l), prefix) {
			return true
		}
	}
	return false
}

func TestEightBitNeeds8BITMIME(t *testing.T) {
	e := newEnv(t)
	srv := newScript(t, func(line string) string {
		switch strings.ToUpper(strings.Fields(line)[0]) {
		case "EHLO":
			return "250-script.test\n250 SIZE 1000000"
		case "QUIT":
			return "221 bye"
		}
		return "250 ok"
	})
	e.dns.setMX("old.test", MX{Host: "mx.old.test", Pref: 1})
	e.dns.setIP("mx.old.test", "127.0.1.1")
	e.net.set("127.0.1.1:2525", srv.addr)
	c := e.client(nil)
	m := message("a@sender.test", "b@old.test")
	m.EightBit = true
	r := one(t, c.Send(bg, "old.test", m, nil))
	wantPermanent(t, r, 554, "5.6.3")
	if !strings.Contains(r.Text, "8BITMIME") || srv.saw("MAIL") {
		t.Fatalf("%+v (MAIL sent: %v)", r, srv.saw("MAIL"))
	}
}

func TestDataAfterSTARTTLSReplyRefused(t *testing.T) {
	e := newEnv(t)
	srv := newScript(t, func(line string) string {
		switch strings.ToUpper(strings.Fields(line)[0]) {
		case "EHLO":
			return "250-script.test\n250 STARTTLS"
		case "STARTTLS":
			// A reply with a command injected behind it (CVE-2011-0411 style).
			return "220 go ahead\n250 injected"
		}
		return "250 ok"
	})
	e.dns.setMX("inject.test", MX{Host: "mx.inject.test", Pref: 1})
	e.dns.setIP("mx.inject.test", "127.0.1.1")
	e.net.set("127.0.1.1:2525", srv.addr)
	c := e.client(func(c *Config) { c.TLS = TLSRequire })
	wantTemporary(t, one(t, c.Send(bg, "inject.test", message("a@sender.test", "b@inject.test"), nil)), "after its STARTTLS reply")
	if srv.saw("MAIL") {
		t.Fatal("a transaction started")
	}
}

func TestOpportunisticTLSFailureRetriesPlain(t *testing.T) {
	e := newEnv(t)
	// A TLS version the client refuses: the handshake fails.
	srv := newMX(t, withTLS(issue(t, nil, "mx.oldtls.test")))
	srv.srv.TLSConfig.MaxVersion = tls.VersionTLS11
	e.mx("oldtls.test", "mx.oldtls.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	wantDelivered(t, one(t, c.Send(bg, "oldtls.test", message("a@sender.test", "b@oldtls.test"), nil)))
	conns, _, msgs := srv.stats()
	if conns != 2 || len(msgs) != 1 || msgs[0].tls {
		t.Fatalf("%d connections, %+v; want a second, plain connection", conns, msgs)
	}
	// With TLS required, the same remote is a temporary failure.
	req := e.client(func(c *Config) { c.TLS = TLSRequire })
	wantTemporary(t, one(t, req.Send(bg, "oldtls.test", message("a@sender.test", "b@oldtls.test"), nil)), "TLS with mx.oldtls.test")
}

func TestBodyReadErrorAbandons(t *testing.T) {
	e := newEnv(t)
	srv := newMX(t)
	e.mx("rerr.test", "mx.rerr.test", 10, "127.0.1.1", srv)
	c := e.client(nil)
	m := message("a@sender.test", "b@rerr.test")
	m.Body = func() (io.Reader, error) {
		return io.MultiReader(strings.NewReader("Subject: x\r\n\r\npart"), iotest.ErrReader(errors.New("disk gone"))), nil
	}
	wantTemporary(t, one(t, c.Send(bg, "rerr.test", m, nil)), "reading the stored message failed: disk gone")
	waitFor(t, "the server to see the transaction end", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.dataErrs == 1
	})
	if _, _, msgs := srv.stats(); len(msgs) != 0 {
		t.Fatalf("a truncated message was stored: %+v", msgs)
	}
}

// A long reply text is clipped before it goes into the queue entry (one
// Raft entry per attempt), the logs and the DSN.
func TestLongReplyTextIsClipped(t *testing.T) {
	e := newEnv(t)
	long := newScript(t, func(line string) string {
		switch strings.ToUpper(strings.Fields(line)[0]) {
		case "EHLO":
			return "250 script.test"
		case "RCPT":
			return "550 5.1.1 " + strings.Repeat("no such user ", 100) // under go-smtp's own line limit
		case "QUIT":
			return "221 bye"
		}
		return "250 ok"
	})
	e.dns.setMX("long.test", MX{Host: "mx.long.test", Pref: 1})
	e.dns.setIP("mx.long.test", "127.0.1.2")
	e.net.set("127.0.1.2:2525", long.addr)
	r := one(t, e.client(nil).Send(bg, "long.test", message("a@sender.test", "b@long.test"), nil))
	if !r.Permanent || len(r.Text) > maxReplyText+8 {
		t.Fatalf("a 1.3 KB 550: permanent %v, text of %d bytes (%q); want permanent and clipped to %d", r.Permanent, len(r.Text), r.Text, maxReplyText)
	}
}
