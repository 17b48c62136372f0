package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/delivery"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
)

const msg = "From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHello Alice.\r\n"

// code returns the SMTP reply code and enhanced code of a client error,
// like "550 5.1.1".
func code(err error) string {
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		if err == nil {
			return "ok"
		}
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

func dialMX(t *testing.T, ts *testServer) *gosmtp.Client {
	t.Helper()
	c, err := gosmtp.Dial(ts.addr[modeMX])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialSubmission(t *testing.T, ts *testServer) *gosmtp.Client {
	t.Helper()
	c, err := gosmtp.DialStartTLS(ts.addr[modeSubmission], ts.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send runs MAIL, RCPT… and DATA and returns the first error.
func send(c *gosmtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	return w.Close()
}

func TestMXDeliversWithTraceHeaders(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	c := dialMX(t, ts)
	if err := send(c, "sender@remote.test", []string{"Alice@Example.TEST"}, msg); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := ts.store.stored()
	if len(got) != 1 || len(got[0].Accounts) != 1 || got[0].Accounts[0] != "alice@example.test" {
		t.Fatalf("stored %+v", got)
	}
	body := string(got[0].Body)
	if !strings.HasPrefix(body, "Return-Path: <sender@remote.test>\r\nReceived: from localhost ([127.0.0.1])\r\n\tby mx.test (mailcluster) with ESMTP id ") {
		t.Fatalf("trace headers missing or wrong:\n%s", body)
	}
	if !strings.Contains(body, "\tfor <alice@example.test>;") || !strings.HasSuffix(body, msg) {
		t.Fatalf("body not intact after the trace headers:\n%s", body)
	}
}

func TestEHLOAdvertisesExtensions(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxMessageSize: 1 << 20}})
	c := dialMX(t, ts)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "CHUNKING", "ENHANCEDSTATUSCODES", "STARTTLS", "DSN"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("MX does not advertise %s", ext)
		}
	}
	if _, size := c.Extension("SIZE"); size != "1048576" {
		t.Errorf("SIZE %q, want 1048576", size)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("MX advertises AUTH")
	}
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00a@example.test\x00pw")), "502 5.5.1")
	// On the submission port after STARTTLS: AUTH PLAIN LOGIN.
	s := dialSubmission(t, ts)
	if ok, mechs := s.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
		t.Errorf("submission AUTH %v %q", ok, mechs)
	}
}

func TestMXRefusals(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxMessageSize: 4096}})
	ts.store.addUser("full@example.test", "pw", func(a *state.Account) { a.QuotaBytes, a.UsedBytes = 1000, 1000 })
	ts.store.addUser("off@example.test", "pw", func(a *state.Account) { a.Disabled = true })
	ts.store.addUser("alice@example.test", "pw")
	ts.store.setAlias("fwd@example.test", "someone@elsewhere.test")
	cases := []struct {
		rcpt string
		want string
	}{
		{"bob@example.test", "550 5.1.1"},
		{"someone@elsewhere.test", "554 5.7.1"},
		{"full@example.test", "452 4.2.2"},
		{"off@example.test", "550 5.2.1"},
		{"fwd@example.test", "451 4.3.5"},
		{"not an address", "501 5.5.2"}, // go-smtp's own syntax check
	}
	c := dialMX(t, ts)
	for _, tc := range cases {
		if err := c.Mail("sender@remote.test", nil); err != nil {
			t.Fatal(err)
		}
		if got := code(c.Rcpt(tc.rcpt, nil)); got != tc.want {
			t.Errorf("RCPT %s: %s, want %s", tc.rcpt, got, tc.want)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	// SIZE over the limit is refused at MAIL.
	if got := code(c.Mail("sender@remote.test", &gosmtp.MailOptions{Size: 5000})); got != "552 5.3.4" {
		t.Errorf("MAIL SIZE=5000: %s, want 552 5.3.4", got)
	}
	// Without SIZE, at the end of DATA.
	big := msg + strings.Repeat("0123456789\r\n", 400)
	if got := code(send(c, "sender@remote.test", []string{"alice@example.test"}, big)); got != "552 5.3.4" {
		t.Errorf("DATA over the limit: %s, want 552 5.3.4", got)
	}
	if n := len(ts.store.stored()); n != 0 {
		t.Fatalf("%d messages stored, want none", n)
	}
	// The connection still works.
	if err := send(c, "sender@remote.test", []string{"alice@example.test"}, msg); err != nil {
		t.Fatalf("send after refusals: %v", err)
	}
}

func TestQuotaPermanentOption(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{QuotaPermanent: true}})
	ts.store.addUser("full@example.test", "pw", func(a *state.Account) { a.QuotaMessages, a.UsedMessages = 5, 5 })
	c := dialMX(t, ts)
	_ = c.Mail("", nil)
	if got := code(c.Rcpt("full@example.test", nil)); got != "552 5.2.2" {
		t.Fatalf("RCPT to a full mailbox: %s, want 552 5.2.2", got)
	}
}

func TestQuotaCheckedWithDeclaredAndActualSize(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw", func(a *state.Account) { a.QuotaBytes = 2000 })
	ts.store.addUser("bob@example.test", "pw")
	c := dialMX(t, ts)
	// Declared size that does not fit: refused for alice only, at RCPT.
	if err := c.Mail("s@remote.test", &gosmtp.MailOptions{Size: 5000}); err != nil {
		t.Fatal(err)
	}
	if got := code(c.Rcpt("alice@example.test", nil)); got != "452 4.2.2" {
		t.Fatalf("RCPT with SIZE over quota: %s", got)
	}
	if err := c.Rcpt("bob@example.test", nil); err != nil {
		t.Fatalf("RCPT bob: %v", err)
	}
	_ = c.Reset()
	// Undeclared size that does not fit: refused at the end of DATA, for
	// the whole message, and nothing is stored for anyone.
	big := msg + strings.Repeat("x", 3000) + "\r\n"
	if got := code(send(c, "s@remote.test", []string{"alice@example.test", "bob@example.test"}, big)); got != "452 4.2.2" {
		t.Fatalf("DATA over quota: %s", got)
	}
	if n := len(ts.store.stored()); n != 0 {
		t.Fatalf("%d messages stored, want none", n)
	}
}

func TestDeliveryErrorsAreTemporary(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	ts.store.addUser("bob@example.test", "pw")
	c := dialMX(t, ts)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: 1 of 2 copies", replication.ErrNoQuorum), "451 4.3.0"},
		{errors.New("disk on fire"), "451 4.3.0"},
	} {
		ts.store.mu.Lock()
		ts.store.deliverErr = tc.err
		ts.store.mu.Unlock()
		if got := code(send(c, "s@remote.test", []string{"alice@example.test"}, msg)); got != tc.want {
			t.Errorf("store error %v: reply %s, want %s", tc.err, got, tc.want)
		}
	}
	ts.store.mu.Lock()
	ts.store.deliverErr = nil
	ts.store.mu.Unlock()
	// One recipient's mailbox fills up between RCPT and the commit: the
	// other got it, so the sender must retry rather than see a 250.
	ts.store.mu.Lock()
	ts.store.afterRead = func() {
		ts.store.mu.Lock()
		ts.store.accounts["bob@example.test"].QuotaBytes = 1
		ts.store.mu.Unlock()
	}
	ts.store.mu.Unlock()
	if got := code(send(c, "s@remote.test", []string{"alice@example.test", "bob@example.test"}, msg)); got != "451 4.2.0" {
		t.Errorf("partial delivery: %s, want 451 4.2.0", got)
	}
}

func TestDeliveryTimeoutIsTemporary(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{DeliveryTimeout: 200 * time.Millisecond}})
	ts.store.addUser("alice@example.test", "pw")
	ts.store.mu.Lock()
	ts.store.hang = true
	ts.store.mu.Unlock()
	c := dialMX(t, ts)
	if got := code(send(c, "s@remote.test", []string{"alice@example.test"}, msg)); got != "451 4.3.0" {
		t.Fatalf("store too slow: %s, want 451 4.3.0", got)
	}
}

func TestSubmission(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "secret")
	ts.store.addUser("bob@example.test", "pw")
	ts.store.setAlias("sales@example.test", "alice@example.test", "bob@example.test")

	c := dialSubmission(t, ts)
	if got := code(c.Mail("alice@example.test", nil)); got != "530 5.7.0" {
		t.Fatalf("MAIL before AUTH: %s, want 530 5.7.0", got)
	}
	if got := code(c.Auth(sasl.NewPlainClient("", "alice@example.test", "wrong"))); got != "535 5.7.8" {
		t.Fatalf("bad password: %s, want 535 5.7.8", got)
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "secret")); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	for _, tc := range []struct{ from, want string }{
		{"bob@example.test", "553 5.7.1"},
		{"someone@remote.test", "553 5.7.1"},
		{"alice+lists@example.test", "ok"},
		{"sales@example.test", "ok"},
		{"", "ok"},
		{"ALICE@example.test", "ok"},
	} {
		if got := code(c.Mail(tc.from, nil)); got != tc.want {
			t.Errorf("MAIL FROM:<%s>: %s, want %s", tc.from, got, tc.want)
		}
		_ = c.Reset()
	}
	if err := c.Mail("alice@example.test", nil); err != nil {
		t.Fatal(err)
	}
	if got := code(c.Rcpt("friend@remote.test", nil)); got != "451 4.3.5" {
		t.Fatalf("remote recipient: %s, want 451 4.3.5", got)
	}
	if err := c.Rcpt("bob@example.test", nil); err != nil {
		t.Fatalf("local recipient: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(w, msg)
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	got := ts.store.stored()
	if len(got) != 1 || got[0].Accounts[0] != "bob@example.test" {
		t.Fatalf("stored %+v", got)
	}
	if !strings.Contains(string(got[0].Body), "with ESMTPSA id") || !strings.Contains(string(got[0].Body), "(using TLS") {
		t.Fatalf("Received header lacks TLS/auth details:\n%s", got[0].Body)
	}
}

func TestSubmissionsImplicitTLSAndLOGIN(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "secret")
	c, err := gosmtp.DialTLS(ts.addr[modeSubmissions], ts.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewLoginClient("alice@example.test", "secret")); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	if err := send(c, "alice@example.test", []string{"alice@example.test"}, msg); err != nil {
		t.Fatal(err)
	}
	// LOGIN without an initial response, by hand.
	r := dialRaw(t, ts.addr[modeSubmission])
	r.cmd("EHLO client", "250")
	r.startTLS(ts.clientTLS)
	r.cmd("EHLO client", "250")
	r.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6") // "Username:"
	r.cmd(base64.StdEncoding.EncodeToString([]byte("alice@example.test")), "334 UGFzc3dvcmQ6")
	r.cmd(base64.StdEncoding.EncodeToString([]byte("secret")), "235")
}

func TestAuthOnlyOverTLSForRemoteClients(t *testing.T) {
	ts := startServer(t, serverOpts{remote: "192.0.2.7:40000"})
	ts.store.addUser("alice@example.test", "secret")
	r := dialRaw(t, ts.addr[modeSubmission])
	ehlo := r.cmd("EHLO client", "250")
	if strings.Contains(ehlo, "AUTH") {
		t.Fatalf("AUTH advertised before TLS to a remote client:\n%s", ehlo)
	}
	plain := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00secret"))
	r.cmd("AUTH PLAIN "+plain, "538 5.7.11")
	r.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0")
	r.startTLS(ts.clientTLS)
	if ehlo := r.cmd("EHLO client", "250"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("AUTH not advertised after STARTTLS:\n%s", ehlo)
	}
	r.cmd("AUTH PLAIN "+plain, "235")
	r.cmd("MAIL FROM:<alice@example.test>", "250")
}

func TestFailedLoginsAreThrottled(t *testing.T) {
	ts := startServer(t, serverOpts{}) // the limiter blocks after 3 failures
	ts.store.addUser("alice@example.test", "secret")
	c := dialSubmission(t, ts)
	for i := range 3 {
		if got := code(c.Auth(sasl.NewPlainClient("", "alice@example.test", "guess"))); got != "535 5.7.8" {
			t.Fatalf("attempt %d: %s", i, got)
		}
	}
	if got := code(c.Auth(sasl.NewPlainClient("", "alice@example.test", "secret"))); got != "454 4.7.0" {
		t.Fatalf("right password while blocked: %s, want 454 4.7.0", got)
	}
}

func TestBDATAndPipelining(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	ts.store.addUser("bob@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	part1, part2 := "Subject: chunked\r\n\r\nfirst half, ", "second half\r\n"
	// Everything pipelined in one write: MAIL, two RCPTs, two BDAT chunks.
	r.send("MAIL FROM:<s@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n" +
		fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1) + fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	for _, want := range []string{"250", "250", "250", "250", "250 2.0.0 OK: stored"} {
		r.expect(want)
	}
	got := ts.store.stored()
	if len(got) != 1 || len(got[0].Accounts) != 2 || !strings.HasSuffix(string(got[0].Body), part1+part2) {
		t.Fatalf("stored %+v", got)
	}
	// Received names no recipient when there are several.
	if strings.Contains(string(got[0].Body), "for <") {
		t.Fatalf("Received header lists recipients of a multi-recipient message:\n%s", got[0].Body)
	}
	// Pipelined DATA transaction.
	r.send("MAIL FROM:<s@remote.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
	r.expect("250")
	r.expect("550 5.1.1")
	r.expect("250")
	r.expect("354")
	r.send(msg + ".\r\n")
	r.expect("250")
	if n := len(ts.store.stored()); n != 2 {
		t.Fatalf("%d messages stored, want 2", n)
	}
}

func TestMalformedMessagesLeaveNoTrace(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxLineLength: 1000}})
	ts.store.addUser("alice@example.test", "pw")
	cases := []struct {
		name string
		data string // sent after 354, up to and including the final dot
		want string
	}{
		{"bare LF", "Subject: x\r\n\r\nline\nmore\r\n.\r\n", "554 5.6.0"},
		{"bare LF dot smuggling", "Subject: x\r\n\r\nline\n.\nMAIL FROM:<x@evil.test>\r\n.\r\n", "554 5.6.0"},
		{"NUL", "Subject: x\r\n\r\nli\x00ne\r\n.\r\n", "554 5.6.0"},
		{"header without colon", "Subject x\r\n\r\nline\r\n.\r\n", "554 5.6.0"},
		{"8-bit header", "Subject: caf\xc3\xa9\r\n\r\nline\r\n.\r\n", "554 5.6.7"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, ts.addr[modeMX])
			r.cmd("EHLO client", "250")
			r.cmd("MAIL FROM:<s@remote.test>", "250")
			r.cmd("RCPT TO:<alice@example.test>", "250")
			r.cmd("DATA", "354")
			r.send(tc.data)
			r.expect(tc.want)
			// The session goes on: a good message after a bad one.
			r.cmd("MAIL FROM:<s@remote.test>", "250")
			r.cmd("RCPT TO:<alice@example.test>", "250")
			r.cmd("DATA", "354")
			r.send(msg + ".\r\n")
			r.expect("250")
		})
	}
	if n := len(ts.store.stored()); n != len(cases) {
		t.Fatalf("%d messages stored, want only the %d good ones", n, len(cases))
	}
	for _, m := range ts.store.stored() {
		if !strings.HasSuffix(string(m.Body), msg) {
			t.Fatalf("a malformed message was stored:\n%q", m.Body)
		}
	}
}

func TestUTF8(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("jöran@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("MAIL FROM:<séndér@remote.test>", "553 5.6.7")
	r.cmd("MAIL FROM:<s@remote.test>", "250")
	r.cmd("RCPT TO:<jöran@example.test>", "553 5.6.7")
	r.cmd("RSET", "250")
	r.cmd("MAIL FROM:<séndér@remote.test> SMTPUTF8", "250")
	r.cmd("RCPT TO:<jöran@example.test>", "250")
	r.cmd("DATA", "354")
	r.send("Subject: café\r\n\r\nhi\r\n.\r\n")
	r.expect("250")
	if body := string(ts.store.stored()[0].Body); !strings.Contains(body, "with UTF8SMTP id") {
		t.Fatalf("Received does not say UTF8SMTP:\n%s", body)
	}
}

func TestLongLineInData(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxLineLength: 1000}})
	ts.store.addUser("alice@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("MAIL FROM:<s@remote.test>", "250")
	r.cmd("RCPT TO:<alice@example.test>", "250")
	r.cmd("DATA", "354")
	go func() { // the server may stop reading before the end
		_ = r.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, _ = io.WriteString(r.conn, "Subject: x\r\n\r\n"+strings.Repeat("y", 10<<20)+"\r\n.\r\n")
	}()
	r.expect("554 5.6.0")
	if !r.closed() {
		t.Fatal("connection still open after an over-long line")
	}
	if n := len(ts.store.stored()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestClientVanishingMidDataLeavesNoTrace(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	for _, bdat := range []bool{false, true} {
		r := dialRaw(t, ts.addr[modeMX])
		r.cmd("EHLO client", "250")
		r.cmd("MAIL FROM:<s@remote.test>", "250")
		r.cmd("RCPT TO:<alice@example.test>", "250")
		if bdat {
			r.send("BDAT 1000 LAST\r\nSubject: x\r\n\r\nonly part of it")
		} else {
			r.cmd("DATA", "354")
			r.send("Subject: x\r\n\r\nno final dot\r\n")
		}
		r.conn.Close()
	}
	// Over TLS, a Go client's Close sends close_notify first, which TLS
	// reports as a clean end of input.
	ts.store.addUser("bob@example.test", "secret")
	for _, last := range []bool{false, true} {
		tc, err := tlsDialRaw(ts.addr[modeSubmissions], ts.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		r := &rawClient{t: t, conn: tc, r: bufio.NewReader(tc)}
		r.expect("220")
		r.cmd("EHLO client", "250")
		r.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00bob@example.test\x00secret")), "235")
		r.cmd("MAIL FROM:<bob@example.test>", "250")
		r.cmd("RCPT TO:<alice@example.test>", "250")
		if last {
			r.send("BDAT 1000 LAST\r\nSubject: x\r\n\r\nonly part of it")
		} else {
			r.send("BDAT 20\r\nSubject: x\r\n\r\nfirst\r\n")
			r.expect("250")
			r.send("BDAT 1000 LAST\r\nonly part of it")
		}
		if err := tc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "connections to close", func() bool {
		return ts.srv.conns.Open() == 0
	})
	if n := len(ts.store.stored()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestSlowUploadIsNotCutButStallIs(t *testing.T) {
	// Timeouts long enough that a loaded machine's scheduling hiccup does not
	// look like a stall of the test's own client.
	ts := startServer(t, serverOpts{options: Options{DataTimeout: 2 * time.Second, CommandTimeout: 2 * time.Second}})
	ts.store.addUser("alice@example.test", "pw")

	// A slow upload: a line every 50 ms for 5 s, 2.5 times DataTimeout.
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("MAIL FROM:<s@remote.test>", "250")
	r.cmd("RCPT TO:<alice@example.test>", "250")
	r.cmd("DATA", "354")
	r.send("Subject: slow\r\n\r\n")
	for start := time.Now(); time.Since(start) < 5*time.Second; {
		r.send("still here\r\n")
		time.Sleep(50 * time.Millisecond)
	}
	r.send(".\r\n")
	r.expect("250")

	// A stalled upload gets a 4xx, then the connection closes.
	r = dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("MAIL FROM:<s@remote.test>", "250")
	r.cmd("RCPT TO:<alice@example.test>", "250")
	r.cmd("DATA", "354")
	r.send("Subject: stalled\r\n\r\nand then nothing")
	r.expect("451 4.4.2")
	r.expect("421 4.4.2")
	if !r.closed() {
		t.Fatal("connection open after a data timeout")
	}
	// An idle client at the command stage.
	r = dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.expect("421 4.4.2")
	if n := len(ts.store.stored()); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

func TestConnectionLimits(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxConnectionsPerIP: 2}})
	dialRaw(t, ts.addr[modeMX])
	dialRaw(t, ts.addr[modeSubmission])
	conn, err := tlsDialRaw(ts.addr[modeSubmissions], ts.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 200)
	n, _ := io.ReadAtLeast(conn, buf, 3)
	if !strings.HasPrefix(string(buf[:n]), "421 4.7.0") {
		t.Fatalf("third connection from one address got %q, want 421 4.7.0", buf[:n])
	}
}

func tlsDialRaw(addr string, cfg *tls.Config) (*tls.Conn, error) {
	return tls.Dial("tcp", addr, cfg)
}

func TestTooManyCommandsAndErrors(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxCommandsBeforeMail: 5, MaxErrors: 3}})
	ts.store.addUser("alice@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	for range 4 {
		r.cmd("NOOP", "250")
	}
	r.send("NOOP\r\n")
	r.expect("421 4.7.0")
	if !r.closed() {
		t.Fatal("open after too many commands")
	}

	r = dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("MAIL FROM:<s@remote.test>", "250")
	r.cmd("RCPT TO:<a@example.test>", "550")
	r.cmd("RCPT TO:<b@example.test>", "550")
	r.cmd("RCPT TO:<c@example.test>", "421 4.7.0")
	if !r.closed() {
		t.Fatal("open after too many errors")
	}

	// A transaction's own commands do not count against the limit.
	r = dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	for range 3 {
		r.cmd("MAIL FROM:<s@remote.test>", "250")
		for range 10 {
			r.cmd("RCPT TO:<alice@example.test>", "250")
		}
		r.cmd("DATA", "354")
		r.send(msg + ".\r\n")
		r.expect("250")
	}
}

func TestNoQuorumAtRCPTIsTemporary(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.mu.Lock()
	ts.store.barrierErr = replication.ErrNoQuorum
	ts.store.mu.Unlock()
	c := dialMX(t, ts)
	_ = c.Mail("s@remote.test", nil)
	// Unknown here, and the cluster cannot confirm: temporary, not 550.
	if got := code(c.Rcpt("new@example.test", nil)); got != "451 4.3.0" {
		t.Fatalf("RCPT without quorum: %s, want 451 4.3.0", got)
	}
}

func TestMetricsCount(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	c := dialMX(t, ts)
	if err := send(c, "s@remote.test", []string{"alice@example.test"}, msg); err != nil {
		t.Fatal(err)
	}
	_ = c.Mail("s@remote.test", nil)
	_ = c.Rcpt("nobody@example.test", nil)
	if v := counterValue(t, ts.srv.metrics.accepted.WithLabelValues("mx")); v != 1 {
		t.Errorf("accepted %v, want 1", v)
	}
	if v := counterValue(t, ts.srv.metrics.rejected.WithLabelValues("mx", "rcpt", "no_such_user")); v != 1 {
		t.Errorf("rejected no_such_user %v, want 1", v)
	}
}

func TestDSNParametersAccepted(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("MAIL FROM:<s@remote.test> RET=HDRS ENVID=abc123 BODY=8BITMIME SIZE=100", "250")
	r.cmd("RCPT TO:<alice@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice@example.test", "250")
	r.cmd("DATA", "354")
	r.send(msg + ".\r\n")
	r.expect("250 2.0.0 OK: stored")
}

// A delivery whose commit may still happen (the leader lost its majority
// mid-commit) must not be answered "NOT stored" (DESIGN.md §1.2).
func TestUncertainDeliveryIsNotCalledUnstored(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	c := dialMX(t, ts)
	ts.store.mu.Lock()
	ts.store.deliverErr = fmt.Errorf("%w: %w", replication.ErrOutcomeUnknown, replication.ErrNoQuorum)
	ts.store.mu.Unlock()
	err := send(c, "s@remote.test", []string{"alice@example.test"}, msg)
	if got := code(err); got != "451 4.3.0" {
		t.Fatalf("uncertain delivery: %s, want 451 4.3.0", got)
	}
	if text := err.Error(); !strings.Contains(text, "may have been stored") || strings.Contains(text, "NOT stored") {
		t.Fatalf("uncertain delivery answered %q", text)
	}
}

// TestLimitsHoldForPipelinedCommands sends every command in one write: the
// limits count each command, not each read from the socket (go-smtp reads
// its buffered lines without reading the socket again).
func TestLimitsHoldForPipelinedCommands(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxCommandsBeforeMail: 5, MaxErrors: 3}})
	ts.store.addUser("alice@example.test", "pw")

	r := dialRaw(t, ts.addr[modeMX])
	r.send("EHLO client\r\n" + strings.Repeat("NOOP\r\n", 1000))
	r.expect("250")
	for range 4 {
		r.expect("250 2.0.0")
	}
	r.expect("421 4.7.0")
	if !r.closed() {
		t.Fatal("open after too many pipelined commands")
	}

	r = dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.send("MAIL FROM:<s@remote.test>\r\n" + strings.Repeat("RCPT TO:<nobody@example.test>\r\n", 100) + "RCPT TO:<alice@example.test>\r\nDATA\r\n")
	r.expect("250")
	r.expect("550")
	r.expect("550")
	r.expect("421 4.7.0")
	if !r.closed() {
		t.Fatal("open after too many pipelined errors")
	}
	if n := len(ts.store.stored()); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

// TestDataEndsAtFirstCRLFDotCRLF sends a bare CR next to a line end: the
// data ends at the first CRLF.CRLF (RFC 5321 §4.1.1.4), the bare CR is
// refused, and the commands after the data are read as commands, over
// STARTTLS too (where go-smtp's buffer sits above TLS).
func TestDataEndsAtFirstCRLFDotCRLF(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	cases := []struct{ name, data string }{
		{"dot CR CR LF", "Subject: x\r\n\r\nlast\r\n.\r\r\n.\r\n"},
		{"CR CR LF", "Subject: x\r\n\r\nlast\r\r\n.\r\n"},
		{"dot CR then data", "Subject: x\r\n\r\nlast\r\n.\rmore\r\n.\r\n"},
	}
	for _, tc := range cases {
		for _, tlsToo := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/starttls=%v", tc.name, tlsToo), func(t *testing.T) {
				r := dialRaw(t, ts.addr[modeMX])
				r.cmd("EHLO client", "250")
				if tlsToo {
					r.startTLS(ts.clientTLS)
					r.cmd("EHLO client", "250")
				}
				r.cmd("MAIL FROM:<s@remote.test>", "250")
				r.cmd("RCPT TO:<alice@example.test>", "250")
				r.cmd("DATA", "354")
				r.send(tc.data + "NOOP\r\nQUIT\r\n")
				r.expect("554 5.6.0 Message refused: bare CR")
				r.expect("250 2.0.0")
				r.expect("221")
			})
		}
	}
	if n := len(ts.store.stored()); n != 0 {
		t.Fatalf("%d messages stored:\n%q", n, ts.store.stored()[0].Body)
	}

	// Turned into line breaks instead: nothing but the dot is dropped.
	ts = startServer(t, serverOpts{options: Options{FixBareLineEndings: true}})
	ts.store.addUser("alice@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	r.cmd("MAIL FROM:<s@remote.test>", "250")
	r.cmd("RCPT TO:<alice@example.test>", "250")
	r.cmd("DATA", "354")
	r.send("Subject: x\r\n\r\nlast\r\n.\rmore\r\n.\r\r\n.\r\nQUIT\r\n")
	r.expect("250")
	r.expect("221")
	body := string(ts.store.stored()[0].Body)
	if !strings.HasSuffix(body, "\r\n\r\nlast\r\n\r\nmore\r\n\r\n\r\n") {
		t.Fatalf("stored %q", body)
	}
}

// TestMessageOfExactlyTheAdvertisedSize: RFC 1870 counts the message
// without the terminator and the transparency dots; a message of exactly
// the SIZE in EHLO is taken under DATA as under BDAT, one byte more is not.
func TestMessageOfExactlyTheAdvertisedSize(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{MaxMessageSize: 3000}})
	ts.store.addUser("alice@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	ehlo := r.cmd("EHLO client", "250")
	var size int
	for _, line := range strings.Split(ehlo, "\r\n") {
		if v, ok := strings.CutPrefix(line, "250-SIZE "); ok {
			size, _ = strconv.Atoi(v)
		}
	}
	if size != 3000 {
		t.Fatalf("EHLO advertises SIZE %d, want 3000:\n%s", size, ehlo)
	}
	message := func(n int) string {
		head := "Subject: x\r\n\r\n"
		// Lines that start with a dot, stuffed on the wire: they count once.
		var b strings.Builder
		b.WriteString(head)
		for b.Len() < n-100 {
			b.WriteString(".dotted line\r\n")
		}
		b.WriteString(strings.Repeat("y", n-b.Len()-2) + "\r\n")
		return b.String()
	}
	stuff := func(m string) string { return strings.ReplaceAll(m, "\r\n.", "\r\n..") }
	for _, n := range []int{size, size + 1} {
		m := message(n)
		if len(m) != n {
			t.Fatalf("built %d bytes, want %d", len(m), n)
		}
		want := "250"
		if n > size {
			want = "552 5.3.4"
		}
		r.cmd("MAIL FROM:<s@remote.test> SIZE="+strconv.Itoa(min(n, size)), "250")
		r.cmd("RCPT TO:<alice@example.test>", "250")
		r.cmd("DATA", "354")
		r.send(stuff(m) + ".\r\n")
		r.expect(want)
		r.cmd("NOOP", "250") // still in step

		r.cmd("MAIL FROM:<s@remote.test>", "250")
		r.cmd("RCPT TO:<alice@example.test>", "250")
		r.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(m), m))
		r.expect(want)
		r.cmd("NOOP", "250")
	}
	if n := len(ts.store.stored()); n != 2 {
		t.Fatalf("%d messages stored, want 2", n)
	}
}

// verdict is a delivery check that refuses messages whose text contains
// a word.
type verdict struct {
	word      string
	permanent bool
	store     *fakeStore
}

func (v verdict) Name() string { return "words" }

func (v verdict) Check(_ context.Context, m *delivery.Message) error {
	v.store.mu.Lock()
	data := string(v.store.bodies[m.Body.Blob])
	v.store.mu.Unlock()
	if strings.Contains(data, v.word) {
		return &delivery.RejectedError{Check: v.Name(), Permanent: v.permanent, Reason: "the message contains " + v.word}
	}
	return nil
}

// TestChecksDecideBeforeTheReply: a check in the delivery pipeline refuses
// a message after its data and before the commit, for every recipient.
func TestChecksDecideBeforeTheReply(t *testing.T) {
	ts := startServer(t, serverOpts{checks: func(f *fakeStore) []delivery.Check {
		return []delivery.Check{verdict{word: "viagra", permanent: true, store: f}, verdict{word: "later", store: f}}
	}})
	ts.store.addUser("alice@example.test", "pw")
	ts.store.addUser("bob@example.test", "pw")
	c := dialMX(t, ts)
	rcpts := []string{"alice@example.test", "bob@example.test"}
	if got := code(send(c, "s@remote.test", rcpts, msg+"cheap viagra\r\n")); got != "550 5.7.1" {
		t.Fatalf("permanent verdict: %s, want 550 5.7.1", got)
	}
	if got := code(send(c, "s@remote.test", rcpts, msg+"try later\r\n")); got != "451 4.7.1" {
		t.Fatalf("temporary verdict: %s, want 451 4.7.1", got)
	}
	if err := send(c, "s@remote.test", rcpts, msg); err != nil {
		t.Fatal(err)
	}
	if got := ts.store.stored(); len(got) != 1 || len(got[0].Accounts) != 2 {
		t.Fatalf("stored %d messages, want only the good one for both", len(got))
	}
}

func TestConnectionAndMessageRates(t *testing.T) {
	ts := startServer(t, serverOpts{options: Options{ConnectionRatePerIP: 2, MessageRatePerIP: 2}})
	ts.store.addUser("alice@example.test", "pw")
	r := dialRaw(t, ts.addr[modeMX])
	r.cmd("EHLO client", "250")
	for range 2 {
		r.cmd("MAIL FROM:<a@remote.test>", "250")
		r.cmd("RSET", "250")
	}
	r.cmd("MAIL FROM:<a@remote.test>", "451 4.7.1")
	// The session goes on: the client may still quit cleanly.
	r.cmd("QUIT", "221")

	dialRaw(t, ts.addr[modeMX]) // the second this minute: greeted
	conn, err := net.DialTimeout("tcp", ts.addr[modeMX], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0") {
		t.Fatalf("third connection within a minute got %q, want 421 4.7.0", line)
	}
}
