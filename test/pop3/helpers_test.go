package pop3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/replication/state"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const password = "correct horse battery"

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), cluster.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func addr(user string) string { return user + "@example.test" }

// addUsers creates example.test (if needed) and the accounts.
func addUsers(t testing.TB, c *cluster.Cluster, users ...string) {
	t.Helper()
	s := c.Node(c.Leader()).Store()
	cluster.RetryIdempotent(t, "add the domain", func() error {
		if err := s.AddDomain(ctxT(t), "example.test"); !errors.Is(err, replication.ErrDomainExists) {
			return err
		}
		return nil
	})
	for _, u := range users {
		cluster.RetryIdempotent(t, "add "+u, func() error {
			_, err := s.AddUser(ctxT(t), replication.NewUser{Address: addr(u), Password: password})
			if errors.Is(err, replication.ErrAccountExists) {
				return nil // an earlier attempt of unknown outcome was committed
			}
			return err
		})
	}
}

// deliver stores body for user through node n as SMTP would: the exact
// octets, committed before it returns.
func deliver(t testing.TB, n *node.Node, user string, body []byte) {
	t.Helper()
	d := cluster.Deliver(t, n, body, []replication.Recipient{{Account: addr(user)}})
	if err := d.Results[0].Err(); err != nil {
		t.Fatalf("deliver to %s: %v", user, err)
	}
}

// smtpMessage is a message as SMTP delivers it: CRLF line ends, lines
// that start with a dot, and a body of about size octets.
func smtpMessage(i, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <sender@remote.test>\r\nFrom: Sender <sender@remote.test>\r\nTo: %s\r\n"+
		"Subject: message %d\r\nMessage-ID: <%d.%d@remote.test>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n",
		addr("alice"), i, i, time.Now().UnixNano())
	b.WriteString("First line.\r\n.A line that starts with a dot.\r\n..two dots\r\n.\r\n")
	for line := 0; b.Len() < size; line++ {
		fmt.Fprintf(&b, "line %05d of message %d: %s\r\n", line, i, strings.Repeat("x", 60))
	}
	b.WriteString("Last line.\r\n")
	return b.Bytes()
}

// wireForm is what RETR must send for a stored body: bare LFs as CRLF and
// the last line terminated.
func wireForm(raw []byte) []byte {
	var out bytes.Buffer
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			out.Write(raw)
			if raw[len(raw)-1] == '\r' {
				out.WriteString("\n")
			} else {
				out.WriteString("\r\n")
			}
			break
		}
		out.Write(bytes.TrimSuffix(raw[:i], []byte("\r")))
		out.WriteString("\r\n")
		raw = raw[i+1:]
	}
	return out.Bytes()
}

// topOf is what TOP n must send: the header, the blank line, n lines.
func topOf(wire []byte, n int) []byte {
	lines := bytes.SplitAfter(wire, []byte("\r\n"))
	var out bytes.Buffer
	inBody := false
	for _, l := range lines {
		if inBody {
			if n == 0 {
				break
			}
			n--
		}
		out.Write(l)
		if !inBody && string(l) == "\r\n" {
			inBody = true
		}
	}
	return out.Bytes()
}

// dial opens a POP3 session on member i: plain (loopback, so USER/PASS are
// allowed) or implicit TLS.
func dial(t testing.TB, c *cluster.Cluster, i int, implicitTLS bool) *Client {
	t.Helper()
	ep, cfg := node.EndpointPOP3, c.ClientTLS()
	if implicitTLS {
		ep = node.EndpointPOP3S
	} else {
		cfg = nil
	}
	cl, err := Dial(ctxT(t), c.Node(i).Endpoint(ep), cfg)
	if err != nil {
		t.Fatalf("dial %s on %s: %v", ep, c.Members[i].ID, err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// login dials member i and logs user in.
// A login that answers -ERR [SYS/TEMP] (its read barrier met an election)
// is tried again on a new connection: opening the maildrop changes
// nothing.
func login(t testing.TB, c *cluster.Cluster, i int, user string) *Client {
	t.Helper()
	deadline := time.Now().Add(cluster.RetryWindow)
	for {
		cl := dial(t, c, i, false)
		err := cl.Login(addr(user), password)
		if err == nil {
			return cl
		}
		if !IsErr(err, "-ERR [SYS/TEMP] ") || time.Now().After(deadline) {
			t.Fatalf("login %s on %s: %v", user, c.Members[i].ID, err)
		}
		cl.Close()
		time.Sleep(50 * time.Millisecond)
	}
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// inbox reads user's INBOX through member i after a read barrier: the UIDs
// and their flags, as IMAP would see them.
func inbox(t testing.TB, c *cluster.Cluster, i int, user string) ([]uint32, map[uint32]state.Flags) {
	t.Helper()
	s := c.Node(i).Store()
	// The barrier fails for a while during an election: open again then.
	var mb replication.OpenedMailbox
	cluster.Retry(t, "open INBOX on "+c.Members[i].ID, func() (err error) {
		mb, err = s.OpenMailbox(ctxT(t), addr(user), "INBOX")
		return err
	})
	flags := map[uint32]state.Flags{}
	var uids []uint32
	err := s.Messages(ctxT(t), addr(user), mb.ID, 1, 0, func(m state.Message) error {
		uids = append(uids, m.UID)
		flags[m.UID] = m.Flags
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return uids, flags
}

// bodies reads every message of a session with RETR, checking that each
// is exactly as long as LIST and the +OK line said.
func retrAll(t testing.TB, cl *Client) [][]byte {
	t.Helper()
	sizes := must[map[int]int64](t)(cl.List())
	var out [][]byte
	for n := 1; n <= len(sizes); n++ {
		b, announced, err := cl.Retr(n)
		if err != nil {
			t.Fatalf("RETR %d: %v", n, err)
		}
		if int64(len(b)) != sizes[n] || announced != sizes[n] {
			t.Fatalf("RETR %d sent %d octets; LIST said %d, RETR's +OK said %d", n, len(b), sizes[n], announced)
		}
		out = append(out, b)
	}
	return out
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sameUIDs(a, b []uint32) bool { return slices.Equal(a, b) }
