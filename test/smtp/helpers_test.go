package smtp_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/blob"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const (
	domain   = "example.test"
	password = "correct horse battery"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// newCluster starts three nodes and creates example.test with the given
// users (local parts).
func newCluster(t *testing.T, configure func(i int, cfg *node.Config), users ...string) *cluster.Cluster {
	t.Helper()
	c := cluster.New(t, cluster.Options{Configure: configure})
	s := c.Node(c.Leader()).Store()
	cluster.RetryIdempotent(t, "add the domain", func() error {
		if err := s.AddDomain(ctxT(t), domain); !errors.Is(err, replication.ErrDomainExists) {
			return err
		}
		return nil // an earlier attempt of unknown outcome was committed
	})
	for _, u := range users {
		cluster.RetryIdempotent(t, "add "+u, func() error {
			_, err := s.AddUser(ctxT(t), replication.NewUser{Address: u + "@" + domain, Password: password})
			if errors.Is(err, replication.ErrAccountExists) {
				return nil
			}
			return err
		})
	}
	return c
}

func addr(user string) string { return user + "@" + domain }

// message builds a small message with a unique subject.
func message(subject, body string) string {
	return fmt.Sprintf("From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\nSubject: %s\r\n"+
		"Message-ID: <%d@remote.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n%s\r\n", subject, time.Now().UnixNano(), body)
}

// code renders a client error as "550 5.1.1"; "ok" for nil.
func code(err error) string {
	if err == nil {
		return "ok"
	}
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%d %d.%d.%d", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
}

func dialMX(t testing.TB, c *cluster.Cluster, i int) *gosmtp.Client {
	t.Helper()
	cl, err := gosmtp.Dial(c.Node(i).Endpoint(node.EndpointSMTP))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// dialSubmission connects to node i's port 587, upgrades with STARTTLS and
// logs in as user.
func dialSubmission(t testing.TB, c *cluster.Cluster, i int, user string) *gosmtp.Client {
	t.Helper()
	cl, err := gosmtp.DialStartTLS(c.Node(i).Endpoint(node.EndpointSubmission), c.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	if user != "" {
		if err := cl.Auth(sasl.NewPlainClient("", addr(user), password)); err != nil {
			t.Fatalf("AUTH PLAIN as %s: %v", user, err)
		}
	}
	return cl
}

// send runs one transaction and returns the first refusal.
func send(cl *gosmtp.Client, from string, to []string, body io.Reader) error {
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
	if _, err := io.Copy(w, body); err != nil {
		return err
	}
	return w.Close()
}

// sendPatiently sends body through node i's MX port as a patient sender
// does across an election: after a 451 that says the cluster has no
// quorum (at MAIL or RCPT, or "NOT stored" after the data) it sends the
// same message again on a new connection. After a 451 that says it may
// have been stored, it settles the cluster and asks stored (which must
// read through a read barrier) whether it was, and sends again only if
// not; with stored nil that answer is returned. Every other answer is
// returned: what the test asserts about.
func sendPatiently(t testing.TB, c *cluster.Cluster, i int, from string, to []string, body string, stored func() bool) error {
	t.Helper()
	deadline := time.Now().Add(cluster.RetryWindow)
	for {
		cl := dialMX(t, c, i)
		err := send(cl, from, to, strings.NewReader(body))
		_ = cl.Close()
		var se *gosmtp.SMTPError
		if !errors.As(err, &se) || se.Code != 451 || time.Now().After(deadline) {
			return err
		}
		switch {
		case strings.Contains(se.Message, "may have been stored") && stored != nil:
			cluster.Settle(t, c.Node(i))
			if stored() {
				return nil
			}
		case strings.Contains(se.Message, "cannot reach a quorum"):
		default:
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stored is one message as a node's store returns it.
type stored struct {
	state.Message
	Body string
}

// mailbox reads user's INBOX through node i after a read barrier.
func mailbox(t testing.TB, c *cluster.Cluster, i int, user string) []stored {
	t.Helper()
	out, err := readMailbox(t, c, i, user)
	if err != nil {
		t.Fatalf("read INBOX of %s on node%d: %v", user, i+1, err)
	}
	return out
}

// mailboxEventually is mailbox for a cluster that just lost a node: a body
// whose other copy is on a node this one does not yet see alive may be
// unavailable for a moment; it must become readable.
func mailboxEventually(t testing.TB, c *cluster.Cluster, i int, user string) []stored {
	t.Helper()
	var out []stored
	var last error
	deadline := time.Now().Add(cluster.Timeout)
	for {
		if out, last = readMailbox(t, c, i, user); last == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("read INBOX of %s on node%d: %v", user, i+1, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readMailbox(t testing.TB, c *cluster.Cluster, i int, user string) ([]stored, error) {
	s := c.Node(i).Store()
	// The barrier fails for a while during an election: open again then.
	var mb replication.OpenedMailbox
	cluster.Retry(t, fmt.Sprintf("open INBOX on node%d", i+1), func() (err error) {
		mb, err = s.OpenMailbox(ctxT(t), addr(user), "INBOX")
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
	return out, err
}

// withSubject returns the messages whose body contains "Subject: subject\r\n".
func withSubject(msgs []stored, subject string) []stored {
	var out []stored
	for _, m := range msgs {
		if strings.Contains(m.Body, "\r\nSubject: "+subject+"\r\n") {
			out = append(out, m)
		}
	}
	return out
}

// blobCount counts the bodies node i holds on disk.
func blobCount(t testing.TB, c *cluster.Cluster, i int) int {
	t.Helper()
	n := 0
	if err := c.Node(i).BlobStore().Walk(ctxT(t), func(blob.ID, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// ---- raw client: what go-smtp's client will not send --------------------

type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t testing.TB, address string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", address, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220")
	return c
}

func (c *rawClient) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.cmd("STARTTLS", "220")
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(cluster.Timeout))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *rawClient) expect(prefix string) string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(cluster.Timeout))
	var all strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		all.WriteString(line)
		if err != nil {
			c.t.Fatalf("reading reply (want %s): %v (got %q)", prefix, err, all.String())
		}
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	if !strings.HasPrefix(all.String(), prefix) {
		c.t.Fatalf("reply %q, want %s", strings.TrimSpace(all.String()), prefix)
	}
	return all.String()
}

func (c *rawClient) cmd(line, prefix string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(prefix)
}

// generated is a deterministic message of at least size bytes (whole CRLF
// lines), produced on the fly so the test does not hold it in memory either.
type generated struct {
	size, off int64
	line      []byte
}

func newGenerated(size int64) *generated {
	return &generated{size: size, line: []byte("Subject: big\r\n\r\n")}
}

func (g *generated) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(g.line) == 0 {
			if g.off >= g.size {
				break
			}
			g.line = []byte(fmt.Sprintf("%010d the quick brown fox jumps over the lazy dog\r\n", g.off))
		}
		k := copy(p[n:], g.line)
		g.line = g.line[k:]
		n += k
		g.off += int64(k)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func sha(r io.Reader) ([32]byte, int64) {
	h := sha256.New()
	n, _ := io.Copy(h, r)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, n
}
