package managesieve

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/protocol/auth"
	"github.com/mailcluster/mailcluster/replication"
)

const script1 = "require \"fileinto\";\r\nif header :contains \"subject\" \"list\" { fileinto \"Lists\"; }\r\n"

func TestGreetingListsCapabilities(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{})
	c, caps := dial(t, srv.addr)
	want := []string{
		`"IMPLEMENTATION" "mailcluster"`, `"SASL" "PLAIN"`, `"SIEVE" "fileinto envelope"`, `"STARTTLS"`,
		`"MAXREDIRECTS" "5"`, `"UNAUTHENTICATE"`, `"VERSION" "1.0"`,
	}
	if !slices.Equal(caps, want) {
		t.Fatalf("greeting capabilities %q, want %q", caps, want)
	}
	if got := c.ok("CAPABILITY"); !slices.Equal(got, want) {
		t.Fatalf("CAPABILITY %q", got)
	}
	c.login()
	got := c.ok("capability") // keywords are case-insensitive
	if !slices.Contains(got, `"OWNER" "alice@example.test"`) || slices.Contains(got, `"STARTTLS"`) || !slices.Contains(got, `"SASL" ""`) {
		t.Fatalf("CAPABILITY after login: %q", got)
	}
}

func TestEveryCommandOnTheWire(t *testing.T) {
	st := newFakeStore()
	srv := startServer(t, st, Options{MaxBadCommands: 100})
	c, _ := dial(t, srv.addr)

	for _, cmd := range []string{`LISTSCRIPTS`, `GETSCRIPT "a"`, `PUTSCRIPT "a" "b"`, `SETACTIVE "a"`,
		`DELETESCRIPT "a"`, `RENAMESCRIPT "a" "b"`, `CHECKSCRIPT "x"`, `HAVESPACE "a" 1`, `UNAUTHENTICATE`} {
		if s := c.cmd(cmd); !strings.HasPrefix(s, "NO ") {
			t.Fatalf("%s before login: %s", cmd, s)
		}
	}
	if s := c.ok(`NOOP "t1"`); s != nil {
		t.Fatal(s)
	}
	if s := c.cmd(`NOOP "t1"`); s != `OK (TAG "t1") "done"` {
		t.Fatalf("NOOP with a tag: %s", s)
	}
	c.login()
	if s := c.cmd(`AUTHENTICATE "PLAIN" "` + plain(testUser, testPass) + `"`); !strings.HasPrefix(s, "NO") {
		t.Fatalf("second AUTHENTICATE: %s", s)
	}
	if s := c.cmd("STARTTLS"); !strings.HasPrefix(s, "NO") {
		t.Fatalf("STARTTLS after login: %s", s)
	}

	if got := c.ok("LISTSCRIPTS"); len(got) != 0 {
		t.Fatalf("LISTSCRIPTS of nothing: %q", got)
	}
	c.ok(`HAVESPACE "filters" 300`)
	if s := c.cmd(`HAVESPACE "filters" 20000`); !strings.HasPrefix(s, "NO (QUOTA/MAXSIZE)") {
		t.Fatalf("HAVESPACE over the quota: %s", s)
	}
	if s := c.cmd(`HAVESPACE "filters" 99999999`); !strings.HasPrefix(s, "NO (QUOTA/MAXSIZE)") {
		t.Fatalf("HAVESPACE over the script limit: %s", s)
	}
	// A literal, the way clients send scripts.
	c.send(`PUTSCRIPT "filters" ` + literal(script1) + "\r\n")
	if _, s := c.response(); s != "OK" {
		t.Fatalf("PUTSCRIPT: %s", s)
	}
	if got, _ := st.get("filters"); got != script1 {
		t.Fatalf("stored %q", got)
	}
	// A quoted script and a literal name; the synchronising literal form
	// is read at once, without a continuation.
	c.send("PUTSCRIPT {7}\r\nvacat\"n \"keep;\"\r\n")
	if _, s := c.response(); s != "OK" {
		t.Fatalf("PUTSCRIPT with a literal name: %s", s)
	}
	if got, _ := st.get(`vacat"n`); got != "keep;" {
		t.Fatalf("stored %q", got)
	}
	if s := c.cmd(`PUTSCRIPT "bad" "if true { error; }"`); s != `NO "line 1: unknown command \"error\""` {
		t.Fatalf("PUTSCRIPT of an invalid script: %s", s)
	}
	if _, ok := st.get("bad"); ok {
		t.Fatal("an invalid script was stored")
	}
	if s := c.cmd(`CHECKSCRIPT "keep;\r\nerror"`); !strings.HasPrefix(s, "NO") {
		t.Fatalf("CHECKSCRIPT with CR in a quoted string: %s", s)
	}
	c.send("CHECKSCRIPT " + literal("keep;\r\nerror;\r\n") + "\r\n")
	if _, s := c.response(); s != `NO "line 2: unknown command \"error\""` {
		t.Fatalf("CHECKSCRIPT of an invalid script: %s", s)
	}
	c.ok(`CHECKSCRIPT "keep;"`)
	if s := c.cmd(`PUTSCRIPT "" "keep;"`); !strings.HasPrefix(s, "NO") {
		t.Fatalf("PUTSCRIPT with an empty name: %s", s)
	}
	if s := c.cmd("PUTSCRIPT " + literal("a\tb") + ` "keep;"`); !strings.HasPrefix(s, "NO") {
		t.Fatalf("PUTSCRIPT with a control character in the name: %s", s)
	}
	if s := c.cmd(`PUTSCRIPT "x" ` + literal("\xff\xfe") + ""); !strings.HasPrefix(s, "NO") {
		t.Fatalf("PUTSCRIPT of a script that is not UTF-8: %s", s)
	}

	c.ok(`SETACTIVE "filters"`)
	if got, want := c.ok("LISTSCRIPTS"), []string{`"filters" ACTIVE`, `"vacat\"n"`}; !slices.Equal(got, want) {
		t.Fatalf("LISTSCRIPTS %q, want %q", got, want)
	}
	if got := c.ok(`GETSCRIPT "filters"`); len(got) != 1 || got[0] != quote(script1) {
		t.Fatalf("GETSCRIPT %q", got)
	}
	if s := c.cmd(`GETSCRIPT "nope"`); !strings.HasPrefix(s, "NO (NONEXISTENT)") {
		t.Fatalf("GETSCRIPT of nothing: %s", s)
	}
	if s := c.cmd(`SETACTIVE "nope"`); !strings.HasPrefix(s, "NO (NONEXISTENT)") {
		t.Fatalf("SETACTIVE of nothing: %s", s)
	}
	if s := c.cmd(`DELETESCRIPT "filters"`); !strings.HasPrefix(s, "NO (ACTIVE)") {
		t.Fatalf("DELETESCRIPT of the active script: %s", s)
	}
	if s := c.cmd(`RENAMESCRIPT "filters" "vacat\"n"`); !strings.HasPrefix(s, "NO (ALREADYEXISTS)") {
		t.Fatalf("RENAMESCRIPT onto a script: %s", s)
	}
	if s := c.cmd(`RENAMESCRIPT "nope" "x"`); !strings.HasPrefix(s, "NO (NONEXISTENT)") {
		t.Fatalf("RENAMESCRIPT of nothing: %s", s)
	}
	c.ok(`RENAMESCRIPT "filters" "main"`)
	if st.activeName() != "main" {
		t.Fatalf("active after rename: %q", st.activeName())
	}
	c.ok(`SETACTIVE ""`)
	if st.activeName() != "" {
		t.Fatal(`SETACTIVE "" left a script active`)
	}
	c.ok(`DELETESCRIPT "main"`)
	if s := c.cmd(`DELETESCRIPT "main"`); !strings.HasPrefix(s, "NO (NONEXISTENT)") {
		t.Fatalf("DELETESCRIPT twice: %s", s)
	}
	for i := range 4 {
		c.ok(`PUTSCRIPT "s` + string(rune('0'+i)) + `" "keep;"`)
	}
	if s := c.cmd(`PUTSCRIPT "one too many" "keep;"`); !strings.HasPrefix(s, "NO (QUOTA/MAXSCRIPTS)") {
		t.Fatalf("PUTSCRIPT over the script count: %s", s)
	}
	for _, bad := range []string{`PUTSCRIPT "a"`, `HAVESPACE "a" x`, `HAVESPACE "a" 99999999999`, `SETACTIVE a`,
		`GETSCRIPT`, `LISTSCRIPTS "x"`, `FOO`, `NOOP a b`, `"quoted"`, `RENAMESCRIPT "a"`} {
		if s := c.cmd(bad); !strings.HasPrefix(s, "NO") {
			t.Fatalf("%q: %s", bad, s)
		}
	}

	c.ok("UNAUTHENTICATE")
	if s := c.cmd("LISTSCRIPTS"); !strings.HasPrefix(s, "NO") {
		t.Fatalf("LISTSCRIPTS after UNAUTHENTICATE: %s", s)
	}
	c.login()
	if s := c.cmd("LOGOUT"); !strings.HasPrefix(s, "OK") {
		t.Fatal(s)
	}
	if !c.closed() {
		t.Fatal("connection open after LOGOUT")
	}
}

// A store that cannot answer is TRYLATER, never a permanent refusal.
func TestStoreFailureIsTryLater(t *testing.T) {
	st := newFakeStore()
	srv := startServer(t, st, Options{})
	c, _ := dial(t, srv.addr)
	c.login()
	st.setErr(replication.ErrNoQuorum)
	for _, cmd := range []string{"LISTSCRIPTS", `PUTSCRIPT "a" "keep;"`, `GETSCRIPT "a"`, `SETACTIVE "a"`, `DELETESCRIPT "a"`, `HAVESPACE "a" 5`} {
		if s := c.cmd(cmd); !strings.HasPrefix(s, "NO (TRYLATER)") {
			t.Fatalf("%s with the store down: %s", cmd, s)
		}
	}
	st.setErr(ErrInvalid)
	if s := c.cmd(`PUTSCRIPT "a" "keep;"`); s != `NO "invalid script"` {
		t.Fatalf("a permanent refusal: %s", s)
	}
	st.setErr(nil)
	c.ok(`PUTSCRIPT "a" "keep;"`)

	st.mu.Lock()
	st.authErr = replication.ErrNoQuorum
	st.mu.Unlock()
	c2, _ := dial(t, srv.addr)
	if s := c2.cmd(`AUTHENTICATE "PLAIN" "` + plain(testUser, testPass) + `"`); !strings.HasPrefix(s, "NO (TRYLATER)") {
		t.Fatalf("login with the store down: %s", s)
	}
}

func TestAuthenticate(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{MaxAuthFailures: 100})
	c, _ := dial(t, srv.addr)
	for name, cmd := range map[string]string{
		"unknown mechanism": `AUTHENTICATE "DIGEST-MD5"`,
		"bad base64":        `AUTHENTICATE "PLAIN" "!!!"`,
		"not PLAIN":         `AUTHENTICATE "PLAIN" "` + plain("", "")[:4] + `"`,
		"proxy":             `AUTHENTICATE "PLAIN" "` + base64.StdEncoding.EncodeToString([]byte("bob@example.test\x00"+testUser+"\x00"+testPass)) + `"`,
		"wrong password":    `AUTHENTICATE "PLAIN" "` + plain(testUser, "wrong") + `"`,
		"no arguments":      `AUTHENTICATE`,
	} {
		if s := c.cmd(cmd); !strings.HasPrefix(s, "NO") {
			t.Fatalf("%s: %s", name, s)
		}
	}
	// Continuation: the server sends an empty challenge; "*" cancels.
	c.send("AUTHENTICATE \"PLAIN\"\r\n")
	if l := c.rawLine(); l != `""` {
		t.Fatalf("challenge %q", l)
	}
	if s := c.cmd(`"*"`); !strings.HasPrefix(s, "NO") {
		t.Fatalf("cancel: %s", s)
	}
	// The response as a literal, as sieve-connect sends it.
	c.send("AUTHENTICATE \"PLAIN\"\r\n")
	c.rawLine()
	c.send(literal(plain(testUser, testPass)) + "\r\n")
	if _, s := c.response(); s != `OK "logged in"` {
		t.Fatalf("login by continuation: %s", s)
	}
	c.ok("LISTSCRIPTS")
}

// Failed logins go through the shared throttle: after too many, the
// client's address is refused even with the right password, and one
// session closes after MaxAuthFailures.
func TestLoginThrottling(t *testing.T) {
	lim := auth.NewLimiter(auth.LimiterOptions{FailDelay: time.Millisecond, IPFailures: 4, Block: time.Hour})
	srv := startServer(t, newFakeStore(), Options{MaxAuthFailures: 3}, func(c *Config) { c.Limiter = lim })
	c, _ := dial(t, srv.addr)
	for i := range 2 {
		if s := c.cmd(`AUTHENTICATE "PLAIN" "` + plain(testUser, "wrong") + `"`); s != `NO "authentication failed"` {
			t.Fatalf("failure %d: %s", i+1, s)
		}
	}
	if s := c.cmd(`AUTHENTICATE "PLAIN" "` + plain(testUser, "wrong") + `"`); !strings.HasPrefix(s, "BYE") {
		t.Fatalf("third failure: %s", s)
	}
	if !c.closed() {
		t.Fatal("session open after MaxAuthFailures")
	}
	c2, _ := dial(t, srv.addr)
	if s := c2.cmd(`AUTHENTICATE "PLAIN" "` + plain(testUser, "wrong") + `"`); s != `NO "authentication failed"` {
		t.Fatalf("fourth failure: %s", s)
	}
	if s := c2.cmd(`AUTHENTICATE "PLAIN" "` + plain(testUser, testPass) + `"`); !strings.HasPrefix(s, "NO (TRYLATER) \"too many failed logins") {
		t.Fatalf("right password from a blocked address: %s", s)
	}
	if lim.Blocked() != 1 {
		t.Fatalf("blocked addresses: %d", lim.Blocked())
	}
}

// pipeConn is one end of net.Pipe with the peer address a test chooses.
type pipeConn struct {
	net.Conn
	remote net.Addr
}

func (p pipeConn) RemoteAddr() net.Addr { return p.remote }

var farAway = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4242}

// pipeSession runs one session on a pipe whose peer is remote.
func pipeSession(t *testing.T, st *fakeStore, remote net.Addr) (*client, *tls.Config) {
	t.Helper()
	serverTLS, clientTLS := testCert(t)
	s, err := NewServer(Config{Store: st, Auth: st, Check: testCheck, TLS: serverTLS, Limiter: testLimiter()})
	if err != nil {
		t.Fatal(err)
	}
	srvEnd, cliEnd := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		newSession(s, pipeConn{srvEnd, remote}).run()
		srvEnd.Close()
	}()
	t.Cleanup(func() {
		cliEnd.Close()
		<-done
		s.Close()
	})
	return &client{t: t, conn: cliEnd, r: bufio.NewReader(cliEnd)}, clientTLS
}

// From a remote address a password waits for TLS: SASL is empty and
// AUTHENTICATE is ENCRYPT-NEEDED until STARTTLS, after which the server
// lists its capabilities again by itself.
func TestStartTLSThenAuthenticate(t *testing.T) {
	c, clientTLS := pipeSession(t, newFakeStore(), farAway)
	caps, status := c.response()
	if status != `OK "localhost ManageSieve ready"` || !slices.Contains(caps, `"SASL" ""`) || !slices.Contains(caps, `"STARTTLS"`) {
		t.Fatalf("greeting %q %s", caps, status)
	}
	if s := c.cmd(`AUTHENTICATE "PLAIN" "` + plain(testUser, testPass) + `"`); !strings.HasPrefix(s, "NO (ENCRYPT-NEEDED)") {
		t.Fatalf("AUTHENTICATE without TLS: %s", s)
	}
	// Anything sent after STARTTLS in the clear is dropped, not run.
	c.send("STARTTLS\r\nLISTSCRIPTS\r\n")
	if s := c.item(); s != `OK "begin TLS negotiation now"` {
		t.Fatalf("STARTTLS: %s", s)
	}
	cfg := clientTLS.Clone()
	cfg.ServerName = "localhost"
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	caps, status = c.response()
	if status != `OK "TLS is active"` || !slices.Contains(caps, `"SASL" "PLAIN"`) || slices.Contains(caps, `"STARTTLS"`) {
		t.Fatalf("capabilities after STARTTLS %q %s", caps, status)
	}
	if s := c.cmd("STARTTLS"); !strings.HasPrefix(s, "NO") {
		t.Fatalf("STARTTLS twice: %s", s)
	}
	c.send("AUTHENTICATE \"PLAIN\"\r\n")
	if l := c.rawLine(); l != `""` {
		t.Fatalf("challenge %q", l)
	}
	if s := c.cmd(`"` + plain(testUser, testPass) + `"`); s != `OK "logged in"` {
		t.Fatalf("login over TLS: %s", s)
	}
	c.ok("LISTSCRIPTS")
}

func TestNoStartTLSWithoutCertificate(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{}, func(c *Config) { c.TLS = nil })
	c, caps := dial(t, srv.addr)
	if slices.Contains(caps, `"STARTTLS"`) {
		t.Fatalf("STARTTLS offered without a certificate: %q", caps)
	}
	if s := c.cmd("STARTTLS"); !strings.HasPrefix(s, "NO") {
		t.Fatal(s)
	}
	c.login()
}

// An oversized literal is answered QUOTA/MAXSIZE and thrown away; the
// session goes on in step. One over what is skipped ends the session.
func TestOversizedLiteral(t *testing.T) {
	st := newFakeStore()
	srv := startServer(t, st, Options{MaxScriptSize: 1000, MaxDiscard: 5000})
	c, _ := dial(t, srv.addr)
	c.login()
	c.ok(`PUTSCRIPT "main" "keep;"`)
	// Its octets are thrown away, never run as commands.
	big := strings.Repeat("DELETESCRIPT \"main\"\r\n", 50)
	c.send(`PUTSCRIPT "big" ` + literal(big) + "\r\n")
	if _, s := c.response(); !strings.HasPrefix(s, "NO (QUOTA/MAXSIZE)") {
		t.Fatalf("1001-octet script: %s", s)
	}
	if _, ok := st.get("big"); ok {
		t.Fatal("an oversized script was stored")
	}
	if _, ok := st.get("main"); !ok {
		t.Fatal("the oversized literal's octets ran as commands")
	}
	big = strings.Repeat("#", 1001)
	// A quoted script over the limit is refused the same way.
	if s := c.cmd(`PUTSCRIPT "big" "` + big + `"`); !strings.HasPrefix(s, "NO (QUOTA/MAXSIZE)") {
		t.Fatalf("1001-octet quoted script: %s", s)
	}
	c.ok("NOOP")
	c.send(`PUTSCRIPT "big" ` + literal(strings.Repeat("#", 5001)) + "\r\n")
	if _, s := c.response(); !strings.HasPrefix(s, "BYE") {
		t.Fatalf("a literal over the discard limit: %s", s)
	}
	if !c.closed() {
		t.Fatal("session open after BYE")
	}
}

// A literal announced on a line that is bad anyway is still read, so its
// octets are never taken for commands.
func TestBadLineWithLiteralStaysInStep(t *testing.T) {
	st := newFakeStore()
	srv := startServer(t, st, Options{})
	c, _ := dial(t, srv.addr)
	c.login()
	c.ok(`PUTSCRIPT "main" "keep;"`)
	c.send("PUTSCRIPT (x) " + literal("x\r\nDELETESCRIPT \"main\"\r\n") + "\r\n")
	if _, s := c.response(); !strings.HasPrefix(s, "NO") {
		t.Fatalf("bad line: %s", s)
	}
	if got := c.ok("LISTSCRIPTS"); !slices.Equal(got, []string{`"main"`}) {
		t.Fatalf("LISTSCRIPTS: %q", got)
	}
}

func TestLongLineJunkAndPipelining(t *testing.T) {
	st := newFakeStore()
	srv := startServer(t, st, Options{MaxLineLength: 1024, MaxBadCommands: 100})
	c, _ := dial(t, srv.addr)
	if s := c.cmd("NOOP \"" + strings.Repeat("x", 5000) + "\""); !strings.HasPrefix(s, "NO") {
		t.Fatalf("long line: %s", s)
	}
	for _, junk := range []string{"\x00\x01\x02", "\xff\xfe garbage", "{", "}{", "NOOP {x+}", "NOOP \"unterminated", `NOOP "\x"`, "((((("} {
		if s := c.cmd(junk); !strings.HasPrefix(s, "NO") {
			t.Fatalf("%q: %s", junk, s)
		}
	}
	c.send("\r\n") // an empty line is ignored: the next command answers
	// Pipelined: every answer, in order, from one write.
	c.send("AUTHENTICATE \"PLAIN\" \"" + plain(testUser, testPass) + "\"\r\nPUTSCRIPT \"p\" " + literal("keep;") +
		"\r\nSETACTIVE \"p\"\r\nLISTSCRIPTS\r\nGETSCRIPT \"p\"\r\nLOGOUT\r\n")
	var got []string
	for range 6 {
		data, status := c.response()
		got = append(got, append(data, status)...)
	}
	want := []string{`OK "logged in"`, `OK`, `OK`, `"p" ACTIVE`, `OK`, `"keep;"`, `OK`, `OK "logout completed"`}
	if !slices.Equal(got, want) {
		t.Fatalf("pipelined answers %q, want %q", got, want)
	}
}

func TestSessionLimits(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{MaxCommandsBeforeAuth: 3, MaxBadCommands: 3})
	t.Run("commands before login", func(t *testing.T) {
		c, _ := dial(t, srv.addr)
		c.ok("NOOP")
		c.ok("CAPABILITY")
		c.ok("NOOP")
		if s := c.cmd("NOOP"); !strings.HasPrefix(s, "BYE") {
			t.Fatalf("fourth command without a login: %s", s)
		}
	})
	t.Run("bad commands", func(t *testing.T) {
		c, _ := dial(t, srv.addr)
		c.login()
		c.cmd("FOO")
		c.cmd("BAR")
		if s := c.cmd("BAZ"); !strings.HasPrefix(s, "BYE") {
			t.Fatalf("third bad command: %s", s)
		}
	})
	t.Run("idle", func(t *testing.T) {
		srv := startServer(t, newFakeStore(), Options{IdleTimeout: 300 * time.Millisecond})
		c, _ := dial(t, srv.addr)
		c.send("NOOP") // never finished
		if _, s := c.response(); !strings.HasPrefix(s, "BYE") {
			t.Fatalf("idle: %s", s)
		}
		if !c.closed() {
			t.Fatal("idle session open")
		}
	})
}

func TestConnectionLimit(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{MaxConnectionsPerIP: 1})
	dial(t, srv.addr)
	conn, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	l, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "BYE (TRYLATER)") {
		t.Fatalf("second connection: %q %v", l, err)
	}
}

func TestCloseEndsSessions(t *testing.T) {
	srv := startServer(t, newFakeStore(), Options{})
	c, _ := dial(t, srv.addr)
	waitFor(t, "the session", func() bool { return srv.sessionsOpen() == 1 })
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	if !c.closed() {
		t.Fatal("session open after Close")
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

// A checker that panics on a script refuses that script; the session and
// the node go on.
func TestCheckerPanic(t *testing.T) {
	st := newFakeStore()
	srv := startServer(t, st, Options{}, func(c *Config) {
		c.Check = func(b []byte) error {
			if strings.Contains(string(b), "boom") {
				panic("boom")
			}
			return nil
		}
	})
	c, _ := dial(t, srv.addr)
	c.login()
	if s := c.cmd(`PUTSCRIPT "a" "boom"`); s != `NO "the script could not be checked"` {
		t.Fatalf("panicking checker: %s", s)
	}
	if _, ok := st.get("a"); ok {
		t.Fatal("an unchecked script was stored")
	}
	c.ok(`PUTSCRIPT "a" "keep;"`)
}
