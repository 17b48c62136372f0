package pop3

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
)

const (
	msgCRLF   = "Subject: one\r\nFrom: a@b.test\r\n\r\nHello.\r\n.hidden dot line\r\nBye.\r\n"
	msgBareLF = "Subject: two\nFrom: a@b.test\n\nbare LF line 1\n.dot\nline 3\n"
	msgNoEnd  = "Subject: three\r\n\r\nno final line end"
)

func threeMessages() *fakeStore {
	st := newFakeStore()
	st.add(msgCRLF)
	st.add(msgBareLF)
	st.add(msgNoEnd)
	return st
}

func TestEveryCommandOnTheWire(t *testing.T) {
	st := threeMessages()
	srv := startServer(t, st, Options{MaxBadCommands: 100})
	c := dial(t, srv.addr)

	c.send("CAPA")
	if s := c.line(); s != "+OK capability list follows" {
		t.Fatal(s)
	}
	want := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN", "STLS", "IMPLEMENTATION mailcluster"}
	if got := c.lines(); !slices.Equal(got, want) {
		t.Fatalf("CAPA before login: %q", got)
	}
	for _, cmd := range []string{"STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"} {
		if s := c.cmd(cmd); !strings.HasPrefix(s, "-ERR ") {
			t.Fatalf("%s before login: %s", cmd, s)
		}
	}
	if s := c.cmd("PASS secret"); !strings.HasPrefix(s, "-ERR") {
		t.Fatalf("PASS without USER: %s", s)
	}
	if s := c.cmd("APOP alice@example.test 0123456789abcdef0123456789abcdef"); !strings.HasPrefix(s, "-ERR") {
		t.Fatal(s)
	}
	c.login()

	c.send("CAPA")
	c.line()
	if got, want := c.lines(), []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION mailcluster"}; !slices.Equal(got, want) {
		t.Fatalf("CAPA after login: %q", got)
	}
	wire := []string{string(normalizeRef([]byte(msgCRLF))), string(normalizeRef([]byte(msgBareLF))), string(normalizeRef([]byte(msgNoEnd)))}
	total := len(wire[0]) + len(wire[1]) + len(wire[2])
	if s := c.cmd("STAT"); s != fmt.Sprintf("+OK 3 %d", total) {
		t.Fatalf("STAT: %s", s)
	}
	if s := c.cmd("LIST"); s != fmt.Sprintf("+OK 3 messages (%d octets)", total) {
		t.Fatalf("LIST: %s", s)
	}
	if got, want := c.lines(), []string{fmt.Sprintf("1 %d", len(wire[0])), fmt.Sprintf("2 %d", len(wire[1])), fmt.Sprintf("3 %d", len(wire[2]))}; !slices.Equal(got, want) {
		t.Fatalf("LIST: %q, want %q", got, want)
	}
	if s := c.cmd("LIST 2"); s != fmt.Sprintf("+OK 2 %d", len(wire[1])) {
		t.Fatal(s)
	}
	for _, bad := range []string{"LIST 0", "LIST 4", "LIST x", "LIST -1", "LIST 1 2", "RETR", "TOP 1", "TOP 1 x", "DELE", "STAT 1", "NOOP x", "USER bob", "STLS", "FOO", "RETRY 1"} {
		if s := c.cmd(bad); !strings.HasPrefix(s, "-ERR ") {
			t.Fatalf("%q: %s", bad, s)
		}
	}
	if s := c.cmd("UIDL"); s != "+OK unique-id listing follows" {
		t.Fatal(s)
	}
	if got, want := c.lines(), []string{"1 00000001" + "6553F100", "2 00000002" + "6553F100", "3 00000003" + "6553F100"}; !slices.Equal(got, want) {
		t.Fatalf("UIDL: %q, want %q", got, want)
	}
	if s := c.cmd("UIDL 3"); s != "+OK 3 000000036553F100" {
		t.Fatal(s)
	}
	for i, w := range wire {
		if s := c.cmd(fmt.Sprintf("RETR %d", i+1)); s != fmt.Sprintf("+OK %d octets", len(w)) {
			t.Fatalf("RETR %d: %s", i+1, s)
		}
		if got := c.message(); string(got) != w {
			t.Fatalf("RETR %d: %q, want %q", i+1, got, w)
		}
	}
	c.ok("TOP 1 0")
	if got := string(c.message()); got != "Subject: one\r\nFrom: a@b.test\r\n\r\n" {
		t.Fatalf("TOP 1 0: %q", got)
	}
	c.ok("TOP 2 2")
	if got := string(c.message()); got != "Subject: two\r\nFrom: a@b.test\r\n\r\nbare LF line 1\r\n.dot\r\n" {
		t.Fatalf("TOP 2 2: %q", got)
	}
	c.ok("NOOP")
	if s := c.cmd("DELE 1"); s != "+OK message 1 marked for deletion" {
		t.Fatal(s)
	}
	for _, cmd := range []string{"DELE 1", "RETR 1", "TOP 1 0", "LIST 1", "UIDL 1"} {
		if s := c.cmd(cmd); s != "-ERR message 1 is deleted" {
			t.Fatalf("%s after DELE: %s", cmd, s)
		}
	}
	if s := c.cmd("STAT"); s != fmt.Sprintf("+OK 2 %d", len(wire[1])+len(wire[2])) {
		t.Fatalf("STAT after DELE: %s", s)
	}
	c.ok("LIST")
	if got := c.lines(); len(got) != 2 || !strings.HasPrefix(got[0], "2 ") {
		t.Fatalf("LIST after DELE: %q", got)
	}
	c.ok("RSET")
	if s := c.cmd("STAT"); s != fmt.Sprintf("+OK 3 %d", total) {
		t.Fatalf("STAT after RSET: %s", s)
	}
	c.ok("DELE 1")
	c.ok("DELE 3")
	if len(st.expungeLog()) != 0 {
		t.Fatal("DELE deleted before QUIT")
	}
	if s := c.cmd("QUIT"); s != "+OK pop.test POP3 server signing off (2 messages deleted)" {
		t.Fatal(s)
	}
	if !c.closed() {
		t.Fatal("connection open after QUIT")
	}
	if got := st.uids(); !slices.Equal(got, []uint32{2}) {
		t.Fatalf("left after QUIT: %v", got)
	}
	if log := st.expungeLog(); len(log) != 1 || !slices.Equal(log[0], []uint32{1, 3}) {
		t.Fatalf("expunges %v, want one of [1 3]", log)
	}
}

func TestQuitBeforeLogin(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{})
	c := dial(t, srv.addr)
	if s := c.cmd("QUIT"); s != "+OK pop.test POP3 server signing off" {
		t.Fatal(s)
	}
	if !c.closed() {
		t.Fatal("still open")
	}
}

func TestQuitWithoutQuorumDeletesNothing(t *testing.T) {
	st := threeMessages()
	st.expungeErr = fmt.Errorf("%w: test", replication.ErrNoQuorum)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.addr)
	c.login()
	c.ok("RETR 1")
	c.lines()
	c.ok("DELE 1")
	c.ok("DELE 2")
	s := c.cmd("QUIT")
	if !strings.HasPrefix(s, "-ERR [SYS/TEMP] ") {
		t.Fatalf("QUIT without quorum: %s", s)
	}
	if !c.closed() {
		t.Fatal("connection open after QUIT")
	}
	if got := st.uids(); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("left: %v", got)
	}
	waitFor(t, "the session to end", func() bool { return srv.sessionsOpen() == 0 })
	if seen := st.seenUIDs(); len(seen) != 0 {
		t.Fatalf("marked \\Seen although the cluster was unavailable: %v", seen)
	}
}

// TestQuitAfterUnknownOutcome: the store reports a timeout, but the
// deletion did commit and is applied here: QUIT tells the truth, +OK.
func TestQuitAfterUnknownOutcome(t *testing.T) {
	st := threeMessages()
	st.expungeErr, st.expungeLate = fmt.Errorf("%w: timed out", replication.ErrNoQuorum), true
	srv := startServer(t, st, Options{})
	c := dial(t, srv.addr)
	c.login()
	c.ok("DELE 2")
	if s := c.cmd("QUIT"); s != "+OK pop.test POP3 server signing off (1 messages deleted)" {
		t.Fatal(s)
	}
}

// A deletion that may still commit is answered [SYS/TEMP] with a text that
// says so, not "were not deleted" (DESIGN.md §1.2).
func TestQuitWithUncertainOutcomeSaysSo(t *testing.T) {
	st := threeMessages()
	st.expungeErr = fmt.Errorf("%w: %w", replication.ErrOutcomeUnknown, replication.ErrNoQuorum)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.addr)
	c.login()
	c.ok("DELE 1")
	s := c.cmd("QUIT")
	if !strings.HasPrefix(s, "-ERR [SYS/TEMP] ") || !strings.Contains(s, "may have been made") || strings.Contains(s, "not deleted") {
		t.Fatalf("QUIT with an uncertain outcome: %s", s)
	}
}

func TestDroppedConnectionDeletesNothing(t *testing.T) {
	st := threeMessages()
	srv := startServer(t, st, Options{})
	c := dial(t, srv.addr)
	c.login()
	c.ok("RETR 2")
	c.lines()
	c.ok("DELE 1")
	c.ok("DELE 2")
	c.conn.Close()
	waitFor(t, "the session to end", func() bool { return srv.sessionsOpen() == 0 })
	if got := st.uids(); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Fatalf("a dropped connection deleted: left %v", got)
	}
	// What RETR sent is still marked read.
	if seen := st.seenUIDs(); !slices.Equal(seen, []uint32{2}) {
		t.Fatalf("seen %v, want [2]", seen)
	}
}

func TestRetrMarksSeenUnlessConfigured(t *testing.T) {
	for _, leave := range []bool{false, true} {
		t.Run(fmt.Sprintf("LeaveUnseen=%v", leave), func(t *testing.T) {
			st := threeMessages()
			srv := startServer(t, st, Options{LeaveUnseen: leave})
			c := dial(t, srv.addr)
			c.login()
			for _, cmd := range []string{"RETR 1", "RETR 2", "TOP 3 10"} {
				c.ok(cmd)
				c.lines()
			}
			c.ok("DELE 2")
			c.ok("QUIT")
			waitFor(t, "the session to end", func() bool { return srv.sessionsOpen() == 0 })
			want := []uint32{1} // 2 is deleted, TOP does not mark
			if leave {
				want = nil
			}
			if seen := st.seenUIDs(); !slices.Equal(seen, want) {
				t.Fatalf("seen %v, want %v", seen, want)
			}
		})
	}
}

func TestTwoSessionsOneMaildrop(t *testing.T) {
	st := threeMessages()
	srv := startServer(t, st, Options{})
	a, b := dial(t, srv.addr), dial(t, srv.addr)
	a.login()
	b.login()
	a.ok("DELE 1")
	a.ok("QUIT")
	// b keeps its view: message 1 is listed but gone.
	b.ok("LIST")
	if got := b.lines(); len(got) != 3 {
		t.Fatalf("b's view changed: %q", got)
	}
	if s := b.cmd("RETR 1"); s != "-ERR message 1 was deleted by another session" {
		t.Fatal(s)
	}
	b.ok("DELE 1") // harmless
	b.ok("DELE 2")
	if s := b.cmd("QUIT"); !strings.Contains(s, "2 messages deleted") {
		t.Fatal(s)
	}
	if got := st.uids(); !slices.Equal(got, []uint32{3}) {
		t.Fatalf("left %v", got)
	}
}

func TestMaildropUnavailableAtLogin(t *testing.T) {
	st := threeMessages()
	st.openErr = fmt.Errorf("%w: test", replication.ErrNoQuorum)
	srv := startServer(t, st, Options{})
	c := dial(t, srv.addr)
	c.ok("USER alice@example.test")
	if s := c.cmd("PASS secret"); !strings.HasPrefix(s, "-ERR [SYS/TEMP] ") {
		t.Fatal(s)
	}
	if s := c.cmd("STAT"); !strings.HasPrefix(s, "-ERR") {
		t.Fatalf("logged in without a maildrop: %s", s)
	}
	st.mu.Lock()
	st.openErr = nil
	st.mu.Unlock()
	c.login()
	c.ok("STAT")
}

func TestBodyUnavailable(t *testing.T) {
	st := threeMessages()
	srv := startServer(t, st, Options{})
	c := dial(t, srv.addr)
	c.login()
	st.mu.Lock()
	st.bodyErr = replication.ErrBodyUnavailable
	st.mu.Unlock()
	for _, cmd := range []string{"STAT", "LIST", "LIST 1", "RETR 1", "TOP 1 0"} {
		if s := c.cmd(cmd); !strings.HasPrefix(s, "-ERR [SYS/TEMP] ") {
			t.Fatalf("%s: %s", cmd, s)
		}
	}
	c.ok("UIDL") // needs no body
	c.lines()
}

func TestWrongPasswords(t *testing.T) {
	st := newFakeStore()
	srv := startServer(t, st, Options{MaxAuthFailures: 2})
	c := dial(t, srv.addr)
	c.ok("USER alice@example.test")
	if s := c.cmd("PASS wrong"); s != "-ERR [AUTH] invalid user name or password" {
		t.Fatal(s)
	}
	c.ok("USER nobody@example.test") // unknown users are not revealed
	if s := c.cmd("PASS secret"); s != "-ERR [AUTH] invalid user name or password" {
		t.Fatal(s)
	}
	if !c.closed() {
		t.Fatal("still open after MaxAuthFailures")
	}
}

func TestLoginThrottle(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{MaxAuthFailures: 100}, func(s *Server) {
		s.limiter = auth.NewLimiter(auth.LimiterOptions{IPFailures: 2, FailDelay: time.Millisecond, Block: time.Hour})
	})
	c := dial(t, srv.addr)
	for range 2 {
		c.ok("USER alice@example.test")
		if s := c.cmd("PASS wrong"); !strings.HasPrefix(s, "-ERR [AUTH]") {
			t.Fatal(s)
		}
	}
	c.ok("USER alice@example.test")
	if s := c.cmd("PASS secret"); !strings.HasPrefix(s, "-ERR [SYS/TEMP] too many failed logins") {
		t.Fatalf("the right password got through a blocked address: %s", s)
	}
	if s := c.cmd("AUTH PLAIN " + plain("", "alice@example.test", "secret")); !strings.HasPrefix(s, "-ERR [SYS/TEMP]") {
		t.Fatal(s)
	}
}

func plain(authz, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
}

func TestAuthPlain(t *testing.T) {
	srv := startServer(t, threeMessages(), Options{MaxAuthFailures: 100})
	c := dial(t, srv.addr)
	c.ok("AUTH")
	if got := c.lines(); !slices.Equal(got, []string{"PLAIN"}) {
		t.Fatalf("AUTH list: %q", got)
	}
	for cmd, want := range map[string]string{
		"AUTH CRAM-MD5":  "-ERR unsupported SASL mechanism",
		"AUTH PLAIN %%%": "-ERR invalid base64",
		"AUTH PLAIN =":   "-ERR [AUTH] malformed",
		"AUTH PLAIN " + plain("bob@example.test", "alice@example.test", "secret"): "-ERR [AUTH] logging in as another user",
		"AUTH PLAIN " + plain("", "alice@example.test", "wrong"):                  "-ERR [AUTH] invalid",
	} {
		if s := c.cmd(cmd); !strings.HasPrefix(s, want) {
			t.Fatalf("%s: %s, want %s…", cmd, s, want)
		}
	}
	// Without an initial response, then cancelled.
	if s := c.cmd("AUTH PLAIN"); s != "+ " {
		t.Fatalf("continuation: %q", s)
	}
	if s := c.cmd("*"); !strings.HasPrefix(s, "-ERR") {
		t.Fatal(s)
	}
	if s := c.cmd("auth plain"); s != "+ " {
		t.Fatalf("continuation: %q", s)
	}
	if s := c.cmd(plain("alice@example.test", "alice@example.test", "secret")); !strings.HasPrefix(s, "+OK") {
		t.Fatal(s)
	}
	c.ok("STAT")

	d := dial(t, srv.addr)
	d.ok("AUTH PLAIN " + plain("", "ALICE@example.test", "secret"))
	if s := d.cmd("STAT"); !strings.HasPrefix(s, "+OK 3 ") {
		t.Fatal(s)
	}
}

// remoteListener makes every connection look like it comes from another
// machine, so plain-text logins need TLS.
type remoteListener struct{ net.Listener }

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 40000}
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

func TestPlaintextNeedsTLSFromElsewhere(t *testing.T) {
	serverTLS, clientTLS := testCert(t)
	s, err := newServer(Config{Hostname: "pop.test", TLS: serverTLS, Options: Options{}}, threeMessages())
	if err != nil {
		t.Fatal(err)
	}
	s.limiter = auth.NewLimiter(auth.LimiterOptions{FailDelay: time.Millisecond})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(remoteListener{ln})
	t.Cleanup(func() { s.Close() })

	c := dial(t, ln.Addr().String())
	c.ok("CAPA")
	if got := c.lines(); slices.Contains(got, "USER") || slices.Contains(got, "SASL PLAIN") || !slices.Contains(got, "STLS") {
		t.Fatalf("CAPA without TLS from elsewhere: %q", got)
	}
	for _, cmd := range []string{"USER alice@example.test", "AUTH PLAIN " + plain("", "alice@example.test", "secret")} {
		if s := c.cmd(cmd); !strings.HasPrefix(s, "-ERR [AUTH] plain-text authentication is not allowed") {
			t.Fatalf("%s: %s", cmd, s)
		}
	}
	if s := c.cmd("STLS"); s != "+OK begin TLS negotiation" {
		t.Fatal(s)
	}
	tc := tls.Client(c.conn, clientTLS)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.r = tc, newReader(tc)
	c.ok("CAPA")
	if got := c.lines(); !slices.Contains(got, "USER") || !slices.Contains(got, "SASL PLAIN") || slices.Contains(got, "STLS") {
		t.Fatalf("CAPA after STLS: %q", got)
	}
	if s := c.cmd("STLS"); !strings.HasPrefix(s, "-ERR") {
		t.Fatal(s)
	}
	c.login()
	c.ok("STAT")
}

func TestImplicitTLS(t *testing.T) {
	srv := startServer(t, threeMessages(), Options{})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.ServeTLS(ln)
	conn, err := tls.Dial("tcp", ln.Addr().String(), srv.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: newReader(conn)}
	if g := c.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatal(g)
	}
	c.ok("CAPA")
	if got := c.lines(); slices.Contains(got, "STLS") || !slices.Contains(got, "USER") {
		t.Fatalf("CAPA on implicit TLS: %q", got)
	}
	c.login()
	c.ok("RETR 1")
	if got := string(c.message()); got != msgCRLF {
		t.Fatalf("RETR over TLS: %q", got)
	}
}

func TestNoTLSConfigured(t *testing.T) {
	s, err := newServer(Config{Hostname: "pop.test"}, threeMessages())
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	c := dial(t, ln.Addr().String())
	c.ok("CAPA")
	if got := c.lines(); slices.Contains(got, "STLS") {
		t.Fatalf("STLS offered without a certificate: %q", got)
	}
	if s := c.cmd("STLS"); !strings.HasPrefix(s, "-ERR") {
		t.Fatal(s)
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.ServeTLS(ln2); err == nil {
		t.Fatal("ServeTLS without a certificate")
	}
}

func TestPipelining(t *testing.T) {
	srv := startServer(t, threeMessages(), Options{})
	c := dial(t, srv.addr)
	c.send("USER alice@example.test\r\nPASS secret\r\nSTAT\r\nUIDL\r\nRETR 2\r\nDELE 2\r\nQUIT")
	for _, want := range []string{"+OK send PASS", "+OK logged in", "+OK 3 ", "+OK unique-id"} {
		if s := c.line(); !strings.HasPrefix(s, want) {
			t.Fatalf("%q, want %q", s, want)
		}
	}
	if got := c.lines(); len(got) != 3 {
		t.Fatalf("UIDL: %q", got)
	}
	c.line()
	if got := string(c.message()); got != string(normalizeRef([]byte(msgBareLF))) {
		t.Fatalf("RETR: %q", got)
	}
	for _, want := range []string{"+OK message 2", "+OK pop.test POP3 server signing off (1 messages deleted)"} {
		if s := c.line(); !strings.HasPrefix(s, want) {
			t.Fatalf("%q, want %q", s, want)
		}
	}
}

func TestLongLinesAndBadCommands(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{MaxBadCommands: 3})
	c := dial(t, srv.addr)
	if s := c.cmd("USER " + strings.Repeat("x", 2000)); s != "-ERR line too long (the limit is 1024 octets)" {
		t.Fatal(s)
	}
	c.ok("CAPA") // the connection resynchronised at the line end
	c.lines()
	if s := c.cmd("HELO"); s != "-ERR unknown command" {
		t.Fatal(s)
	}
	if s := c.cmd("GET / HTTP/1.1"); s != "-ERR unknown command" {
		t.Fatal(s)
	}
	if !c.closed() {
		t.Fatal("still open after MaxBadCommands")
	}
}

func TestIdleTimeoutClosesSilentlyAndDeletesNothing(t *testing.T) {
	st := threeMessages()
	srv := startServer(t, st, Options{}, func(s *Server) { s.idle = 200 * time.Millisecond })
	if srv.opts.IdleTimeout != 10*time.Minute {
		t.Fatalf("default idle timeout %v", srv.opts.IdleTimeout)
	}
	c := dial(t, srv.addr)
	c.login()
	c.ok("DELE 1")
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	rest, err := io.ReadAll(c.r)
	if err != nil && !isReset(err) {
		t.Fatal(err)
	}
	if len(rest) != 0 {
		t.Fatalf("autologout sent %q; RFC 1939 says close without a reply", rest)
	}
	if got := st.uids(); len(got) != 3 {
		t.Fatalf("the timeout deleted: %v", got)
	}
}

func TestIdleTimeoutFloor(t *testing.T) {
	if got := (Options{IdleTimeout: time.Minute}).withDefaults().IdleTimeout; got != 10*time.Minute {
		t.Fatalf("IdleTimeout 1m became %v; RFC 1939 wants at least 10m", got)
	}
	if got := (Options{IdleTimeout: time.Hour}).withDefaults().IdleTimeout; got != time.Hour {
		t.Fatal(got)
	}
	if got := (Options{MaxLineLength: 10}).withDefaults().MaxLineLength; got != 255 {
		t.Fatal(got)
	}
}

func TestConnectionLimits(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{MaxConnectionsPerIP: 2})
	dial(t, srv.addr)
	dial(t, srv.addr)
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, r: newReader(conn)}
	if s := c.line(); s != "-ERR [SYS/TEMP] too many connections; try again later" {
		t.Fatal(s)
	}
}

func TestCloseEndsSessions(t *testing.T) {
	st := threeMessages()
	srv := startServer(t, st, Options{})
	c := dial(t, srv.addr)
	c.login()
	c.ok("DELE 1")
	srv.Close()
	if !c.closed() {
		t.Fatal("session survived Close")
	}
	if got := st.uids(); len(got) != 3 {
		t.Fatalf("Close deleted: %v", got)
	}
}

func TestSizesAreCachedPerBody(t *testing.T) {
	st := threeMessages()
	srv := startServer(t, st, Options{})
	for range 2 {
		c := dial(t, srv.addr)
		c.login()
		c.ok("LIST")
		c.lines()
		c.ok("QUIT")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.bodyOpens != 3 {
		t.Fatalf("opened bodies %d times for two LISTs of 3 messages; want 3", st.bodyOpens)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := threeMessages()
	s, err := newServer(Config{Hostname: "pop.test", Metrics: reg}, st)
	if err != nil {
		t.Fatal(err)
	}
	// A second server on the same registry shares the collectors.
	if _, err := newServer(Config{Hostname: "pop.test", Metrics: reg}, st); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	c := dial(t, ln.Addr().String())
	c.login()
	c.ok("RETR 1")
	c.lines()
	c.ok("DELE 1")
	c.ok("QUIT")
	waitFor(t, "the session to end", func() bool { return s.sessionsOpen() == 0 })
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "mailcluster_pop3_") {
			t.Errorf("metric %s lacks the mailcluster_pop3_ prefix", f.GetName())
		}
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = v
		}
	}
	for key, want := range map[string]float64{
		"mailcluster_pop3_logins_total,result=ok":                1,
		"mailcluster_pop3_commands_total,command=RETR,result=ok": 1,
		"mailcluster_pop3_messages_deleted_total":                1,
		"mailcluster_pop3_message_octets_sent_total":             float64(len(msgCRLF)),
		"mailcluster_pop3_connections_total,endpoint=pop3":       1,
		"mailcluster_pop3_sessions_active":                       0,
		"mailcluster_pop3_updates_total,result=ok":               1,
		"mailcluster_pop3_commands_total,command=QUIT,result=ok": 1,
		"mailcluster_pop3_commands_total,command=USER,result=ok": 1,
		"mailcluster_pop3_commands_total,command=PASS,result=ok": 1,
		"mailcluster_pop3_commands_total,command=DELE,result=ok": 1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
