package smtp

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/replication/state"
)

// A submission for an outside recipient is queued with the DSN
// parameters of MAIL and RCPT (RFC 3461), in the commit of the message.
func TestSubmissionQueuesWithDSNParameters(t *testing.T) {
	ts := startServer(t, serverOpts{outbound: true})
	ts.store.addUser("alice@example.test", "secret")
	c := dialSubmission(t, ts)
	if err := c.Auth(sasl.NewPlainClient("", "alice@example.test", "secret")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@example.test", &gosmtp.MailOptions{Return: gosmtp.DSNReturnHeaders, EnvelopeID: "qwerty"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("friend@remote.test", &gosmtp.RcptOptions{
		Notify:                []gosmtp.DSNNotify{gosmtp.DSNNotifyFailure, gosmtp.DSNNotifyDelayed},
		OriginalRecipientType: gosmtp.DSNAddressTypeRFC822, OriginalRecipient: "friend@remote.test",
	}); err != nil {
		t.Fatalf("RCPT of an outside recipient: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte(msg))
	if err := w.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	ts.store.mu.Lock()
	defer ts.store.mu.Unlock()
	if len(ts.store.queued) != 1 {
		t.Fatalf("queued %+v, want one entry", ts.store.queued)
	}
	q := ts.store.queued[0]
	if q.To != "friend@remote.test" || q.From != "alice@example.test" || q.Ret != "HDRS" || q.EnvID != "qwerty" ||
		q.Notify != state.NotifyFailure|state.NotifyDelay || !strings.EqualFold(q.ORCPT, "rfc822;friend@remote.test") || q.Account != "alice@example.test" {
		t.Fatalf("queued %+v", q)
	}
}

// A message that has passed more servers than any real path has is a
// loop: 554 5.4.6, and the session goes on.
func TestMailLoopIsRefused(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.store.addUser("alice@example.test", "pw")
	var loop strings.Builder
	for i := range 60 {
		fmt.Fprintf(&loop, "Received: from a%d.test by b%d.test; Fri, 4 Dec 2026 12:00:00 +0000\r\n", i, i)
	}
	loop.WriteString(msg)
	c := dialMX(t, ts)
	if got := code(send(c, "s@remote.test", []string{"alice@example.test"}, loop.String())); got != "554 5.4.6" {
		t.Fatalf("a message with 60 Received fields: %s, want 554 5.4.6", got)
	}
	if err := send(c, "s@remote.test", []string{"alice@example.test"}, msg); err != nil {
		t.Fatalf("the next message on the session: %v", err)
	}
}
