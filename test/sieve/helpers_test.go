package sieve_test

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

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/simnet"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const (
	domain   = "example.test"
	password = "correct horse battery"
)

func addr(user string) string { return user + "@" + domain }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// newCluster starts three nodes that serve ManageSieve and creates
// example.test with the given users (local parts).
func newCluster(t *testing.T, users ...string) *cluster.Cluster {
	t.Helper()
	c := cluster.New(t, cluster.Options{Configure: func(i int, cfg *node.Config) {
		if cfg.ManageSieveAddr == "" {
			cfg.ManageSieveAddr = "127.0.0.1:0"
		}
	}})
	s := c.Node(c.Leader()).Store()
	cluster.RetryIdempotent(t, "add the domain", func() error {
		if err := s.AddDomain(ctxT(t), domain); !errors.Is(err, replication.ErrDomainExists) {
			return err
		}
		return nil
	})
	for _, u := range users {
		cluster.RetryIdempotent(t, "add "+u, func() error {
			_, err := s.AddUser(ctxT(t), replication.NewUser{Address: addr(u), Password: password})
			if errors.Is(err, replication.ErrAccountExists) {
				return nil
			}
			return err
		})
	}
	return c
}

// createMailbox creates a mailbox for user through node i.
func createMailbox(t *testing.T, c *cluster.Cluster, i int, user, name string) {
	t.Helper()
	s := c.Node(i).Store()
	cluster.RetryIdempotent(t, "create "+name, func() error {
		_, err := s.CreateMailbox(ctxT(t), addr(user), name, state.UseNone, true)
		if errors.Is(err, replication.ErrMailboxExists) {
			return nil
		}
		return err
	})
}

// ---- ManageSieve client -------------------------------------------------

// sieveClient speaks ManageSieve over a real TCP session; it shows the
// test the raw protocol.
type sieveClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// dialSieve connects to node i's ManageSieve port, upgrades with
// STARTTLS, checks that SASL PLAIN is offered only then, and logs in.
func dialSieve(t testing.TB, c *cluster.Cluster, i int, user string) *sieveClient {
	t.Helper()
	ep := c.Node(i).Endpoint(node.EndpointManageSieve)
	if ep == "" {
		t.Fatalf("node %d serves no managesieve endpoint", i)
	}
	conn, err := net.DialTimeout("tcp", ep, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	sc := &sieveClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	caps, status := sc.response()
	if !strings.HasPrefix(status, "OK") || !hasCap(caps, `"STARTTLS"`) {
		t.Fatalf("greeting: %q %q", caps, status)
	}
	if st := sc.cmd("STARTTLS"); !strings.HasPrefix(st, "OK") {
		t.Fatalf("STARTTLS: %s", st)
	}
	tc := tls.Client(conn, c.ClientTLS())
	_ = tc.SetDeadline(time.Now().Add(cluster.Timeout))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	_ = tc.SetDeadline(time.Time{})
	sc.conn, sc.r = tc, bufio.NewReader(tc)
	caps, status = sc.response() // RFC 5804 §2.2: capabilities again
	if !strings.HasPrefix(status, "OK") || !hasCap(caps, `"SASL" "PLAIN"`) {
		t.Fatalf("capabilities after STARTTLS: %q %q", caps, status)
	}
	creds := base64.StdEncoding.EncodeToString([]byte("\x00" + addr(user) + "\x00" + password))
	sc.retry(`AUTHENTICATE "PLAIN" "` + creds + `"`)
	return sc
}

func hasCap(caps []string, prefix string) bool {
	for _, c := range caps {
		if strings.HasPrefix(strings.ToUpper(c), strings.ToUpper(prefix)) {
			return true
		}
	}
	return false
}

func (sc *sieveClient) line() string {
	sc.t.Helper()
	_ = sc.conn.SetReadDeadline(time.Now().Add(cluster.Timeout))
	s, err := sc.r.ReadString('\n')
	if err != nil {
		sc.t.Fatalf("managesieve read: %v (after %q)", err, s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// item reads one response line; a literal {n} at its end is read and put
// in its place as a quoted string.
func (sc *sieveClient) item() string {
	sc.t.Helper()
	l := sc.line()
	open := strings.LastIndexByte(l, '{')
	if !strings.HasSuffix(l, "}") || open < 0 {
		return l
	}
	n, err := strconv.Atoi(l[open+1 : len(l)-1])
	if err != nil || n < 0 || n > 1<<20 {
		return l
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(sc.r, buf); err != nil {
		sc.t.Fatal(err)
	}
	return l[:open] + strconv.Quote(string(buf)) + sc.line()
}

// response reads data lines up to the OK, NO or BYE that ends it.
func (sc *sieveClient) response() (data []string, status string) {
	sc.t.Helper()
	for {
		l := sc.item()
		for _, s := range []string{"OK", "NO", "BYE"} {
			if l == s || strings.HasPrefix(l, s+" ") {
				return data, l
			}
		}
		data = append(data, l)
	}
}

// cmd sends one command and returns its status line.
func (sc *sieveClient) cmd(line string) string {
	sc.t.Helper()
	_, st := sc.do(line)
	return st
}

func (sc *sieveClient) do(line string) ([]string, string) {
	sc.t.Helper()
	_ = sc.conn.SetWriteDeadline(time.Now().Add(cluster.Timeout))
	if _, err := io.WriteString(sc.conn, line+"\r\n"); err != nil {
		sc.t.Fatal(err)
	}
	return sc.response()
}

// retry sends a command that must succeed, again while the server answers
// TRYLATER (an election on a loaded machine); only idempotent commands go
// through it. It returns the data lines.
func (sc *sieveClient) retry(line string) []string {
	sc.t.Helper()
	deadline := time.Now().Add(cluster.RetryWindow)
	for {
		data, st := sc.do(line)
		if strings.HasPrefix(st, "OK") {
			return data
		}
		if !strings.HasPrefix(st, "NO (TRYLATER)") || time.Now().After(deadline) {
			sc.t.Fatalf("%s: %s", short(line), st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// putScript uploads and activates a script.
func (sc *sieveClient) putScript(name, script string, activate bool) {
	sc.t.Helper()
	sc.retry(`PUTSCRIPT "` + name + `" ` + literal(script))
	if activate {
		sc.retry(`SETACTIVE "` + name + `"`)
	}
}

func short(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// literal is s as a non-synchronising client literal {n+}.
func literal(s string) string { return "{" + strconv.Itoa(len(s)) + "+}\r\n" + s }

// ---- SMTP ---------------------------------------------------------------

// message builds a small message to user with a unique Message-ID and
// extra header lines (each ending in CRLF).
func message(user, subject, extra string) string {
	return fmt.Sprintf("From: Sender <a@remote.test>\r\nTo: %s\r\nSubject: %s\r\n%s"+
		"Message-ID: <%d@remote.test>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nBody of %s.\r\n",
		addr(user), subject, extra, time.Now().UnixNano(), subject)
}

// sendMX sends one message through node i's MX port as a patient
// sender does across an election: after a 451 that says nothing was
// stored it sends again on a new connection; after one that says it may
// have been stored it settles the cluster and asks stored (nil: "not
// stored", for a message whose copies nobody counts) before sending
// again. Any other refusal fails the test.
func sendMX(t testing.TB, c *cluster.Cluster, i int, from, to, body string, stored func() bool) {
	t.Helper()
	sendMXTo(t, c, i, from, []string{to}, body, stored)
}

// sendMXTo is sendMX for one transaction with several recipients.
func sendMXTo(t testing.TB, c *cluster.Cluster, i int, from string, to []string, body string, stored func() bool) {
	t.Helper()
	deadline := time.Now().Add(cluster.RetryWindow)
	for {
		err := sendOnce(c.Node(i).Endpoint(node.EndpointSMTP), from, to, body)
		if err == nil {
			return
		}
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) || se.Code != 451 || time.Now().After(deadline) {
			t.Fatalf("send through node %d MX: %v", i, err)
		}
		switch {
		case strings.Contains(se.Message, "may have been stored"):
			cluster.Settle(t, c.Node(i))
			if stored != nil && stored() {
				return
			}
		case strings.Contains(se.Message, "quorum"), strings.Contains(se.Message, "NOT stored"):
		default:
			t.Fatalf("send through node %d MX: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deliverMX is sendMX for a message that must land in one of user's
// mailboxes.
func deliverMX(t testing.TB, c *cluster.Cluster, i int, from, user, body string, boxes ...string) {
	t.Helper()
	sendMX(t, c, i, from, addr(user), body, storedIn(t, c, i, user, body, boxes...))
}

// storedIn is a stored func for sendMX: whether the message with body's
// Message-ID is in one of user's mailboxes, read through node i.
func storedIn(t testing.TB, c *cluster.Cluster, i int, user, body string, boxes ...string) func() bool {
	id := headerValue(body, "Message-ID")
	return func() bool {
		for _, b := range boxes {
			for _, m := range mailbox(t, c, i, user, b) {
				if headerValue(m.Body, "Message-ID") == id {
					return true
				}
			}
		}
		return false
	}
}

// sentOut is a stored func for sendMX: whether the message with body's
// Message-ID reached the sink for rcpt once the queues are empty.
func sentOut(t testing.TB, c *cluster.Cluster, rcpt, body string) func() bool {
	id := headerValue(body, "Message-ID")
	return func() bool {
		waitQueueEmpty(t, c)
		return len(sinkWith(c, rcpt, id)) > 0
	}
}

func sendOnce(ep, from string, to []string, body string) error {
	cl, err := gosmtp.Dial(ep)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Hello("mx.remote.test"); err != nil {
		return err
	}
	if err := cl.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := cl.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return cl.Quit()
}

// ---- reading what was stored --------------------------------------------

type stored struct {
	state.Message
	Body string
}

// mailbox reads a mailbox of user through node i after a read barrier.
func mailbox(t testing.TB, c *cluster.Cluster, i int, user, name string) []stored {
	t.Helper()
	s := c.Node(i).Store()
	var mb replication.OpenedMailbox
	cluster.Retry(t, "open "+name, func() (err error) {
		mb, err = s.OpenMailbox(ctxT(t), addr(user), name)
		return err
	})
	var out []stored
	err := s.Messages(ctxT(t), addr(user), mb.ID, 1, 0, func(m state.Message) error {
		b, err := s.OpenBody(ctxT(t), m.Blob)
		if err != nil {
			return err
		}
		defer b.Close()
		raw, err := io.ReadAll(b)
		if err != nil {
			return err
		}
		out = append(out, stored{Message: m, Body: string(raw)})
		return nil
	})
	if err != nil {
		t.Fatalf("read %s of %s on node %d: %v", name, user, i, err)
	}
	return out
}

// subjects lists the Subject of each message.
func subjects(msgs []stored) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, headerValue(m.Body, "Subject"))
	}
	return out
}

// headerValue is the first value of a header field in a raw message
// (unfolded lines only: the test writes them).
func headerValue(raw, field string) string {
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	for _, l := range strings.Split(head, "\r\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), field) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// sinkWith returns the sink's messages to rcpt whose data contains s.
func sinkWith(c *cluster.Cluster, rcpt, s string) []simnet.Message {
	var out []simnet.Message
	for _, m := range c.Sink().MessagesTo(rcpt) {
		if strings.Contains(string(m.Data), s) {
			out = append(out, m)
		}
	}
	return out
}

// waitQueueEmpty waits until every node's outbound queue is empty: what
// was queued has reached the sink or failed for good.
func waitQueueEmpty(t testing.TB, c *cluster.Cluster) {
	t.Helper()
	for _, i := range c.Running() {
		s := c.Node(i).Store()
		c.WaitFor("an empty queue on "+c.Members[i].ID, func() bool {
			st, err := s.QueueStats(ctxT(t))
			return err == nil && st.Len == 0
		})
	}
}

// strconvQuote is how the client's item shows a literal: Go-quoted.
func strconvQuote(s string) string { return strconv.Quote(s) }

// sendSubmission sends one message through node i's submission port
// (STARTTLS, AUTH PLAIN as user). A temporary refusal fails the test: it
// runs on an idle cluster.
func sendSubmission(t testing.TB, c *cluster.Cluster, i int, user, to, body string) {
	t.Helper()
	cl, err := gosmtp.DialStartTLS(c.Node(i).Endpoint(node.EndpointSubmission), c.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Auth(sasl.NewPlainClient("", addr(user), password)); err != nil {
		t.Fatalf("AUTH PLAIN as %s: %v", user, err)
	}
	if err := cl.SendMail(addr(user), []string{to}, strings.NewReader(body)); err != nil {
		t.Fatalf("submit through node %d: %v", i, err)
	}
}
