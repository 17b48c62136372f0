package simnet_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/localcert"
	"github.com/mailcluster/mailcluster/simnet"
)

func newSink(t *testing.T, opts simnet.SinkOptions) *simnet.Sink {
	t.Helper()
	s, err := simnet.NewSink(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const body = "From: a@here.test\r\nTo: b@there.test\r\nSubject: hi\r\n\r\nHello.\r\n"

// send runs one transaction over an open client and returns the first error.
func send(c *smtp.Client, from string, to []string, mail *smtp.MailOptions, rcpt *smtp.RcptOptions) error {
	if err := c.Mail(from, mail); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, rcpt); err != nil {
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

func dial(t *testing.T, s *simnet.Sink) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestSinkStoresAndWritesEML(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outside")
	var seen []simnet.Message
	s := newSink(t, simnet.SinkOptions{Dir: dir, OnMessage: func(m simnet.Message) { seen = append(seen, m) }})
	c := dial(t, s)
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered without a certificate")
	}
	for _, ext := range []string{"DSN", "SMTPUTF8", "8BITMIME", "SIZE"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Fatalf("%s not offered", ext)
		}
	}
	err := send(c, "a@here.test", []string{"B@there.test", "c@there.test"},
		&smtp.MailOptions{Size: int64(len(body)), Body: smtp.Body8BitMIME, UTF8: true, Return: smtp.DSNReturnHeaders, EnvelopeID: "env1"},
		&smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed}, OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: "orig@here.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 || len(seen) != 1 {
		t.Fatalf("%d messages, %d callbacks", len(msgs), len(seen))
	}
	m := msgs[0]
	if m.N != 1 || m.From != "a@here.test" || !slices.Equal(m.To, []string{"B@there.test", "c@there.test"}) || string(m.Data) != body || m.TLS || m.Helo != "client.test" {
		t.Fatalf("message %+v", m)
	}
	if m.Size != int64(len(body)) || m.Body != "8BITMIME" || !m.UTF8 || m.Ret != "HDRS" || m.EnvID != "env1" {
		t.Fatalf("MAIL parameters %+v", m)
	}
	if r := m.Rcpts[0]; !slices.Equal(r.Notify, []string{"FAILURE", "DELAY"}) || r.ORCPT != "RFC822;orig@here.test" {
		t.Fatalf("RCPT parameters %+v", r)
	}
	if len(s.MessagesTo("b@THERE.test")) != 1 || len(s.MessagesTo("d@there.test")) != 0 {
		t.Fatal("MessagesTo")
	}
	if !regexp.MustCompile(`^\d{8}T\d{6}Z-1\.eml$`).MatchString(filepath.Base(m.File)) || filepath.Dir(m.File) != dir {
		t.Fatalf("file %q", m.File)
	}
	b, err := os.ReadFile(m.File)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "Return-Path: <a@here.test>\r\nDelivered-To: B@there.test\r\n") || !strings.HasSuffix(string(b), body) || !strings.Contains(string(b), " with ESMTP;") {
		t.Fatalf("file content:\n%s", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("%d files in %s (a temporary left behind?)", len(entries), dir)
	}
}

func TestSinkSTARTTLS(t *testing.T) {
	cert, err := localcert.New(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(t, simnet.SinkOptions{TLS: cert.ServerConfig()})
	c, err := smtp.DialStartTLS(s.Addr(), cert.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := send(c, "a@here.test", []string{"b@there.test"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// A plain-text client still gets through (opportunistic TLS is the
	// client's choice), and the sink says which was which.
	if err := send(dial(t, s), "a@here.test", []string{"c@there.test"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 2 || !msgs[0].TLS || msgs[0].TLSVersion == 0 || msgs[1].TLS {
		t.Fatalf("TLS flags: %+v", msgs)
	}
}

func TestSinkProgrammedReplies(t *testing.T) {
	s := newSink(t, simnet.SinkOptions{})
	s.SetReply("perm@there.test", simnet.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	s.SetReply("Temp@there.test", simnet.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later", Times: 1})
	s.SetReply("data@there.test", simnet.Reply{Code: 554, Enhanced: "5.6.0", Text: "content refused", AtData: true})
	c := dial(t, s)
	err := send(c, "a@here.test", []string{"perm@there.test"}, nil, nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) || se.Message != "no such user" {
		t.Fatalf("550: %v", err)
	}
	_ = c.Reset()
	if err := send(c, "a@here.test", []string{"temp@there.test"}, nil, nil); smtpCode(err) != 451 {
		t.Fatalf("first try: %v, want 451", err)
	}
	_ = c.Reset()
	if err := send(c, "a@here.test", []string{"temp@there.test"}, nil, nil); err != nil {
		t.Fatalf("second try after Times: 1: %v", err)
	}
	if err := send(c, "a@here.test", []string{"data@there.test"}, nil, nil); smtpCode(err) != 554 {
		t.Fatalf("DATA reply: %v, want 554", err)
	}
	if got := s.Messages(); len(got) != 1 || got[0].To[0] != "temp@there.test" {
		t.Fatalf("stored %+v", got)
	}
	s.ClearReply("perm@there.test")
	if err := send(c, "a@here.test", []string{"perm@there.test"}, nil, nil); err != nil {
		t.Fatalf("after ClearReply: %v", err)
	}
	if s.InProgress("perm@there.test") != 0 || s.InProgress("data@there.test") != 0 {
		t.Fatal("a finished transaction still counts as in progress")
	}
}

// The hold keeps the DATA reply back; the in-progress record shows two
// transactions for one recipient at once; Release answers both.
func TestSinkHoldAndOverlap(t *testing.T) {
	s := newSink(t, simnet.SinkOptions{})
	s.Hold()
	errs := make(chan error, 2)
	for range 2 {
		c := dial(t, s)
		go func() { errs <- send(c, "a@here.test", []string{"x@there.test"}, nil, nil) }()
	}
	waitFor(t, "two held transactions", func() bool { return s.Held() == 2 })
	if n := s.InProgress("x@there.test"); n != 2 {
		t.Fatalf("in progress %d, want 2", n)
	}
	if len(s.Messages()) != 0 {
		t.Fatal("a held message was stored before its reply")
	}
	s.Release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if len(s.Messages()) != 2 || s.MaxInProgress("x@there.test") != 2 || !slices.Equal(s.Overlapped(), []string{"x@there.test"}) {
		t.Fatalf("after release: %d messages, max %d, overlapped %v", len(s.Messages()), s.MaxInProgress("x@there.test"), s.Overlapped())
	}
	if s.InProgress("x@there.test") != 0 {
		t.Fatal("still in progress after the replies")
	}
}

// A client that dies while its DATA reply is held ends its transaction:
// nothing is stored, and a later delivery of the same recipient does not
// overlap it (the fencing test relies on this).
func TestSinkHeldClientVanishes(t *testing.T) {
	s := newSink(t, simnet.SinkOptions{})
	s.Hold()
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	if err := c.Hello("dying.test"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- send(c, "a@here.test", []string{"y@there.test"}, nil, nil) }()
	waitFor(t, "the held transaction", func() bool { return s.Held() == 1 })
	_ = conn.Close() // as a kill -9 of the sending process would
	<-done
	waitFor(t, "the transaction to be abandoned", func() bool { return s.Held() == 0 && s.InProgress("y@there.test") == 0 })
	if len(s.Abandoned()) != 1 || len(s.Messages()) != 0 {
		t.Fatalf("abandoned %d, stored %d", len(s.Abandoned()), len(s.Messages()))
	}
	s.Release()
	if err := send(dial(t, s), "a@here.test", []string{"y@there.test"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if s.MaxInProgress("y@there.test") != 1 || len(s.Overlapped()) != 0 {
		t.Fatalf("max in progress %d, overlapped %v", s.MaxInProgress("y@there.test"), s.Overlapped())
	}
}

func TestSinkRelayAuth(t *testing.T) {
	s := newSink(t, simnet.SinkOptions{Users: map[string]string{"relay": "relay password"}})
	c := dial(t, s)
	if err := send(c, "a@here.test", []string{"b@there.test"}, nil, nil); smtpCode(err) != 530 {
		t.Fatalf("without AUTH: %v, want 530", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "wrong")); smtpCode(err) != 535 {
		t.Fatalf("bad password: %v", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "relay password")); err != nil {
		t.Fatal(err)
	}
	if err := send(c, "a@here.test", []string{"b@there.test"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if m := s.Messages(); len(m) != 1 || m[0].User != "relay" {
		t.Fatalf("%+v", m)
	}
}

func TestSinkExtensionsOff(t *testing.T) {
	s := newSink(t, simnet.SinkOptions{NoDSN: true, NoSMTPUTF8: true, MaxMessageBytes: 10})
	c := dial(t, s)
	for _, ext := range []string{"DSN", "SMTPUTF8"} {
		if ok, _ := c.Extension(ext); ok {
			t.Fatalf("%s offered", ext)
		}
	}
	if size, ok := c.MaxMessageSize(); !ok || size != 10 {
		t.Fatalf("SIZE %d %v", size, ok)
	}
	if err := send(c, "a@here.test", []string{"b@there.test"}, nil, nil); smtpCode(err) != 552 {
		t.Fatalf("over SIZE: %v", err)
	}
}

func TestOnlyLoopback(t *testing.T) {
	if _, err := simnet.NewSink(simnet.SinkOptions{Addr: "0.0.0.0:0"}); err == nil {
		t.Fatal("sink listened on every interface")
	}
	if _, err := simnet.NewDNS(":0"); err == nil {
		t.Fatal("DNS listened on every interface")
	}
}
