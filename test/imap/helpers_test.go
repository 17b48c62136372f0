package imap_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailcluster/mailcluster/node"
	"github.com/mailcluster/mailcluster/replication"
	"github.com/mailcluster/mailcluster/test/cluster"
)

const (
	domain   = "example.test"
	password = "correct horse battery staple"
	// wait bounds every poll in these tests; generous for a loaded 2-core
	// machine, never a sleep.
	wait = 30 * time.Second
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// env is a running cluster with the test domain.
type env struct {
	c *cluster.Cluster
}

func newEnv(t testing.TB, opts cluster.Options) *env {
	t.Helper()
	c := cluster.New(t, opts)
	cluster.RetryIdempotent(t, "add domain", func() error {
		err := c.Node(c.Leader()).Store().AddDomain(ctxT(t), domain)
		if errors.Is(err, replication.ErrDomainExists) {
			return nil
		}
		return err
	})
	return &env{c: c}
}

// user creates an account and returns its address.
func (e *env) user(t testing.TB, local string, quota ...int64) string {
	t.Helper()
	u := replication.NewUser{Address: local + "@" + domain, Password: password}
	if len(quota) > 0 {
		u.QuotaBytes = quota[0]
	}
	if len(quota) > 1 {
		u.QuotaMessages = quota[1]
	}
	cluster.RetryIdempotent(t, "add user "+u.Address, func() error {
		_, err := e.c.Node(e.c.Leader()).Store().AddUser(ctxT(t), u)
		if errors.Is(err, replication.ErrAccountExists) {
			return nil // an earlier attempt was committed after all
		}
		return err
	})
	return u.Address
}

// deliver stores a message for user's INBOX through node i (as SMTP
// would), exactly once even across an election (see cluster.Deliver).
func (e *env) deliver(t testing.TB, i int, user string, body []byte) {
	t.Helper()
	d := cluster.Deliver(t, e.c.Node(i), body, []replication.Recipient{{Account: user}})
	if err := d.Results[0].Err(); err != nil {
		t.Fatalf("deliver to %s: %v", user, err)
	}
}

// recorder keeps the unsolicited responses (EXISTS, EXPUNGE, FETCH) a
// client received.
type recorder struct {
	mu       sync.Mutex
	exists   []uint32
	expunges []uint32
	fetches  []*imapclient.FetchMessageData
	flags    [][]imap.Flag
	changed  chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) {
			r.mu.Lock()
			r.expunges = append(r.expunges, seq)
			r.mu.Unlock()
			r.notify()
		},
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			r.mu.Lock()
			if d.NumMessages != nil {
				r.exists = append(r.exists, *d.NumMessages)
			}
			if d.Flags != nil {
				r.flags = append(r.flags, d.Flags)
			}
			r.mu.Unlock()
			r.notify()
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err == nil {
				r.mu.Lock()
				r.fetches = append(r.fetches, &imapclient.FetchMessageData{SeqNum: buf.SeqNum})
				r.mu.Unlock()
			}
			r.notify()
		},
	}
}

// lastExists is the last EXISTS count seen (0 if none).
func (r *recorder) lastExists() uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.exists) == 0 {
		return 0
	}
	return r.exists[len(r.exists)-1]
}

func (r *recorder) expungeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.expunges)
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	cluster.WaitFor(t, what, wait, cond)
}

// dialTLS connects to node i's implicit-TLS port and logs in.
func (e *env) dialTLS(t testing.TB, i int, user string, rec *recorder) *imapclient.Client {
	t.Helper()
	opts := &imapclient.Options{TLSConfig: e.c.ClientTLS()}
	if rec != nil {
		opts.UnilateralDataHandler = rec.handler()
	}
	c, err := imapclient.DialTLS(e.c.Node(i).Endpoint(node.EndpointIMAPS), opts)
	if err != nil {
		t.Fatalf("dial imaps on node %d: %v", i, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if user != "" {
		if err := c.Login(user, password).Wait(); err != nil {
			t.Fatalf("login %s on node %d: %v", user, i, err)
		}
	}
	return c
}

// dialPlain connects to node i's STARTTLS port without TLS (allowed from
// loopback).
func (e *env) dialPlain(t testing.TB, i int, rec *recorder) *imapclient.Client {
	t.Helper()
	opts := &imapclient.Options{}
	if rec != nil {
		opts.UnilateralDataHandler = rec.handler()
	}
	c, err := imapclient.DialInsecure(e.c.Node(i).Endpoint(node.EndpointIMAP), opts)
	if err != nil {
		t.Fatalf("dial imap on node %d: %v", i, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawConn is a line-level connection for hostile and exact-wire tests.
type rawConn struct {
	t    testing.TB
	conn net.Conn
	buf  []byte
}

func (e *env) raw(t testing.TB, i int, useTLS bool) *rawConn {
	t.Helper()
	var conn net.Conn
	var err error
	if useTLS {
		conn, err = tls.Dial("tcp", e.c.Node(i).Endpoint(node.EndpointIMAPS), e.c.ClientTLS())
	} else {
		conn, err = net.Dial("tcp", e.c.Node(i).Endpoint(node.EndpointIMAP))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	r := &rawConn{t: t, conn: conn}
	r.expect("* OK")
	return r
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if err := r.trySend(s); err != nil {
		r.t.Fatalf("write %.80q: %v", s, err)
	}
}

// trySend writes s and reports a failure instead of failing the test: the
// server may rightly hang up halfway through hostile input.
func (r *rawConn) trySend(s string) error {
	_ = r.conn.SetWriteDeadline(time.Now().Add(wait))
	_, err := r.conn.Write([]byte(s))
	return err
}

// line reads one response line (without CRLF).
func (r *rawConn) line() (string, error) {
	_ = r.conn.SetReadDeadline(time.Now().Add(wait))
	for {
		if i := bytes.Index(r.buf, []byte("\r\n")); i >= 0 {
			l := string(r.buf[:i])
			r.buf = r.buf[i+2:]
			return l, nil
		}
		tmp := make([]byte, 64<<10)
		n, err := r.conn.Read(tmp)
		r.buf = append(r.buf, tmp[:n]...)
		if err != nil {
			if n > 0 {
				continue
			}
			return "", err
		}
	}
}

// expect reads lines until one starts with prefix and returns the lines read.
func (r *rawConn) expect(prefix string) []string {
	r.t.Helper()
	var got []string
	for {
		l, err := r.line()
		if err != nil {
			r.t.Fatalf("waiting for %q: %v (got %q)", prefix, err, got)
		}
		got = append(got, l)
		if strings.HasPrefix(l, prefix) {
			return got
		}
	}
}

// cmd sends a tagged command and returns every line up to its completion.
func (r *rawConn) cmd(tag, command string) []string {
	r.t.Helper()
	r.send(tag + " " + command + "\r\n")
	return r.expect(tag + " ")
}

func message(subject, body string) []byte {
	return []byte(fmt.Sprintf("From: Alice <alice@remote.test>\r\nTo: bob@example.test\r\nSubject: %s\r\n"+
		"Date: Mon, 02 Feb 2026 10:00:00 +0100\r\nMessage-ID: <%d@remote.test>\r\n\r\n%s\r\n", subject, time.Now().UnixNano(), body))
}

// appendMsg APPENDs body and returns the APPENDUID data.
func appendMsg(t testing.TB, c *imapclient.Client, mailbox string, body []byte, opts *imap.AppendOptions) *imap.AppendData {
	t.Helper()
	data, err := tryAppend(c, mailbox, body, opts)
	if err != nil {
		t.Fatalf("APPEND to %s: %v", mailbox, err)
	}
	return data
}

func tryAppend(c *imapclient.Client, mailbox string, body []byte, opts *imap.AppendOptions) (*imap.AppendData, error) {
	cmd := c.Append(mailbox, int64(len(body)), opts)
	if _, err := cmd.Write(body); err != nil {
		return nil, err
	}
	if err := cmd.Close(); err != nil {
		return nil, err
	}
	return cmd.Wait()
}

func fetch(t testing.TB, c *imapclient.Client, set imap.NumSet, opts *imap.FetchOptions) []*imapclient.FetchMessageBuffer {
	t.Helper()
	msgs, err := c.Fetch(set, opts).Collect()
	if err != nil {
		t.Fatalf("FETCH %v: %v", set, err)
	}
	return msgs
}

// expectCode checks that err is a tagged NO (or BAD) with the response code.
func expectCode(t testing.TB, err error, typ imap.StatusResponseType, code imap.ResponseCode) {
	t.Helper()
	var ie *imap.Error
	if !errors.As(err, &ie) || ie.Type != typ || ie.Code != code {
		t.Fatalf("got %v, want %s [%s]", err, typ, code)
	}
}

// mustSelect selects a mailbox. SELECT passes a read barrier, which an
// election can make fail with NO [UNAVAILABLE] for a while: it is asked
// again then (opening a mailbox changes nothing).
func mustSelect(t testing.TB, c *imapclient.Client, name string, readOnly bool) *imap.SelectData {
	t.Helper()
	var d *imap.SelectData
	waitFor(t, "SELECT "+name, func() bool {
		var err error
		d, err = c.Select(name, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Code == imap.ResponseCodeUnavailable {
			return false
		}
		if err != nil {
			t.Fatalf("SELECT %s: %v", name, err)
		}
		return true
	})
	// imapclient (v2.0.0-beta.8) completes the command before it records
	// the selected mailbox (completeCommand signals Wait, then sets
	// c.mailbox): wait for that, or c.Mailbox() may still be nil.
	waitFor(t, "the client to record the selected mailbox", func() bool { return c.Mailbox() != nil })
	return d
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, g := range flags {
		if strings.EqualFold(string(g), string(f)) {
			return true
		}
	}
	return false
}

// closedErr says whether the server closed c's connection, for a test that
// finds c no longer in the selected state.
func closedErr(c *imapclient.Client) error {
	select {
	case <-c.Closed():
		return errors.New("the server closed the connection")
	default:
		return errors.New("the connection is still open")
	}
}
